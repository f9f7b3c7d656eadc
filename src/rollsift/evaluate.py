"""Held-out evaluation: sampled accuracy (mean over k samples, as GRESO validates) and greedy.

Evaluation draws its randomness from a generator seeded by (run seed, step), never from the
training stream, so evaluating more or less often does not change what training samples.
Per-difficulty accuracies use the prompts' ``meta["difficulty"]`` labels for analysis only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from .protocols import SamplingParams
from .records import Completion, Prompt, RewardResult


def evaluate(
    generator: Any,
    prompts: Sequence[Prompt],
    score: Callable[[Prompt, Sequence[Completion]], Sequence[RewardResult]],
    *,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    greedy: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    if not prompts:
        return {}
    saved = generator.state_dict()
    generator.reseed(seed)
    try:
        out: dict[str, float] = {}
        sampled = generator.generate(prompts, samples, SamplingParams(temperature, 1.0, max_new_tokens))
        out.update(_accuracy(prompts, sampled, score, "eval/accuracy"))
        out["eval/tokens"] = float(sum(c.num_tokens for comps in sampled for c in comps))
        if greedy:
            first = generator.generate(prompts, 1, SamplingParams(0.0, 1.0, max_new_tokens))
            out.update(_accuracy(prompts, first, score, "eval/greedy_accuracy", by_tier=False))
        return out
    finally:
        generator.load_state_dict(saved)


def _accuracy(prompts, outs, score, key: str, by_tier: bool = True) -> dict[str, float]:
    per_prompt = []
    tiers: dict[Any, list[float]] = defaultdict(list)
    for p, comps in zip(prompts, outs):
        results = score(p, comps)
        acc = sum(r.correct for r in results) / max(len(results), 1)
        per_prompt.append(acc)
        if by_tier and "difficulty" in p.meta:
            tiers[p.meta["difficulty"]].append(acc)
    out = {key: sum(per_prompt) / len(per_prompt)}
    for tier, accs in sorted(tiers.items()):
        out[f"{key}/difficulty_{tier}"] = sum(accs) / len(accs)
    return out
