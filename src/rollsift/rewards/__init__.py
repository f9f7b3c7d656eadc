"""Rewards: score completions against verifiable answers, and count why they failed.

A reward function is anything matching ``protocols.RewardFn``:
``(Prompt, Completion) -> RewardResult``. ``MathReward`` is the built-in one; ``score`` and
``score_group`` apply any reward function and tally the results in a ``RewardStats``; a reward
function with its own ``score(pairs)`` method (``MathReward``: the whole batch under one deadline,
checked in parallel) is handed the batch at once, and ``score_groups`` hands it many groups at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Iterable, Sequence

from ..protocols import RewardFn
from ..records import Completion, Prompt, RewardResult
from .math import MathReward, extract_answer, fast_equal
from .verifier import math_verify_outcome

__all__ = [
    "MathReward",
    "RewardStats",
    "extract_answer",
    "fast_equal",
    "math_verify_outcome",
    "score",
    "score_group",
    "score_groups",
]


class RewardStats:
    """Tallies ``RewardResult``s: count, mean reward, accuracy, and why completions failed.

    ``metrics()`` -> ``reward/count``, ``reward/mean``, ``reward/accuracy`` and one
    ``reward/reason/<reason>`` count per reason seen (e.g. ``reward/reason/no_answer``), since
    construction or the last ``reset()``. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.correct = 0
            self.reward_sum = 0.0
            self.reasons: Counter[str] = Counter()

    def update(self, results: Iterable[RewardResult]) -> None:
        with self._lock:
            for r in results:
                self.count += 1
                self.correct += bool(r.correct)
                self.reward_sum += float(r.reward)
                if r.reason is not None:
                    self.reasons[r.reason] += 1

    def metrics(self) -> dict[str, float]:
        with self._lock:
            n = self.count
            out = {
                "reward/count": float(n),
                "reward/mean": self.reward_sum / n if n else 0.0,
                "reward/accuracy": self.correct / n if n else 0.0,
            }
            out.update({f"reward/reason/{k}": float(v) for k, v in sorted(self.reasons.items())})
        return out


def score(
    reward_fn: RewardFn,
    pairs: Iterable[tuple[Prompt, Completion]],
    *,
    stats: RewardStats | None = None,
) -> list[RewardResult]:
    """``reward_fn`` applied to each ``(prompt, completion)`` pair, in order; tallied in ``stats``.

    A reward function with a ``score(pairs)`` method gets the whole list in one call (``MathReward``
    bounds it by ``batch_timeout``); any other is called once per pair."""
    batch = getattr(reward_fn, "score", None)
    results = list(batch(list(pairs))) if callable(batch) else [reward_fn(p, c) for p, c in pairs]
    if stats is not None:
        stats.update(results)
    return results


def score_group(
    reward_fn: RewardFn,
    prompt: Prompt,
    completions: Sequence[Completion],
    *,
    stats: RewardStats | None = None,
) -> list[RewardResult]:
    """The results of one prompt's ``n`` completions (``out[i]`` scores ``completions[i]``)."""
    return score(reward_fn, ((prompt, c) for c in completions), stats=stats)


def score_groups(
    reward_fn: RewardFn,
    groups: Iterable[tuple[Prompt, Sequence[Completion]]],
    *,
    stats: RewardStats | None = None,
) -> list[list[RewardResult]]:
    """The results of many prompts' completions in one ``score`` call (``out[g][i]`` scores
    ``groups[g][1][i]``): with ``MathReward`` a whole step's batch shares one ``batch_timeout``."""
    groups = [(p, list(cs)) for p, cs in groups]
    flat = score(reward_fn, [(p, c) for p, cs in groups for c in cs], stats=stats)
    out, at = [], 0
    for _, cs in groups:
        out.append(flat[at : at + len(cs)])
        at += len(cs)
    return out
