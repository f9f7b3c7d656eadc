"""``rollsift testbed regime``: how a checkpoint's groups split on the train pool.

Samples ``n`` completions per prompt at temperature 1.0 and counts groups that are all correct,
all wrong and mixed (the first two give GRPO no signal). Also reports accuracy per difficulty
tier (labels used for analysis only).

``--data FILE`` measures any prompt file instead of the testbed pool (e.g. GSM8K, or
``rollsift.testbed.chat_digits`` for a real chat model: docs/real_models.md); chat prompts go
through the model's chat template, as in training. Prompts without a difficulty label count as tier 0.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any


def measure_regime(model: str = "testbed", prompts: int = 1024, n: int = 8, seed: int = 0,
                   split: str = "train", device: str = "auto", data: str | None = None,
                   max_new_tokens: int = 64, max_batch_rows: int = 512) -> dict[str, Any]:
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
        outs = gen.generate(pool, n, SamplingParams(1.0, 1.0, max_new_tokens))
    seconds = time.perf_counter() - t0
    stats = dict(gen.last_stats)
    counts = {"all_correct": 0, "all_wrong": 0, "mixed": 0}
    tiers: dict[int, list[float]] = defaultdict(list)
    for p, comps in zip(pool, outs):
        acc = sum(reward(p, c).correct for c in comps) / len(comps)
        counts["all_correct" if acc == 1 else "all_wrong" if acc == 0 else "mixed"] += 1
        tiers[p.meta.get("difficulty", 0)].append(acc)
    total = len(pool)
    return {
        "model": model, "split": split if data is None else data, "prompts": total,
        "max_new_tokens": max_new_tokens, "gen_tokens": stats["gen_tokens"],
        "tokens_per_second": stats["gen_tokens"] / seconds if seconds > 0 else 0.0, "n": n, "temperature": 1.0, "seed": seed,
        "all_correct": counts["all_correct"] / total,
        "all_wrong": counts["all_wrong"] / total,
        "mixed": counts["mixed"] / total,
        "accuracy": sum(a for v in tiers.values() for a in v) / total,
        "accuracy_by_difficulty": {str(k): sum(v) / len(v) for k, v in sorted(tiers.items())},
        "prompts_by_difficulty": {str(k): len(v) for k, v in sorted(tiers.items())},
        "seconds": seconds,
    }


def print_regime(r: dict[str, Any]) -> None:
    print(f"{r['prompts']} {r['split']} prompts x {r['n']} samples at temperature 1.0 ({r['seconds']:.0f}s, "
          f"{r.get('tokens_per_second', 0):.0f} generated tokens/s):")
    print(f"  all correct {100 * r['all_correct']:.1f}%   all wrong {100 * r['all_wrong']:.1f}%   "
          f"mixed {100 * r['mixed']:.1f}%   mean accuracy {100 * r['accuracy']:.1f}%")
    by = ", ".join(f"{k}: {100 * v:.0f}% ({r['prompts_by_difficulty'][k]})" for k, v in r["accuracy_by_difficulty"].items())
    print(f"  accuracy by difficulty tier: {by}")


def main(args) -> None:
    """``rollsift testbed regime``: print the regime, and write it as JSON with ``--json``."""
    import json
    from pathlib import Path

    result = measure_regime(args.model, prompts=args.prompts, n=args.n, seed=args.seed,
                            data=getattr(args, "data", None), max_new_tokens=getattr(args, "max_new_tokens", 64),
                            max_batch_rows=getattr(args, "max_batch_rows", 512))
    print_regime(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
