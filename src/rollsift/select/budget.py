"""The measured lost-share controller shared by the posterior and the learned selectors.

A selector that scores each candidate with q = P(its group is informative) keeps the prompts with
``q >= tau`` and explores the others with probability ``floor``. After each step ``tau`` rises by
``step_size`` (multiplicatively) while the share of informative groups lost to skipping is under
``max_lost`` and falls while it is over. The lost share is measured, not modelled: the prompts kept
at random below tau (the ``floor`` draws) are an unbiased sample of the skipped ones, so the skipped
count at the informative rate of those explored groups (decayed by 0.95 a step, with 2
pseudo-groups at the model's mean q below tau), over that plus the informative groups actually
rolled out. The model only ranks; the exploration keeps the budget honest when it is miscalibrated.
So ``max_lost`` means the same for every selector that uses this piece (docs/strategies/posterior.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..records import Decision, Prompt, Selection

EXPLORE_DECAY = 0.95  # per step: the explored groups' informative rate follows the policy (half-life ~14 steps)
EXPLORE_PRIOR = 2.0  # pseudo-groups at the model's mean q of the prompts below tau


class LostShareBudget:
    """tau, this step's counts, the explored prompts and their decayed informative rate."""

    def __init__(self, tau_start: float, step_size: float, max_tau: float, max_lost: float, floor: float) -> None:
        self.tau, self.step_size, self.max_tau, self.max_lost, self.floor = tau_start, step_size, max_tau, max_lost, floor
        self.counts = {"examined": 0.0, "skipped": 0.0, "below": 0.0, "below_q": 0.0}
        self.explored: list[str] = []  # this step's prompts kept although q < tau (an unbiased sample of the skipped)
        self.explore_n = self.explore_hits = 0.0  # decayed explored groups, and how many were informative

    def keep_probability(self, q: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(below [P]: seen and q < tau, keep [P]: floor below tau, else 1)."""
        below = seen & (q < self.tau)
        return below, np.where(below, self.floor, 1.0)

    def choose(self, candidates: Sequence[Prompt], q: np.ndarray, seen: np.ndarray, budget: int,
               rng: np.random.Generator) -> Selection:
        """Keep candidates in order until ``budget`` are kept: each with probability 1 (``q >= tau`` or no
        history) or ``floor`` (one uniform draw per candidate from ``rng``), every decision noted."""
        below, keep = self.keep_probability(q, seen)
        u = rng.random(len(candidates))
        chosen, decisions = [], []
        for i, p in enumerate(candidates):
            kept = bool(u[i] < keep[i])
            reason = ("no_history" if not seen[i] else "likely" if keep[i] >= 1.0 else "explore") if kept \
                else "unlikely"
            decisions.append(Decision(p.id, kept, reason, float(keep[i])))
            self.note(p.id, float(q[i]), bool(below[i]), kept)
            if kept:
                chosen.append(p)
                if len(chosen) == budget:
                    break
        return Selection(tuple(chosen), tuple(decisions))

    def note(self, prompt_id: str, q: float, below: bool, kept: bool) -> None:
        """One decision of the step (in order)."""
        st = self.counts
        st["examined"] += 1
        if below:
            st["below"] += 1
            st["below_q"] += q
            if kept:
                self.explored.append(prompt_id)
        if not kept:
            st["skipped"] += 1

    def lost_share(self, informative_kept: float) -> float:
        """This step's share of informative groups lost, measured: the skipped prompts count at the
        informative rate of the explored ones (kept at random below tau: an unbiased sample of them)."""
        st = self.counts
        prior = st["below_q"] / st["below"] if st["below"] else 0.0
        rate = (self.explore_hits + EXPLORE_PRIOR * prior) / (self.explore_n + EXPLORE_PRIOR)
        lost = st["skipped"] * rate
        return lost / (lost + informative_kept) if lost + informative_kept > 0 else 0.0

    def observe(self, groups: Sequence[Any]) -> None:
        """The step's groups: the explored ones update the decayed informative rate."""
        explored = set(self.explored)
        self.explore_n *= EXPLORE_DECAY
        self.explore_hits *= EXPLORE_DECAY
        for g in groups:
            if g.prompt_id in explored:
                self.explore_n += 1
                self.explore_hits += not g.is_zero_variance
        self.explored = []

    def end_step(self, groups: Sequence[Any]) -> tuple[float, dict[str, float]]:
        """Move tau toward the budget; returns (the measured lost share, the step's counts) and resets them."""
        lost = self.lost_share(sum(not g.is_zero_variance for g in groups))
        st = self.counts
        if st["examined"]:
            self.tau *= (1 - self.step_size) if lost > self.max_lost else (1 + self.step_size)
            self.tau = float(np.clip(self.tau, 1e-4, self.max_tau))
        self.counts = dict.fromkeys(st, 0.0)
        return lost, st

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "step": dict(self.counts), "explored": list(self.explored),
                "explore": [self.explore_n, self.explore_hits]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tau = float(state["tau"])
        self.counts = {k: float(v) for k, v in state["step"].items()}
        self.explored = list(state["explored"])
        self.explore_n, self.explore_hits = (float(x) for x in state["explore"])
