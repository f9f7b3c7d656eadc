"""PODS: generate n rollouts per prompt, update on the m of them whose rewards vary most.

Xu, Savani, Fang, Kolter, "Not All Rollouts are Useful: Down-Sampling Rollouts in LLM RL"
(arXiv 2504.13818; code github.com/YixuanEvenXu/pods). Generation is cheap and parallel; the
update is what costs memory and synchronisation, so PODS trains on m < n completions per group.

The max-variance rule: a set of m rewards with the largest variance can always be made of the k
highest and the m - k lowest rewards, so sort the group once and scan k = 0..m. With prefix sums
of the sorted values and their squares each candidate costs O(1): O(n log n) per group, and all
groups of a step with the same n are done at once with numpy.

Tie-breaks (deterministic): equal rewards rank by completion index (lower index counts as
higher); candidates are scanned in the authors' order k = m, 0, 1, ..., m - 1 and the first one
within 1e-12 * (reward range)^2 of the largest variance wins. So an all-equal group keeps its
first m completions, and a tie between mixed subsets goes to the fewest top-ranked rollouts.

The filter only chooses completions: it returns ``Group.subset(...)`` of each group and drops
none. The learner recomputes advantages from the kept group's own rewards, as the authors do;
with binary rewards the kept set is as close to half correct, half wrong as the group allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..configlib import ConfigError, doc
from ..records import Context, FilterResult, Group

RULES = ("max_variance", "random", "max_reward")
_TIE_TOL = 1e-12  # relative to the squared reward range of the group


@dataclass
class PODSConfig:
    type: str = doc("Filter name in the registry.", "pods")
    m: int = doc(
        "Completions kept per group for the update (the authors' num_generations_grad). Groups "
        "with n <= m pass unchanged. The paper's runs keep a quarter: n = 64 -> m = 16.",
        4,
    )
    rule: Literal["max_variance", "random", "max_reward"] = doc(
        "Which m to keep: 'max_variance' (the paper's rule), or the paper's ablation baselines "
        "'random' (uniform without replacement) and 'max_reward' (the m highest rewards).",
        "max_variance",
    )
    seed: int | None = doc(
        "Seed of the 'random' rule's generator; None derives it from the run seed.", None
    )
    strategy = "rollsift.filters.pods:PODSFilter"

    def __post_init__(self) -> None:
        if self.type != "pods":
            raise ConfigError(f"pods.type must be 'pods', got {self.type!r}")
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 2:
            raise ConfigError(
                f"pods.m must be an integer >= 2 (one rollout has no variance to learn from), got {self.m!r}"
            )
        if self.rule not in RULES:
            raise ConfigError(f"pods.rule = {self.rule!r} is not allowed; choose one of {list(RULES)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"pods.seed must be an integer or None, got {self.seed!r}")


def _rank(rewards: np.ndarray) -> np.ndarray:
    """Column order [G, n] that sorts each row highest first; equal rewards keep index order."""
    return np.argsort(-rewards, axis=1, kind="stable")


def max_variance_indices(rewards: Any, m: int) -> np.ndarray:
    """Indices [G, m] (ascending per row) of the max-variance m-subset of each row of rewards [G, n]."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [G, n], got shape {r.shape}")
    g, n = r.shape
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, n={n}], got {m!r}")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite (got NaN or inf)")
    order = _rank(r)  # [G, n]
    s = np.take_along_axis(r, order, axis=1)
    s = s - s.mean(axis=1, keepdims=True)  # centring keeps the prefix sums well conditioned
    zero = np.zeros((g, 1))
    p1 = np.concatenate([zero, np.cumsum(s, axis=1)], axis=1)  # [G, n+1]: sum of the j highest
    p2 = np.concatenate([zero, np.cumsum(s * s, axis=1)], axis=1)
    k = np.arange(m + 1)  # candidate k: sorted positions [0, k) and [n - m + k, n)
    sum1 = p1[:, k] + p1[:, [n]] - p1[:, n - m + k]  # [G, m+1]
    sum2 = p2[:, k] + p2[:, [n]] - p2[:, n - m + k]
    var = sum2 / m - (sum1 / m) ** 2  # population variance: same argmax as the sample one
    spread = r.max(axis=1) - r.min(axis=1)  # [G]
    var[spread == 0] = 0.0  # all equal: every candidate ties exactly, not up to rounding
    scan = np.r_[m, 0:m]  # the authors' order: top-m first, then k = 0, 1, ...
    v = var[:, scan]
    ok = v >= v.max(axis=1, keepdims=True) - _TIE_TOL * spread[:, None] ** 2
    best_k = scan[np.argmax(ok, axis=1)]  # [G]: first candidate that attains the max
    j = np.arange(m)[None, :]
    pos = np.where(j < best_k[:, None], j, n - m + j)  # [G, m] sorted positions kept
    return np.sort(np.take_along_axis(order, pos, axis=1), axis=1)


def max_variance_indices_one(rewards: Sequence[float], m: int) -> list[int]:
    """The same rule for one group, written as the definition reads (the vectorised path's oracle)."""
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, n={n}], got {m!r}")
    order = sorted(range(n), key=lambda i: (-r[i], i))
    spread = float(r.max() - r.min())
    candidates = []
    for k in [m, *range(m)]:
        idx = order[:k] + order[n - (m - k):]
        candidates.append((float(np.var(r[idx])) if spread > 0 else 0.0, idx))
    best = max(v for v, _ in candidates)
    return next(sorted(idx) for v, idx in candidates if v >= best - _TIE_TOL * spread**2)


def _mean_variance(groups: Sequence[Group]) -> float:
    """Mean over groups of the population variance of their rewards."""
    return float(np.mean([np.var(g.rewards) if g.n else 0.0 for g in groups]))


class PODSFilter:
    """Down-samples every group with more than m completions to m (see the module docstring)."""

    name = "pods"

    def __init__(self, cfg: PODSConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or PODSConfig()
        self.rng = np.random.default_rng(self.cfg.seed if self.cfg.seed is not None else seed)
        self._metrics: dict[str, float] = {}

    def apply(self, groups: Sequence[Group], ctx: Context) -> FilterResult:
        m = self.cfg.m
        by_size: dict[int, list[int]] = {}  # one vectorised call per distinct group size
        for i, g in enumerate(groups):
            if g.n > m:
                by_size.setdefault(g.n, []).append(i)
        chosen: dict[int, np.ndarray] = {}
        for n in sorted(by_size):
            rows = by_size[n]
            idx = self._select(np.array([groups[i].rewards for i in rows], dtype=np.float64))
            chosen.update(zip(rows, idx))
        kept = tuple(g.subset(chosen[i].tolist()) if i in chosen else g for i, g in enumerate(groups))
        self._metrics = {}
        if groups:
            self._metrics = {
                "filter/pods/kept_frac": sum(g.n for g in kept) / max(sum(g.n for g in groups), 1),
                "filter/pods/var_before": _mean_variance(groups),
                "filter/pods/var_after": _mean_variance(kept),
            }
        return FilterResult(kept=kept, dropped={}, metrics=dict(self._metrics))

    def _select(self, rewards: np.ndarray) -> np.ndarray:  # rewards [G, n] -> indices [G, m]
        m = self.cfg.m
        if self.cfg.rule == "max_variance":
            return max_variance_indices(rewards, m)
        if self.cfg.rule == "max_reward":
            return np.sort(_rank(rewards)[:, :m], axis=1)
        keys = self.rng.random(rewards.shape)  # a uniform random permutation per row
        return np.sort(np.argsort(keys, axis=1)[:, :m], axis=1)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
