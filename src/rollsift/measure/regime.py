"""``rollsift testbed regime``: how a checkpoint's groups split on the train pool.

Samples ``n`` completions per prompt at ``--temperature`` (default 1.0) and counts groups that are all correct,
all wrong and mixed (the first two give GRPO no signal). Also reports accuracy per difficulty
tier (labels used for analysis only).

``--data FILE`` measures any prompt file instead of the testbed pool (e.g. GSM8K, or
``rollsift.testbed.chat_digits`` for a real chat model: docs/real_models.md); chat prompts go
through the model's chat template, as in training. Prompts without a difficulty label count as tier 0.

It also prints the checkpoint's **noise floor**: the per-visit transition table (all wrong / mixed /
all correct -> the same at the next visit) that independent groups of ``--group`` at each prompt's
measured success rate would give if the policy never changed. A run's realism card
(``rollsift ledger card``) above this floor is learning drift; a testbed whose floor is far from a
real run's cannot match that run's card at any learning rate (docs/testbed.md). Estimate the rates
with more samples than the group (``--n 32 --group 8``): with ``--n`` equal to the group the
floor is biased towards persistence.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Sequence

OUTCOMES = ("all_wrong", "mixed", "all_correct")


def noise_floor(rates: Sequence[float], group: int = 8) -> dict[str, dict[str, float]]:
    """Next-visit outcome given this visit's, for fixed per-prompt success rates and groups of ``group``.

    A prompt of rate p gives all-wrong, mixed or all-correct with probabilities (1-p)^g,
    1 - p^g - (1-p)^g, p^g; two visits are independent, so the table pools the joint
    probabilities over the prompts and normalises each row. An outcome no prompt can give (say
    all-correct when every p is 0) gets a row of zeros.
    """
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    joint = [[0.0] * 3 for _ in range(3)]
    for p in rates:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"success rates must lie in [0, 1], got {p!r}")
        w, c = (1.0 - p) ** group, p ** group
        probs = (w, max(0.0, 1.0 - w - c), c)
        for i in range(3):
            for j in range(3):
                joint[i][j] += probs[i] * probs[j]
    table = {}
    for i, a in enumerate(OUTCOMES):
        total = sum(joint[i])
        table[a] = {b: (joint[i][j] / total if total > 0 else 0.0) for j, b in enumerate(OUTCOMES)}
    return table


def measure_regime(model: str = "testbed", prompts: int = 1024, n: int = 8, seed: int = 0,
                   split: str = "train", device: str = "auto", data: str | None = None,
                   max_new_tokens: int = 64, max_batch_rows: int = 512, temperature: float = 1.0,
                   group: int = 8) -> dict[str, Any]:
    import torch

    from ..generate import HFGenerator
    from ..records import SamplingParams
    from ..rewards import MathReward
    from ..trainer.policy import load_model, resolve_device
    from ..testbed.problems import prompts as testbed_prompts

    policy, tok = load_model(model, resolve_device(device))
    if data is None:
        pool = testbed_prompts(split)[:prompts]
    else:
        from ..data import load_prompts

        pool = load_prompts(data, limit=prompts).prompts
    gen = HFGenerator(policy, tok, max_batch_rows=max_batch_rows, seed=seed)
    reward = MathReward()
    t0 = time.perf_counter()
    with torch.inference_mode():
        outs = gen.generate(pool, n, SamplingParams(temperature, 1.0, max_new_tokens))
    seconds = time.perf_counter() - t0
    stats = dict(gen.last_stats)
    counts = {"all_correct": 0, "all_wrong": 0, "mixed": 0}
    tiers: dict[int, list[float]] = defaultdict(list)
    rates = []
    for p, comps in zip(pool, outs):
        acc = sum(reward(p, c).correct for c in comps) / len(comps)
        rates.append(acc)
        counts["all_correct" if acc == 1 else "all_wrong" if acc == 0 else "mixed"] += 1
        tiers[p.meta.get("difficulty", 0)].append(acc)
    total = len(pool)
    return {
        "model": model, "split": split if data is None else data, "prompts": total,
        "max_new_tokens": max_new_tokens, "gen_tokens": stats["gen_tokens"],
        "tokens_per_second": stats["gen_tokens"] / seconds if seconds > 0 else 0.0, "n": n, "temperature": temperature, "seed": seed,
        "all_correct": counts["all_correct"] / total,
        "all_wrong": counts["all_wrong"] / total,
        "mixed": counts["mixed"] / total,
        "accuracy": sum(a for v in tiers.values() for a in v) / total,
        "accuracy_by_difficulty": {str(k): sum(v) / len(v) for k, v in sorted(tiers.items())},
        "prompts_by_difficulty": {str(k): len(v) for k, v in sorted(tiers.items())},
        "group": group,
        "noise_floor": noise_floor(rates, group),
        "rate_histogram": [sum(1 for a in rates if min(int(a * 10), 9) == b) for b in range(10)],
        "seconds": seconds,
    }


def print_regime(r: dict[str, Any]) -> None:
    print(f"{r['prompts']} {r['split']} prompts x {r['n']} samples at temperature {r['temperature']:g} ({r['seconds']:.0f}s, "
          f"{r.get('tokens_per_second', 0):.0f} generated tokens/s):")
    print(f"  all correct {100 * r['all_correct']:.1f}%   all wrong {100 * r['all_wrong']:.1f}%   "
          f"mixed {100 * r['mixed']:.1f}%   mean accuracy {100 * r['accuracy']:.1f}%")
    by = ", ".join(f"{k}: {100 * v:.0f}% ({r['prompts_by_difficulty'][k]})" for k, v in r["accuracy_by_difficulty"].items())
    print(f"  accuracy by difficulty tier: {by}")
    if "noise_floor" in r:
        print(f"  success rates by tenth: {' '.join(map(str, r['rate_histogram']))}")
        print(f"  noise floor (fixed policy, groups of {r['group']}), next visit W / M / C:")
        for a in OUTCOMES:
            row = r["noise_floor"][a]
            print(f"    after {a.replace('_', '-'):<11} " + " / ".join(f"{row[b]:.3f}" for b in OUTCOMES))


def main(args) -> None:
    """``rollsift testbed regime``: print the regime, and write it as JSON with ``--json``."""
    import json
    from pathlib import Path

    result = measure_regime(args.model, prompts=args.prompts, n=args.n, seed=args.seed,
                            data=getattr(args, "data", None), max_new_tokens=getattr(args, "max_new_tokens", 64),
                            max_batch_rows=getattr(args, "max_batch_rows", 512),
                            temperature=getattr(args, "temperature", 1.0), group=getattr(args, "group", 8))
    print_regime(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
