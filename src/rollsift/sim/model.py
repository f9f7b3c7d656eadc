"""A model of prompt-difficulty dynamics, and a generator/learner pair that follows it.

Prompt i's success probability under the policy after t updates is

    p_i(t) = sigmoid(a_i + s_i * c(t) + beta * x_i(t))

* ``a_i`` (ease): the logit of success under the starting policy;
* ``s_i >= 0`` (gain): how much the prompt benefits from what training teaches in general
  (0: a skill training never reaches);
* ``c(t)`` (competence): one scalar for the policy, 0 at the start; after each update it grows by
  ``lr * sum_g p_g (1 - p_g) n_g / (batch_size * n)`` over the batch's informative groups (the
  expected GRPO signal is largest at p = 1/2 and zero for solved or hopeless prompts), so wasted
  rollouts cost time but teach nothing, as in real RLVR (``batch_size * n`` is the batch's
  rollouts, see ``SimLearner``);
* ``x_i(t)`` (practice): what training on prompt i itself taught it, the sum over the updates
  that trained on an informative group of i of that group's reward variance ``k (n - k) /
  (n (n - 1))``; ``beta`` (practice weight, default 0) turns it into memorisation: a small pool
  revisited many times is learnt faster than held-out prompts of the same ease.

Rollouts are Bernoulli(p_i) draws; a completion's text is "1" (correct) or "0". Everything is held
in arrays [P] indexed by ``index[prompt_id]``, so a step over a pool of a million prompts is a few
vectorised operations. The parameters can be fitted from a recorded ledger (``rollsift.sim.fit``);
``docs/simulate.md`` lists what the model leaves out.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..records import Completion, Context, Prompt, RewardResult, SamplingParams


class _ById(Mapping):
    """Read-only ``prompt_id -> float`` view of a parameter array."""

    def __init__(self, index: Mapping[str, int], values: np.ndarray) -> None:
        self._index, self._values = index, values

    def __getitem__(self, prompt_id: str) -> float:
        return float(self._values[self._index[prompt_id]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class DifficultyModel:
    """Per-prompt ease a [P] and gain s [P], practice x [P]; the policy's competence and practice weight.

    Built from two mappings ``prompt_id -> value`` (``DifficultyModel(ease, gain)``) or from arrays
    (``DifficultyModel.from_arrays(ids, ease, gain)``). ``ease`` and ``gain`` read back as mappings.
    """

    def __init__(self, ease: Mapping[str, float], gain: Mapping[str, float], competence: float = 0.0,
                 practice: float = 0.0) -> None:
        ids = list(ease)
        self._init(ids, np.array([ease[i] for i in ids], np.float64), np.array([gain[i] for i in ids], np.float64),
                   competence, practice)

    @classmethod
    def from_arrays(cls, ids: Sequence[str], ease: Any, gain: Any, competence: float = 0.0,
                    practice: float = 0.0) -> "DifficultyModel":
        self = cls.__new__(cls)
        self._init(list(ids), np.asarray(ease, np.float64).copy(), np.asarray(gain, np.float64).copy(),
                   competence, practice)
        return self

    def _init(self, ids: list[str], a: np.ndarray, s: np.ndarray, competence: float, practice: float) -> None:
        if not (len(ids) == len(a) == len(s)):
            raise ValueError(f"DifficultyModel: {len(ids)} ids, {len(a)} ease and {len(s)} gain values")
        self.ids = ids
        self.index = {pid: i for i, pid in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ValueError("DifficultyModel: prompt ids must be distinct")
        self.a, self.s = a, s
        self.x = np.zeros(len(ids))  # practice, grown by the learner
        self.competence = float(competence)
        self.practice = float(practice)  # beta

    @property
    def ease(self) -> Mapping[str, float]:
        return _ById(self.index, self.a)

    @property
    def gain(self) -> Mapping[str, float]:
        return _ById(self.index, self.s)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Array rows [B] of the ids."""
        return np.fromiter(map(self.index.__getitem__, prompt_ids), np.int64, len(prompt_ids))

    def logits(self, rows: np.ndarray | None = None) -> np.ndarray:
        at = slice(None) if rows is None else rows
        z = self.a[at] + self.s[at] * self.competence
        return z + self.practice * self.x[at] if self.practice else z

    def success_rows(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Success probabilities [B] of the rows (every prompt when None)."""
        return 1.0 / (1.0 + np.exp(-self.logits(rows)))

    def success(self, prompt_id: str) -> float:
        i = self.index[prompt_id]
        z = float(self.a[i]) + float(self.s[i]) * self.competence + self.practice * float(self.x[i])
        return 1.0 / (1.0 + math.exp(-z))

    def mean_success(self) -> float:
        """Expected accuracy over the whole pool (one sample per prompt)."""
        return float(self.success_rows().mean())

    def fresh(self) -> "DifficultyModel":
        """The same prompts at the start of training (competence 0, no practice)."""
        return DifficultyModel.from_arrays(self.ids, self.a, self.s, 0.0, self.practice)

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"competence": self.competence}
        if self.practice:
            out["practice"] = self.x.copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.competence = float(state["competence"])
        if "practice" in state:
            self.x = np.array(state["practice"], np.float64)


_META = tuple({"difficulty": k} for k in range(3))  # shared (never mutated): a million dicts is 200 MB


def synthetic_pool(size: int, seed: int = 0, easy: float = 0.3, hard: float = 0.3,
                   prefix: str = "sim", practice: float = 0.0) -> tuple[list[Prompt], DifficultyModel]:
    """A pool whose initial regime has about ``easy`` solved and ``hard`` hopeless prompts.

    Three kinds (``meta["difficulty"]``: 0 easy, 1 hard, 2 mixed; for analysis only):
    easy a ~ N(4.5, 1), s ~ U(0.5, 1.5); hard a ~ N(-4.5, 1), s ~ U(0, 1) (some never move);
    mixed a ~ N(0, 1.3), s ~ U(0.5, 1.5).
    """
    if not (0 <= easy and 0 <= hard and easy + hard <= 1):
        raise ValueError(f"synthetic_pool: need easy, hard >= 0 and easy + hard <= 1, got {easy}, {hard}")
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=size, p=[easy, hard, 1 - easy - hard])
    ease = np.where(kind == 0, rng.normal(4.5, 1.0, size),
                    np.where(kind == 1, rng.normal(-4.5, 1.0, size), rng.normal(0.0, 1.3, size)))
    gain = np.where(kind == 1, rng.uniform(0.0, 1.0, size), rng.uniform(0.5, 1.5, size))
    prompts = [Prompt(id=f"{prefix}/{i}", text=f"q{i}", answer="1", meta=_META[k]) for i, k in enumerate(kind.tolist())]
    return prompts, DifficultyModel.from_arrays([p.id for p in prompts], ease, gain, practice=practice)


def prompts_for(ids: Sequence[str]) -> list[Prompt]:
    """Minimal prompts for ids (a fitted pool: the simulator never reads the text)."""
    return [Prompt(id=pid, text=pid, answer="1") for pid in ids]


def synthetic_embeddings(model: DifficultyModel, dim: int = 16, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Embeddings [P, dim] for DOTS that carry the prompts' ease and gain, blurred.

    Before a fixed random rotation, column 0 is the standardised ease plus N(0, noise^2), column 1
    the standardised gain plus N(0, noise^2), the rest N(0, 1). A linear read-out of the ease then
    correlates with it at about ``1 / sqrt(1 + noise^2)`` (0.89 at 0.5): a stand-in for a real
    encoder, whose embeddings predict success with Pearson 0.7-0.8 (DOTS paper; docs/strategies/dots.md).
    """
    if dim < 2:
        raise ValueError(f"synthetic_embeddings: dim must be >= 2, got {dim}")
    rng = np.random.default_rng([seed, 0x5EED])
    p = len(model)
    z = rng.standard_normal((p, dim)).astype(np.float32)
    for col, v in ((0, model.a), (1, model.s)):
        sd = float(v.std()) or 1.0
        z[:, col] = (v - v.mean()) / sd + noise * z[:, col]
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return z @ q.astype(np.float32)


class SimGenerator:
    """Bernoulli rollouts from a DifficultyModel; ``last_stats`` like the HF backend."""

    def __init__(self, model: DifficultyModel, seed: int = 0, tokens_per_rollout: int = 32) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.tokens = tokens_per_rollout
        self._ids = (1,) * tokens_per_rollout  # shared: completions are frozen
        self._lp = (0.0,) * tokens_per_rollout
        self.last_stats: dict[str, float] = {}

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams,
                 pruner: Any = None, ctx: Context | None = None) -> list[list[Completion]]:
        version = ctx.policy_version if ctx is not None else 0
        p = self.model.success_rows(self.model.rows([q.id for q in prompts]))
        hits = (self.rng.random((len(prompts), n)) < p[:, None]).tolist()  # row i: prompt i's n draws, in order
        ids, lp = self._ids, self._lp
        out = [[Completion(q.id, i, ids, "1" if h else "0", lp, policy_version=version) for i, h in enumerate(row)]
               for q, row in zip(prompts, hits)]
        self.last_stats = {"gen_tokens": self.tokens * n * len(prompts), "rows": n * len(prompts), "pruned_rows": 0}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, **self.model.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.model.load_state_dict(state)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)


