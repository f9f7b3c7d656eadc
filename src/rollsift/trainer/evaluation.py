"""Held-out evaluation: sampled accuracy (mean over k samples, as GRESO validates) and greedy.

Evaluation draws its randomness from a generator seeded by (run seed, step), never from the
training stream, so evaluating more or less often does not change what training samples.
Per-difficulty accuracies use the prompts' ``meta["difficulty"]`` labels for analysis only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from ..records import Completion, Prompt, RewardResult, SamplingParams


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
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """``progress(done, total)`` is called as prompts are generated (sampled, then greedy)."""
    if not prompts:
        return {}
    saved = generator.state_dict()
    generator.reseed(seed)
    total = len(prompts) * (2 if greedy else 1)
    try:
        out: dict[str, float] = {}
        sampled = _generate(generator, prompts, samples, SamplingParams(temperature, 1.0, max_new_tokens), progress,
                            0, total)
        out.update(_accuracy(prompts, sampled, score, "eval/accuracy"))
        out["eval/tokens"] = float(sum(c.num_tokens for comps in sampled for c in comps))
        if greedy:
            first = _generate(generator, prompts, 1, SamplingParams(0.0, 1.0, max_new_tokens), progress,
                              len(prompts), total)
            out.update(_accuracy(prompts, first, score, "eval/greedy_accuracy", by_tier=False))
        return out
    finally:
        generator.load_state_dict(saved)


def _generate(generator: Any, prompts: Sequence[Prompt], n: int, sp: SamplingParams, progress, done: int,
              total: int) -> list:
    """All prompts' completions, in chunks of the generator's own batch (the same draws as one call)."""
    if progress is None:
        return generator.generate(prompts, n, sp)
    step = max(1, getattr(generator, "max_batch_rows", len(prompts) * n) // n)
    out = []
    for lo in range(0, len(prompts), step):
        out += generator.generate(prompts[lo:lo + step], n, sp)
        progress(done + min(lo + step, len(prompts)), total)
    return out


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
