"""Fit the difficulty model (``rollsift.sim.model``) to a recorded run's ledger.

Data: every live group event of purpose "train" or "probe": prompt i, the policy version v that
sampled it, n rollouts of which k were correct. Likelihood:

    k ~ Binomial(n, sigmoid(a_i + s_i * c_v + beta * x_iv))

where ``x_iv`` is the practice the ledger implies: the summed reward variance
``k (n - k) / (n (n - 1))`` of prompt i's train groups sampled at versions before v (what the
simulated learner adds when it trains on them).

Estimator: maximum a posteriori. A prompt seen only all-correct has no finite maximum-likelihood
ease, so the per-prompt parameters get hierarchical Gaussian priors whose mean and spread are
re-estimated every sweep (Laplace EM: spread^2 = spread of the estimates + their mean posterior
variance); competence follows a random walk over the versions seen; the practice weight a N(0, 1):

    a_i ~ N(mu_a, tau_a^2),  s_i ~ N(1, tau_s^2),  c_v - c_v' ~ N(0, smooth^2),  beta ~ N(0, 1)

Block-coordinate Newton: all prompts at once (a 2 x 2 system each), the competence trajectory (a
tridiagonal system), then beta. Gauge: c = 0 at the first version seen and the mean gain is 1, so
c is in logits of an average prompt.

Learning rate: ``lr = (c_last - c_first) / sum_v signal_v / (B n)`` with ``signal_v`` the sum over
informative train groups sampled at version v of ``p (1 - p) n`` under the fitted p: the simulated
learner's rule fitted on totals. ``lr_r2`` says how well the cumulative signal tracks the fitted
trajectory (1: the run learnt as the model says it should).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .model import DifficultyModel, prompts_for


@dataclass
class Observations:
    """Group outcomes of a run, as arrays [G] (one entry per group event) over prompts [P] and versions [V]."""

    ids: list[str]  # [P] prompts with at least one group
    prompt: np.ndarray  # [G] row into ids
    version: np.ndarray  # [G] index into versions
    versions: np.ndarray  # [V] policy versions seen, ascending
    n: np.ndarray  # [G]
    k: np.ndarray  # [G] correct completions
    train: np.ndarray  # [G] purpose "train" (else "probe")
    x: np.ndarray = field(default=None)  # [G] practice before the group (see module docstring)
    pool: list[str] = field(default_factory=list)  # registered pool ids (may hold unseen prompts)
    batch_size: int = 0  # groups per training batch (the steps' batch/groups, else inferred)

    def __post_init__(self) -> None:
        if self.x is None:
            self.x = practice_covariate(self.prompt, self.version, self.n, self.k, self.train)


def practice_covariate(prompt: np.ndarray, version: np.ndarray, n: np.ndarray, k: np.ndarray,
                       train: np.ndarray) -> np.ndarray:
    """x [G]: summed reward variance of the same prompt's train groups at strictly earlier versions."""
    if not len(prompt):
        return np.zeros(0)
    nv = int(version.max()) + 1
    contrib = np.where(train & (n > 1), k * (n - k) / np.maximum(n * (n - 1), 1), 0.0)
    keys, inv = np.unique(prompt.astype(np.int64) * nv + version, return_inverse=True)
    total = np.bincount(inv, contrib, minlength=len(keys))
    before = np.cumsum(total) - total  # exclusive running sum over (prompt, version) in order
    owner = keys // nv
    first = np.r_[True, owner[1:] != owner[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
    return (before - before[start])[inv]


def load_observations(ledger: Any) -> Observations:
    """Read a ledger (a LedgerBase, a run directory or a ledger file) into Observations."""
    if isinstance(ledger, (str, Path)):
        from ..rundir import RunDir

        with RunDir(ledger).open_ledger() as led:
            return load_observations(led)
    index: dict[str, int] = {}
    prompt, version, n, k, train = [], [], [], [], []
    per_step: dict[int, int] = {}
    for g in ledger.groups():
        if g.purpose not in ("train", "probe") or g.n == 0:
            continue
        prompt.append(index.setdefault(g.prompt_id, len(index)))
        version.append(g.policy_version)
        n.append(g.n)
        k.append(g.n_correct)
        train.append(g.purpose == "train")
        if g.purpose == "train":
            per_step[g.step] = per_step.get(g.step, 0) + 1
    if not prompt:
        raise ValueError("the ledger holds no train or probe groups to fit")
    versions, vidx = np.unique(np.array(version), return_inverse=True)
    return Observations(list(index), np.array(prompt), vidx, versions, np.array(n, np.float64),
                        np.array(k, np.float64), np.array(train), pool=list(ledger.pool()[0]),
                        batch_size=_batch_size(ledger, per_step))


def _batch_size(ledger: Any, train_groups_per_step: dict[int, int]) -> int:
    """Groups trained on per step: the steps' ``batch/groups`` metric; without step records, the
    groups the last filter kept per step; without filters, the train groups generated per step.
    (Generated groups overcount the batch by the dropped ones under dynamic sampling.)"""
    batch = [b for b in (s.metrics.get("batch/groups") for s in ledger.steps()) if b]
    if not batch:
        kept: dict[tuple[int, str], int] = {}
        for f in ledger.filters():
            kept[f.step, f.name] = kept.get((f.step, f.name), 0) + f.kept
        last = {}  # step -> its filter counts, the last filter's (names in first-seen order) winning
        for (step, _), count in kept.items():
            last[step] = count
        batch = list(last.values())
    if not batch:
        batch = list(train_groups_per_step.values())
    return max(int(np.median(batch)), 1)


@dataclass
class FittedModel:
    """The fitted parameters. Arrays: ease, gain, *_sd [P] over ``ids``; competence [V] over ``versions``."""

    ids: list[str]
    ease: np.ndarray
    gain: np.ndarray
    ease_sd: np.ndarray  # Laplace posterior sd
    gain_sd: np.ndarray
    versions: np.ndarray
    competence: np.ndarray
    practice: float
    lr: float
    lr_r2: float
    prior: dict[str, float]
    n: int  # most common group size
    batch_size: int
    groups: int
    sweeps: int
    log_posterior: float
    pool: list[str] = field(default_factory=list)

    def to_model(self, size: int | None = None, seed: int = 0) -> tuple[list, DifficultyModel]:
        """A simulated pool shaped like the run. ``size`` None: the run's pool, fitted values for the
        prompts that have data and (ease, gain) pairs resampled from the fitted ones for the others;
        else ``size`` prompts ``fit/<i>`` with resampled pairs."""
        rng = np.random.default_rng([seed, 0xF17])
        if size is None:
            ids = self.pool or self.ids
            pos = {pid: i for i, pid in enumerate(self.ids)}
            rows = np.array([pos.get(pid, -1) for pid in ids])
            miss = rows < 0
            rows[miss] = rng.integers(len(self.ids), size=int(miss.sum()))
        else:
            ids = [f"fit/{i}" for i in range(size)]
            rows = rng.integers(len(self.ids), size=size)
        model = DifficultyModel.from_arrays(ids, self.ease[rows], self.gain[rows], practice=self.practice)
        return prompts_for(ids), model

    def summary(self) -> dict[str, Any]:
        """JSON-ready headline figures (no per-prompt arrays)."""
        q = lambda v: [float(x) for x in np.quantile(v, [0.1, 0.5, 0.9])]
        return {"prompts": len(self.ids), "pool": len(self.pool), "groups": self.groups, "n": self.n,
                "batch_size": self.batch_size, "versions": len(self.versions),
                "competence_final": float(self.competence[-1]), "practice": self.practice, "lr": self.lr,
                "lr_r2": self.lr_r2, "ease_q10_50_90": q(self.ease), "gain_q10_50_90": q(self.gain),
                "prior": dict(self.prior), "sweeps": self.sweeps, "log_posterior": self.log_posterior}

    def save(self, path: str | Path) -> None:
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        Path(path).write_text(json.dumps({"format": "rollsift.sim.fit/1", **d}))

    @classmethod
    def load(cls, path: str | Path) -> "FittedModel":
        d = json.loads(Path(path).read_text())
        if d.pop("format", None) != "rollsift.sim.fit/1":
            raise ValueError(f"{path} is not a fitted simulator model (write one with FittedModel.save)")
        for k in ("ease", "gain", "ease_sd", "gain_sd", "versions", "competence"):
            d[k] = np.array(d[k])
        return cls(**d)


def fit(source: Any, *, smooth: float = 0.1, practice: bool = True, sweeps: int = 300,
        tol: float = 1e-8) -> FittedModel:
    """Fit the model to a ledger (or Observations); see the module docstring."""
    obs = source if isinstance(source, Observations) else load_observations(source)
    pi, vi, n, k, x = obs.prompt, obs.version, obs.n, obs.k, obs.x
    P, V = len(obs.ids), len(obs.versions)
    use_beta = practice and bool(np.any(x > 0))
    # start: each prompt's pooled empirical logit, no learning
    a = np.log((np.bincount(pi, k, P) + 0.5) / (np.bincount(pi, n - k, P) + 0.5))
    s, c, beta = np.ones(P), np.zeros(V), 0.0
    mu_a, tau_a, tau_s = float(a.mean()), max(float(a.std()), 1.0), 0.5
    lam = 1.0 / smooth**2
    prev, done = -np.inf, 0
    var_a = var_s = np.zeros(P)
    for done in range(1, sweeps + 1):
        # prompts: one Newton step on (a_i, s_i), all prompts at once
        cg = c[vi]
        r, w = _resid(a[pi] + s[pi] * cg + beta * x, n, k)
        ga = np.bincount(pi, r, P) - (a - mu_a) / tau_a**2
        gs = np.bincount(pi, r * cg, P) - (s - 1.0) / tau_s**2
        haa = np.bincount(pi, w, P) + 1 / tau_a**2
        has = np.bincount(pi, w * cg, P)
        hss = np.bincount(pi, w * cg * cg, P) + 1 / tau_s**2
        det = haa * hss - has**2
        a += np.clip((hss * ga - has * gs) / det, -2, 2)
        s += np.clip((haa * gs - has * ga) / det, -2, 2)
        var_a, var_s = hss / det, haa / det
        # competence: one Newton step on c_1..c_{V-1} (c_0 = 0), random-walk prior
        if V > 1:
            sg = s[pi]
            r, w = _resid(a[pi] + sg * c[vi] + beta * x, n, k)
            g = np.bincount(vi, r * sg, V)
            h = np.bincount(vi, w * sg * sg, V)
            d = np.diff(c)
            g[1:] -= lam * d
            g[:-1] += lam * d
            h[1:] += lam
            h[1:-1] += lam
            c[1:] += np.clip(_tridiag(h[1:], -lam, g[1:]), -2, 2)
        # practice weight
        if use_beta:
            r, w = _resid(a[pi] + s[pi] * c[vi] + beta * x, n, k)
            beta += float(np.clip((r @ x - beta) / (w @ (x * x) + 1.0), -1, 1))
        # gauge (mean gain 1) and the priors' mean and spread
        m = float(s.mean())
        if m > 1e-3:
            s, c, var_s = s / m, c * m, var_s / m**2
        mu_a = float(a.mean())
        tau_a = float(np.sqrt(max(np.mean((a - mu_a) ** 2) + var_a.mean(), 0.25)))
        tau_s = float(np.sqrt(max(np.mean((s - 1.0) ** 2) + var_s.mean(), 1e-4)))
        obj = _log_posterior(a, s, c, beta, obs, mu_a, tau_a, tau_s, lam)
        if abs(obj - prev) <= tol * max(abs(obj), 1.0):
            break
        prev = obj
    lr, r2 = _learning_rate(a, s, c, beta, obs)
    vals, counts = np.unique(n, return_counts=True)
    return FittedModel(
        ids=list(obs.ids), ease=a, gain=s, ease_sd=np.sqrt(var_a), gain_sd=np.sqrt(var_s), versions=obs.versions,
        competence=c, practice=float(beta), lr=lr, lr_r2=r2,
        prior={"mu_a": mu_a, "tau_a": tau_a, "mu_s": 1.0, "tau_s": tau_s, "smooth": smooth},
        n=int(vals[np.argmax(counts)]), batch_size=obs.batch_size, groups=len(pi), sweeps=done,
        log_posterior=float(prev if np.isfinite(prev) else obj), pool=list(obs.pool),
    )


def _resid(eta: np.ndarray, n: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-eta))
    return k - n * p, n * p * (1 - p)


def _tridiag(diag: np.ndarray, off: float, rhs: np.ndarray) -> np.ndarray:
    """Solve the symmetric tridiagonal system (diagonal [m], constant off-diagonal) by Thomas' algorithm."""
    m = len(diag)
    cp, dp = np.empty(m), np.empty(m)
    cp[0], dp[0] = off / diag[0], rhs[0] / diag[0]
    for i in range(1, m):
        den = diag[i] - off * cp[i - 1]
        cp[i], dp[i] = off / den, (rhs[i] - off * dp[i - 1]) / den
    out = np.empty(m)
    out[-1] = dp[-1]
    for i in range(m - 2, -1, -1):
        out[i] = dp[i] - cp[i] * out[i + 1]
    return out


def _log_posterior(a, s, c, beta, obs: Observations, mu_a, tau_a, tau_s, lam) -> float:
    eta = a[obs.prompt] + s[obs.prompt] * c[obs.version] + beta * obs.x
    ll = float(np.sum(obs.k * eta - obs.n * np.logaddexp(0.0, eta)))
    prior = (np.sum((a - mu_a) ** 2) / tau_a**2 + np.sum((s - 1) ** 2) / tau_s**2
             + lam * np.sum(np.diff(c) ** 2) + beta**2) / 2
    return ll - float(prior)


def _learning_rate(a, s, c, beta, obs: Observations) -> tuple[float, float]:
    """lr on totals, and the R^2 of the trajectory it predicts (see the module docstring)."""
    if len(c) < 2:
        return 0.0, 0.0
    pi, vi = obs.prompt, obs.version
    p = 1.0 / (1.0 + np.exp(-(a[pi] + s[pi] * c[vi] + beta * obs.x)))
    informative = obs.train & (obs.k > 0) & (obs.k < obs.n)
    sig = np.bincount(vi[informative], (p * (1 - p) * obs.n)[informative], len(c))
    n_mode = float(np.median(obs.n[obs.train])) if obs.train.any() else float(np.median(obs.n))
    cum = np.r_[0.0, np.cumsum(sig[:-1])] / (obs.batch_size * n_mode)  # signal before each version
    if cum[-1] <= 0:
        return 0.0, 0.0
    lr = float((c[-1] - c[0]) / cum[-1])
    pred = c[0] + lr * cum
    ss = float(np.sum((c - c.mean()) ** 2))
    return lr, (1.0 - float(np.sum((c - pred) ** 2)) / ss) if ss > 0 else 0.0


def correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (NaN when undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