_RIGHT = RewardResult(1.0, True, None)
_WRONG = RewardResult(0.0, False, "wrong")


def sim_reward(prompt: Prompt, completion: Completion) -> RewardResult:
    return _RIGHT if completion.text == "1" else _WRONG


def sim_score(prompt: Prompt, completions: Sequence[Completion]) -> list[RewardResult]:
    """The pipeline's ``score_fn`` for simulated rollouts."""
    return [_RIGHT if c.text == "1" else _WRONG for c in completions]


class SimLearner:
    """Raises the model's competence by the expected GRPO signal of each batch, and each trained
    prompt's practice by its group's reward variance (see the module docstring).

    The signal is normalised by the batch's rollouts (a token-mean loss over equal-length
    completions): zero-variance groups dilute it, a short batch or PODS's m-of-n subsets do not.
    ``batch_size`` and ``n`` given: normalised by the nominal ``batch_size * n`` instead (the first
    version's rule, kept for callers that pass them).
    """

    def __init__(self, model: DifficultyModel, lr: float = 0.05, batch_size: int | None = None,
                 n: int | None = None) -> None:
        self.model, self.lr, self.batch_size, self.n = model, lr, batch_size, n
        self.policy_version = 0

    def update(self, batch: Any, ctx: Any = None) -> dict[str, float]:
        model = self.model
        groups = [g for g in batch.groups if not g.is_zero_variance]
        signal = 0.0
        if groups:
            rows = model.rows([g.prompt_id for g in groups])
            p = model.success_rows(rows)
            ns = np.array([g.n for g in groups], np.float64)
            signal = float((p * (1 - p) * ns).sum())
            if model.practice:
                k = np.array([sum(g.correct) for g in groups], np.float64)
                np.add.at(model.x, rows, k * (ns - k) / (ns * (ns - 1)))
        if self.batch_size and self.n:
            rollouts = self.batch_size * self.n
        else:
            rollouts = sum(g.n for g in batch.groups)
        model.competence += self.lr * signal / max(rollouts, 1)
        self.policy_version += 1
        return {"sim/competence": model.competence, "sim/signal": signal}

    def state_dict(self) -> dict[str, Any]:
        return {"policy_version": self.policy_version}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy_version = int(state["policy_version"])

    def metrics(self) -> dict[str, float]:
        return {}


def stable_unit(key: str) -> float:
    """A uniform number in [0, 1) derived from a string (stable across processes)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2**64
