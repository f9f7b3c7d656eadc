"""Posterior selection: skip a prompt only as often as its group is likely to teach nothing.

GRESO skips on the length of a zero-variance streak, with a probability that knows neither how sure
it is nor how long ago the streak was. This selector keeps, for every prompt, a Beta posterior over
its success rate p under the current policy and asks what a group of n rollouts of it would be:

    q = P(informative) = 1 - E[p^n] - E[(1 - p)^n],   E[p^n] = prod_{i<n} (a + i) / (a + b + i)

(closed form under Beta(a, b); ``informative_probability``). It keeps a prompt whose q is at least
``tau`` and explores the others with probability ``floor``: for a budget of informative groups lost,
skipping the prompts of smallest q first saves the most rollouts, and the posterior already widens
q for a prompt it knows little about (a prompt never seen is always kept). One knob moves online:
after each step,
``tau`` rises by ``step_size`` (multiplicatively) while the expected share of informative groups
lost among the step's examined candidates, ``sum q (1 - keep) / sum q``, is under ``max_lost``, and
falls while it is over; so the lost share stays near its budget instead of GRESO's fixed
zero-variance target. The lost share is measured, not modelled: the prompts kept at random below
tau (the ``floor`` draws) are an unbiased sample of the skipped ones, so the skipped count at the
informative rate of those explored groups (decayed by 0.95 a step, with 2 pseudo-groups at the
model's mean q), over that plus the informative groups actually rolled out. The Beta model ranks
the prompts; the exploration keeps the budget honest when the model is miscalibrated (as under a
drift that makes easy prompts easier, where evidence decaying toward the prior overstates q). The
controller is ``select/budget.py`` (shared with the learned selector).

Evidence fades as the policy moves: before each update, and when read, a prompt's counts are
multiplied by ``lambda ** (versions since they were last updated)``, ``lambda = 0.5 ** (1 /
half_life)``, i.e. ``(a, b) <- lambda (a, b) + (1 - lambda) (a0, b0)``: an old all-correct streak
counts half after ``half_life`` policy versions. The prior (a0, b0) is fitted by the method of
moments to the groups of the last ``prior_window`` steps (empirical Bayes: on a pool whose prompts
are mostly solved or hopeless it is U-shaped, which is what makes one all-correct group of 8 say
"informative next time with probability ~0.25", as the testbed measures, instead of the flat
prior's 0.47).

Anchored on MoPPS (Qu et al., arXiv 2507.04632): Beta posteriors per prompt with exponential decay
toward the prior. Where we depart: MoPPS ranks candidates by a Thompson sample's distance to a target
success rate and picks the closest; we skip in proportion to the posterior probability that the
group is informative, with a budget on what is lost, and keep the prefix rule of a stream selector
so it composes with dynamic sampling, PODS, replay, TRL and verl like GRESO. History comes from the
ledger: the per-prompt counts are a cache, rebuilt from the ledger's training groups after a
construction or a ``load_state_dict`` (so a resumed run, a counterfactual replay and every engine
decide from the same history); the state holds only tau, the prior, the explored groups' decayed
counts, the controller's step counts and the RNG. docs/strategies/posterior.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..configlib import ConfigError, check_positive, check_range, doc
from ..records import Context, Group, Prompt, Selection
from .budget import EXPLORE_DECAY, EXPLORE_PRIOR, LostShareBudget  # noqa: F401 - the constants, re-exported


@dataclass
class PosteriorConfig:
    type: str = doc("Selector name in the registry.", "posterior")
    max_lost: float = doc("Budget: expected share of informative groups lost to skipping that tau adapts toward.",
                          0.3)
    half_life: float = doc("Policy versions after which a group's evidence counts half (exponential forgetting).",
                           30.0)
    floor: float = doc("Smallest keep probability: every prompt is explored at least this often.", 0.02)
    tau_start: float = doc("Initial threshold: prompts with P(informative) >= tau are always kept.", 0.02)
    step_size: float = doc("Relative change of tau per training step.", 0.05)
    max_tau: float = doc("Largest tau (1 lets the selector skip even prompts it is unsure about).", 1.0)
    prior: Literal["fit", "fixed"] = doc(
        "'fit': Beta prior fitted to the recent groups (empirical Bayes); 'fixed': prior_alpha / prior_beta.", "fit")
    prior_alpha: float = doc("Prior alpha (used with prior = 'fixed', and until a fit has data).", 1.0)
    prior_beta: float = doc("Prior beta (used with prior = 'fixed', and until a fit has data).", 1.0)
    prior_window: int = doc("Training steps of groups the prior is fitted on.", 20)

    strategy = "rollsift.select.posterior:PosteriorSelector"

    def __post_init__(self) -> None:
        check_range("selector.max_lost", self.max_lost, 0.0, 1.0)
        check_positive("selector.half_life", self.half_life)
        check_range("selector.floor", self.floor, 0.0, 1.0)
        check_range("selector.tau_start", self.tau_start, 1e-6, 1.0)
        check_range("selector.step_size", self.step_size, 0.0, 1.0)
        check_range("selector.max_tau", self.max_tau, self.tau_start, 1.0)
        check_positive("selector.prior_alpha", self.prior_alpha)
        check_positive("selector.prior_beta", self.prior_beta)
        if self.prior_window < 1:
            raise ConfigError(f"selector.prior_window must be >= 1, got {self.prior_window!r}")


def informative_probability(a: Any, b: Any, n: int) -> np.ndarray:
    """P(a group of n samples is neither all correct nor all wrong) for p ~ Beta(a, b), elementwise."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    all_right = np.ones(np.broadcast(a, b).shape)
    all_wrong = np.ones_like(all_right)
    for i in range(int(n)):
        all_right *= (a + i) / (a + b + i)
        all_wrong *= (b + i) / (a + b + i)
    return np.clip(1.0 - all_right - all_wrong, 0.0, 1.0)


