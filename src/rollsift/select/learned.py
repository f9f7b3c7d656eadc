"""Learned selection: skip a prompt as often as a model trained on this run says it will not teach.

GRESO and the posterior selector decide from one prompt's own streak or counts. This selector fits,
online, a logistic regression of z = P(the next group of this prompt is zero-variance) on features
of the prompt's history and of the run (``FEATURES``: the last two outcomes, mean accuracy, share
of zero-variance visits, visits, streaks, policy versions since the last visit, the step, the pool's
recent zero-variance share), and keeps a prompt whose q = 1 - z is at least ``tau``, the others
with probability ``floor``. ``tau`` moves under the posterior selector's measured lost-share
controller (``select/budget.py``), so ``max_lost`` means the same: the share of informative groups
lost to skipping, measured on the explored prompts.

No look-ahead: a prediction at step s uses the model as trained on the groups told before s and the
prompt's groups before s. Training: after each step, each observed group of a prompt with history
is one example, its features as they were when it was chosen (the history before this step; the
group's own step and policy version) -> its outcome, then one Newton step (``learned_model.py``,
with forgetting: an example counts half after ``half_life`` steps). Only observed groups teach it,
but the choice to observe depends on the features and an independent draw only, never on the
outcome, so P(zero variance | features) is the same among observed and skipped prompts; the floor
makes every feature region observable, and with ``weighting = "ipw"`` each explored group weighs
1 / floor (its known keep probability), so the fit targets all candidates, not the kept ones
(inverse propensity weighting). The predictions made before each outcome was known are kept in a
calibration histogram: the metrics give the run's AUC and a 10-bin reliability table.

History comes from the ledger: the per-prompt features are a cache rebuilt from the ledger's
training groups after a construction or a ``load_state_dict``; the state holds the model (w, H),
the pool share, tau and its controller, the calibration histogram and the RNG.
docs/strategies/learned.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..configlib import check_positive, check_range, doc
from ..records import Context, Group, Prompt, Selection
from .budget import LostShareBudget
from .learned_model import Calibration, OnlineLogistic

FEATURES = ("bias", "last_all_correct", "last_all_wrong", "prev_all_correct", "prev_all_wrong", "has_prev",
            "last_accuracy", "mean_accuracy", "zero_variance_share", "mean_extremeness", "log_visits",
            "log_streak_correct", "log_streak_wrong", "log_versions_since", "log_step", "pool_zero_variance",
            "zero_variance_logit")
POOL_DECAY = 0.8  # per step: the pool's zero-variance share follows the policy
CACHE = ("visits", "acc_sum", "zv", "last_acc", "prev_acc", "last_ver", "streak_c", "streak_w")


@dataclass
class LearnedConfig:
    type: str = doc("Selector name in the registry.", "learned")
    max_lost: float = doc("Budget: measured share of informative groups lost to skipping that tau adapts toward.",
                          0.3)
    floor: float = doc("Smallest keep probability: every prompt is explored at least this often (> 0: the "
                       "model and the controller learn from the explored prompts).", 0.02)
    tau_start: float = doc("Initial threshold: prompts with predicted P(informative) >= tau are always kept.", 0.02)
    step_size: float = doc("Relative change of tau per training step.", 0.05)
    max_tau: float = doc("Largest tau (1 lets the selector skip even prompts it is unsure about).", 1.0)
    half_life: float = doc("Training steps after which an example counts half in the model (forgetting).", 50.0)
    ridge: float = doc("L2 penalty of the logistic regression (in examples' worth of curvature).", 1.0)
    weighting: Literal["ipw", "none"] = doc(
        "'ipw': explored groups weigh 1 / floor (inverse propensity: fit all candidates); 'none': all weigh 1.", "ipw")

    strategy = "rollsift.select.learned:LearnedSelector"

    def __post_init__(self) -> None:
        check_range("selector.max_lost", self.max_lost, 0.0, 1.0)
        check_range("selector.floor", self.floor, 1e-3, 1.0)
        check_range("selector.tau_start", self.tau_start, 1e-6, 1.0)
        check_range("selector.step_size", self.step_size, 0.0, 1.0)
        check_range("selector.max_tau", self.max_tau, self.tau_start, 1.0)
        check_positive("selector.half_life", self.half_life)
        check_positive("selector.ridge", self.ridge)
        if self.weighting not in ("ipw", "none"):
            from ..configlib import ConfigError

            raise ConfigError(f"selector.weighting must be 'ipw' or 'none', got {self.weighting!r}")


class LearnedSelector:
    scope = "stream"
    uses_history = True

    def __init__(self, cfg: LearnedConfig | None = None, seed: int = 0) -> None:
        self.cfg = c = cfg or LearnedConfig()
        self.rng = np.random.default_rng(seed)
        self.budget = LostShareBudget(c.tau_start, c.step_size, c.max_tau, c.max_lost, c.floor)
        self.model = OnlineLogistic(len(FEATURES), c.half_life, c.ridge)
        self.calibration = Calibration()
        self.pool_zv = 0.5  # decayed (propensity-weighted) zero-variance share of the recent groups
        self._last: dict[str, float] = {}
        self._reset_cache()

    # ------------------------------------------------------------------ the per-prompt history cache
    def _reset_cache(self) -> None:
        self.slot: dict[str, int] = {}
        self.cache = {k: np.full(1024, np.nan if k.endswith("acc") else 0.0) for k in CACHE}
        self.synced = False

    def _slots(self, ids: Sequence[str]) -> np.ndarray:
        """Slots [P] of the ids; -1 for a prompt without history."""
        get = self.slot.get
        return np.fromiter((get(pid, -1) for pid in ids), np.int64, len(ids))

    def _fold(self, ids: Sequence[str], k: Sequence[int], n: Sequence[int], version: Sequence[int]) -> None:
        """Groups, in order, into the cache: vectorised, one pass per repeat of a prompt in the batch
        (so a prompt's own groups fold in order; different prompts commute)."""
        if not len(ids):
            return
        c = self.cache
        new = [pid for pid in dict.fromkeys(ids) if pid not in self.slot]
        self.slot.update(zip(new, range(len(self.slot), len(self.slot) + len(new))))
        while len(self.slot) > len(c["visits"]):
            for name, arr in c.items():
                c[name] = np.concatenate([arr, np.full(len(arr), np.nan if name.endswith("acc") else 0.0)])
        s = self._slots(ids)
        k, n, v = np.asarray(k, np.float64), np.asarray(n, np.float64), np.asarray(version, np.float64)
        order = np.argsort(s, kind="stable")
        first = np.r_[True, s[order][1:] != s[order][:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(len(s)), 0))
        rank = np.empty(len(s), np.int64)
        rank[order] = np.arange(len(s)) - start  # how many earlier groups of the same prompt in the batch
        for r in range(int(rank.max()) + 1):
            i = np.flatnonzero(rank == r)
            si, ki, ni = s[i], k[i], n[i]
            acc = np.where(ni > 0, ki / np.maximum(ni, 1), 0.0)
            c["prev_acc"][si], c["last_acc"][si] = c["last_acc"][si], acc
            c["visits"][si] += 1
            c["acc_sum"][si] += acc
            c["zv"][si] += (ki == 0) | (ki == ni)
            c["streak_c"][si] = np.where(ki == ni, c["streak_c"][si] + 1, 0)
            c["streak_w"][si] = np.where(ki == 0, c["streak_w"][si] + 1, 0)
            c["last_ver"][si] = np.maximum(c["last_ver"][si], v[i])

    def sync(self, ledger: Any) -> None:
        """Rebuild the cache from the ledger's live training groups (the ledger is the history)."""
        self._reset_cache()
        if ledger is not None and hasattr(ledger, "groups"):
            rows = list(ledger.groups("train"))
            self._fold([g.prompt_id for g in rows], [g.n_correct for g in rows], [g.n for g in rows],
                       [g.policy_version for g in rows])
        self.synced = True

    def features(self, s: np.ndarray, version: Any, step: Any) -> np.ndarray:
        """Features [P, len(FEATURES)] of the prompts in slots ``s`` [P] (all with history) at ``version``
        and ``step`` (scalars or [P])."""
        c = {k: v[s] for k, v in self.cache.items()}
        visits = c["visits"]
        last, prev, has_prev = c["last_acc"], c["prev_acc"], visits >= 2
        mean = c["acc_sum"] / np.maximum(visits, 1)
        since = np.maximum(np.asarray(version, np.float64) - c["last_ver"], 0.0)
        cols = [np.ones(len(s)), last >= 1, last <= 0, has_prev & (prev >= 1), has_prev & (prev <= 0), has_prev,
                last, mean, c["zv"] / np.maximum(visits, 1), (2 * mean - 1) ** 2, np.log1p(visits) / 4,
                np.log1p(c["streak_c"]) / 3, np.log1p(c["streak_w"]) / 3, np.log1p(since) / 4,
                np.broadcast_to(np.log1p(np.asarray(step, np.float64)) / 7, (len(s),)), np.full(len(s), self.pool_zv),
                np.log((c["zv"] + 0.5) / (visits - c["zv"] + 0.5)) / 4]  # the smoothed zero-variance rate, on the model's scale
        return np.stack([np.asarray(x, np.float64) for x in cols], axis=1)

    def predict(self, ids: Sequence[str], version: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(P(zero variance) [P], NaN without history; has history [P]) of the prompts, now."""
        s = self._slots(ids)
        seen = s >= 0
        z = np.full(len(ids), np.nan)
        if seen.any():
            z[seen] = self.model.predict(self.features(s[seen], version, step))
        return z, seen

    # ------------------------------------------------------------------ the selector
    def ask(self, candidates: Sequence[Prompt], budget: int, ledger: Any, ctx: Context) -> Selection:
        if budget <= 0 or not candidates:
            return Selection((), ())
        if not self.synced:
            self.sync(ledger)
        z, seen = self.predict([p.id for p in candidates], ctx.policy_version, ctx.step)
        q = np.where(seen, 1.0 - z, 1.0)
        return self.budget.choose(candidates, q, seen, budget, self.rng)

    def tell(self, groups: Sequence[Group], ledger: Any, ctx: Context) -> None:
        """After the update: train on the step's groups (features before them), fold them in, move tau."""
        explored = set(self.budget.explored)
        self.budget.observe(groups)
        step_metrics: dict[str, float] = {}
        if not self.synced:
            self.sync(ledger)  # the ledger already holds this step's groups: no example this step
        elif groups:
            ids = [g.prompt_id for g in groups]
            y = np.array([g.is_zero_variance for g in groups], np.float64)
            w = np.array([1.0 / self.cfg.floor if pid in explored and self.cfg.weighting == "ipw" else 1.0
                          for pid in ids])
            s = self._slots(ids)
            seen = s >= 0
            if seen.any():
                X = self.features(s[seen], np.array([g.policy_version for g in groups])[seen],
                                  np.array([g.step for g in groups])[seen])
                z = self.model.predict(X)  # the prediction made when they were chosen: before the update
                self.calibration.add(z, y[seen])
                step_metrics = {"select/learned/pred_zv": float(z.mean()), "select/learned/obs_zv": float(y[seen].mean()),
                                "select/learned/brier": float(((z - y[seen]) ** 2).mean())}
                self.model.update(X, y[seen], w[seen])
            self._fold(ids, [sum(g.correct) for g in groups], [g.n for g in groups],
                       [g.policy_version for g in groups])
            self.pool_zv = POOL_DECAY * self.pool_zv + (1 - POOL_DECAY) * float((w * y).sum() / w.sum())
        lost, st = self.budget.end_step(groups)
        auc = self.calibration.auc()
        self._last = {
            "select/learned/tau": self.budget.tau, "select/learned/expected_lost": lost,
            "select/learned/skip_frac": st["skipped"] / st["examined"] if st["examined"] else 0.0,
            "select/learned/examined": st["examined"], "select/learned/pool_zv": self.pool_zv,
            "select/learned/tracked_prompts": float(len(self.slot)),
            **({} if auc is None else {"select/learned/auc": auc}), **step_metrics,
        }
        for j, row in enumerate(self.calibration.table()):  # over the run so far: the report's reliability plot
            if row["groups"]:  # (no NaN in the metrics file: an empty bin has no key)
                self._last[f"select/learned/calib/groups_{j}"] = row["groups"]
                self._last[f"select/learned/calib/observed_{j}"] = row["observed"]
                self._last[f"select/learned/calib/predicted_{j}"] = row["predicted"]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**self.budget.state_dict(), "model": self.model.state_dict(), "pool_zv": self.pool_zv,
                "calibration": self.calibration.hist.tolist(), "rng": self.rng.bit_generator.state,
                "last": dict(self._last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget.load_state_dict(state)
        self.model.load_state_dict(state["model"])
        self.pool_zv = float(state["pool_zv"])
        self.calibration.hist = np.array(state["calibration"], np.int64)
        self.rng.bit_generator.state = state["rng"]
        self._last = dict(state["last"])
        self._reset_cache()  # rebuilt from the ledger at the next call

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
