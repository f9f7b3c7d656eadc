"""GRESO: skip prompts whose reward history predicts a zero-variance group (arXiv 2506.02177).

The rule, as in the authors' code (Infini-AI-Lab/GRESO, ``presampling_selector.py`` strategy
``all_probabilistic`` and ``ray_trainer.py``), for each candidate of the epoch stream:

1. no history -> keep;
2. easy test: z_easy = trailing groups that were all correct; skip with probability
   ``1 - max(p_easy ** z_easy, 0.01)``;
3. if not skipped and the latest group was all wrong: z_hard = trailing all-wrong groups;
   skip with probability ``1 - max(p_hard ** z_hard, 0.01)``;
4. a fresh random draw every time the prompt comes up.

``p_easy`` and ``p_hard`` start at 0.5 and, from the second epoch on, move once per training
step by 0.01 toward keeping the share of all-correct groups at 0.25/3 and of all-wrong groups at
0.25*2/3 among the step's rollouts (a share at or above target lowers p, i.e. skips more),
clipped to [0.05, 0.95].

Where we differ: the authors test mean rewards against 0.98 and 0.11, constants tied to their
1 / 0.1 / 0 reward; we test correctness (all correct / none correct), which is what those
constants meant, for any reward scale. History lives in the ledger (trailing counts per prompt);
this object keeps only p_easy, p_hard and its RNG. Candidates beyond the budget are left in the
stream instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..configlib import check_range, doc
from ..records import Context, Decision, Group, Prompt, Selection


@dataclass
class GresoConfig:
    type: str = doc("Selector name in the registry.", "greso")
    p_easy: float = doc("Initial keep probability base for prompts with an all-correct streak.", 0.5)
    p_hard: float = doc("Initial keep probability base for prompts with an all-wrong streak.", 0.5)
    target_zero_variance: float = doc("Share of zero-variance groups p adapts toward; 1/3 easy, 2/3 hard.", 0.25)
    step_size: float = doc("Change of p_easy / p_hard per training step.", 0.01)
    min_p: float = doc("Lower clip of p_easy / p_hard.", 0.05)
    max_p: float = doc("Upper clip of p_easy / p_hard.", 0.95)
    floor: float = doc("Smallest keep probability: every prompt is explored at least this often.", 0.01)
    adapt_from_epoch: int = doc("First epoch (0-based) in which p adapts (the authors: 1, the second).", 1)

    strategy = "rollsift.select.greso:GresoSelector"

    def __post_init__(self) -> None:
        check_range("selector.min_p", self.min_p, 0.0, 1.0)
        check_range("selector.max_p", self.max_p, self.min_p, 1.0)
        check_range("selector.p_easy", self.p_easy, self.min_p, self.max_p)
        check_range("selector.p_hard", self.p_hard, self.min_p, self.max_p)
        check_range("selector.target_zero_variance", self.target_zero_variance, 0.0, 1.0)
        check_range("selector.floor", self.floor, 0.0, 1.0)
        check_range("selector.step_size", self.step_size, 0.0, 1.0)


class GresoSelector:
    scope = "stream"
    uses_history = True  # acts on a prompt's earlier groups: nothing to act on in the first epoch

    def __init__(self, cfg: GresoConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or GresoConfig()
        self.p_easy, self.p_hard = self.cfg.p_easy, self.cfg.p_hard
        self.rng = np.random.default_rng(seed)
        self._step = {"examined": 0, "skipped_easy": 0, "skipped_hard": 0}
        self._last: dict[str, float] = {}

    def keep_probabilities(self, z_easy: np.ndarray, z_hard: np.ndarray, latest_wrong: np.ndarray):
        """Keep probability of the easy test and of the hard test for each candidate."""
        f = self.cfg.floor
        keep_easy = np.where(z_easy > 0, np.maximum(self.p_easy ** z_easy, f), 1.0)
        keep_hard = np.where(latest_wrong & (z_hard > 0), np.maximum(self.p_hard ** z_hard, f), 1.0)
        return keep_easy, keep_hard

    def ask(self, candidates: Sequence[Prompt], budget: int, ledger: Any, ctx: Context) -> Selection:
        if budget <= 0 or not candidates:
            return Selection((), ())
        s = ledger.lookup([p.id for p in candidates])
        seen = np.asarray(s.rollouts) > 0
        z_easy = np.where(seen, s.trailing_all_correct, 0)
        z_hard = np.where(seen, s.trailing_all_wrong, 0)
        keep_easy, keep_hard = self.keep_probabilities(z_easy, z_hard, z_hard > 0)
        u = self.rng.random((len(candidates), 2))  # a fresh draw per test, every time a prompt comes up
        skip_easy = u[:, 0] >= keep_easy
        skip_hard = ~skip_easy & (u[:, 1] >= keep_hard)
        chosen, decisions = [], []
        for i, p in enumerate(candidates):
            if skip_easy[i]:
                decisions.append(Decision(p.id, False, "easy", float(keep_easy[i])))
            elif skip_hard[i]:
                decisions.append(Decision(p.id, False, "hard", float(keep_hard[i])))
            else:
                reason = "no_history" if not seen[i] else "explore" if (z_easy[i] or z_hard[i]) else "informative"
                decisions.append(Decision(p.id, True, reason, float(keep_easy[i] * keep_hard[i])))
                chosen.append(p)
                if len(chosen) == budget:
                    break
        self._step["examined"] += len(decisions)
        self._step["skipped_easy"] += sum(d.reason == "easy" for d in decisions)
        self._step["skipped_hard"] += sum(d.reason == "hard" for d in decisions)
        return Selection(tuple(chosen), tuple(decisions))

    def tell(self, groups: Sequence[Group], ledger: Any, ctx: Context) -> None:
        """Once per training step: adapt p_easy / p_hard toward their zero-variance targets."""
        cfg = self.cfg
        n = len(groups)
        easy = sum(all(g.correct) for g in groups) / n if n else 0.0
        hard = sum(not any(g.correct) for g in groups) / n if n else 0.0
        if n and ctx.epoch >= cfg.adapt_from_epoch:
            t = cfg.target_zero_variance
            self.p_easy += -cfg.step_size if easy >= t / 3 else cfg.step_size
            self.p_hard += -cfg.step_size if hard >= t * 2 / 3 else cfg.step_size
            self.p_easy = float(np.clip(round(self.p_easy, 10), cfg.min_p, cfg.max_p))
            self.p_hard = float(np.clip(round(self.p_hard, 10), cfg.min_p, cfg.max_p))
        st = self._step
        skipped = st["skipped_easy"] + st["skipped_hard"]
        self._last = {
            "select/greso/p_easy": self.p_easy,
            "select/greso/p_hard": self.p_hard,
            "select/greso/skip_frac": skipped / st["examined"] if st["examined"] else 0.0,
            "select/greso/skipped_easy": float(st["skipped_easy"]),
            "select/greso/skipped_hard": float(st["skipped_hard"]),
            "select/greso/examined": float(st["examined"]),
            "select/greso/all_correct_frac": easy,
            "select/greso/all_wrong_frac": hard,
        }
        self._step = dict.fromkeys(st, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"p_easy": self.p_easy, "p_hard": self.p_hard, "rng": self.rng.bit_generator.state,
                "step": dict(self._step)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.p_easy, self.p_hard = float(state["p_easy"]), float(state["p_hard"])
        self.rng.bit_generator.state = state["rng"]
        self._step = dict(state["step"])

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