def fit_beta(k: np.ndarray, n: np.ndarray, default: tuple[float, float]) -> tuple[float, float]:
    """Method-of-moments Beta(a, b) for a Beta-Binomial sample of k correct out of n per group."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    if len(k) < 8 or not (n > 1).all():
        return default
    x = k / n
    mu = float(x.mean())
    if not 0.0 < mu < 1.0:
        return default
    nbar = float(n.mean())
    rho = (nbar * float(x.var()) / (mu * (1 - mu)) - 1.0) / (nbar - 1.0)  # intra-prompt correlation
    rho = float(np.clip(rho, 1.0 / 101.0, 0.95))
    s = 1.0 / rho - 1.0  # a + b
    return float(np.clip(mu * s, 0.02, 100.0)), float(np.clip((1 - mu) * s, 0.02, 100.0))


class PosteriorSelector:
    scope = "stream"
    uses_history = True

    def __init__(self, cfg: PosteriorConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or PosteriorConfig()
        self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.budget = LostShareBudget(c.tau_start, c.step_size, c.max_tau, c.max_lost, c.floor)  # tau and its controller
        self.lam = 0.5 ** (1.0 / self.cfg.half_life)
        self.prior = (self.cfg.prior_alpha, self.cfg.prior_beta)
        self._last: dict[str, float] = {}
        self._reset_cache()

    @property
    def tau(self) -> float:
        return self.budget.tau

    # ------------------------------------------------------------------ the history cache
    def _reset_cache(self) -> None:
        self.slot: dict[str, int] = {}
        self.succ = np.zeros(1024)
        self.fail = np.zeros(1024)
        self.ver = np.zeros(1024)
        self.recent: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (step, k [G], n [G]) of recent steps
        self.synced = False

    def _slots(self, ids: Sequence[str], create: bool) -> np.ndarray:
        out = np.empty(len(ids), np.int64)
        for i, pid in enumerate(ids):
            s = self.slot.get(pid)
            if s is None:
                if not create:
                    out[i] = -1
                    continue
                s = self.slot[pid] = len(self.slot)
                if s >= len(self.succ):
                    for name in ("succ", "fail", "ver"):
                        arr = getattr(self, name)
                        setattr(self, name, np.concatenate([arr, np.zeros(len(arr))]))
            out[i] = s
        return out

    def _add(self, ids: Sequence[str], k: np.ndarray, n: np.ndarray, version: np.ndarray, step: int) -> None:
        """Fold groups (in order) into the decayed counts; remember them for the prior fit."""
        for pid, kk, nn, v in zip(ids, k, n, version):  # in order: a prompt may come twice in a batch
            s = self._slots([pid], create=True)[0]
            decay = self.lam ** max(float(v) - self.ver[s], 0.0)
            self.succ[s] = self.succ[s] * decay + kk
            self.fail[s] = self.fail[s] * decay + (nn - kk)
            self.ver[s] = max(float(v), self.ver[s])
        self.recent.append((step, np.asarray(k, np.float64), np.asarray(n, np.float64)))
        while self.recent and self.recent[0][0] <= step - self.cfg.prior_window:
            self.recent.popleft()
        self._fit_prior()

    def _fit_prior(self) -> None:
        if self.cfg.prior == "fit" and self.recent:
            k = np.concatenate([r[1] for r in self.recent])
            n = np.concatenate([r[2] for r in self.recent])
            self.prior = fit_beta(k, n, (self.cfg.prior_alpha, self.cfg.prior_beta))

    def sync(self, ledger: Any) -> None:
        """Rebuild the per-prompt counts from the ledger's live training groups (after a construction
        or a state load: the ledger is the history, the counts only a cache of it)."""
        prior = self.prior
        self._reset_cache()
        if ledger is not None and hasattr(ledger, "groups"):
            rows = list(ledger.groups("train"))
            by_step: dict[int, list] = {}
            for g in rows:
                by_step.setdefault(g.step, []).append(g)
            for step in sorted(by_step):
                gs = by_step[step]
                self._add([g.prompt_id for g in gs], np.array([g.n_correct for g in gs]), np.array([g.n for g in gs]),
                          np.array([g.policy_version for g in gs]), step)
        if not self.recent:
            self.prior = prior  # nothing to fit on: keep the prior the state carried
        self.synced = True

    def posterior(self, ids: Sequence[str], version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a [P], b [P], seen [P]) of the prompts under the policy of ``version``."""
        s = self._slots(ids, create=False)
        seen = s >= 0
        at = np.where(seen, s, 0)
        decay = np.where(seen, self.lam ** np.maximum(version - self.ver[at], 0.0), 0.0)
        a0, b0 = self.prior
        return a0 + self.succ[at] * decay, b0 + self.fail[at] * decay, seen

    # ------------------------------------------------------------------ the selector
    def ask(self, candidates: Sequence[Prompt], budget: int, ledger: Any, ctx: Context) -> Selection:
        if budget <= 0 or not candidates:
            return Selection((), ())
        if not self.synced:
            self.sync(ledger)
        if ctx.n is None:
            raise ValueError("the posterior selector needs the group size: pass Context(n=...) (the pipeline does)")
        a, b, seen = self.posterior([p.id for p in candidates], ctx.policy_version)
        q = informative_probability(a, b, ctx.n)
        return self.budget.choose(candidates, q, seen, budget, self.rng)

    def lost_share(self, informative_kept: float) -> float:
        """This step's measured share of informative groups lost (``LostShareBudget.lost_share``)."""
        return self.budget.lost_share(informative_kept)

    def tell(self, groups: Sequence[Group], ledger: Any, ctx: Context) -> None:
        """After the update: fold the step's groups into the posteriors, move tau toward the budget."""
        self.budget.observe(groups)
        if not self.synced:
            self.sync(ledger)  # the ledger already holds this step's groups
        elif groups:
            self._add([g.prompt_id for g in groups], np.array([sum(g.correct) for g in groups]),
                      np.array([g.n for g in groups]), np.array([g.policy_version for g in groups]), ctx.step)
        lost, st = self.budget.end_step(groups)
        self._last = {
            "select/posterior/tau": self.tau, "select/posterior/expected_lost": lost,
            "select/posterior/skip_frac": st["skipped"] / st["examined"] if st["examined"] else 0.0,
            "select/posterior/examined": st["examined"], "select/posterior/prior_alpha": self.prior[0],
            "select/posterior/prior_beta": self.prior[1], "select/posterior/tracked_prompts": float(len(self.slot)),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**self.budget.state_dict(), "prior": list(self.prior), "rng": self.rng.bit_generator.state,
                "last": dict(self._last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self._last = dict(state["last"])
        self._reset_cache()  # rebuilt from the ledger at the next call
        self.prior = tuple(state["prior"])

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
