"""A model of prompt-difficulty dynamics, and a generator/learner pair that follows it.

Each prompt i has a latent logit ``a_i`` (its ease for the initial policy); the policy has a
scalar competence ``c`` that grows with every update in proportion to the useful signal it was
given. A prompt's success probability is ``sigmoid(a_i + s_i * c)``, where ``s_i >= 0`` is how
much the prompt benefits from what training teaches (0: a skill the training never reaches).
Rollouts are Bernoulli draws; a completion's text is "1" (correct) or "0".

Learning: an update on groups with non-zero variance raises ``c`` by
``lr * sum_g p_g (1 - p_g) * n_g / (batch_size * n)`` (the expected GRPO signal is largest at
p = 1/2 and zero for solved or hopeless prompts), so wasted rollouts cost time but teach
nothing, as in real RLVR. The parameters can be fitted from a recorded ledger
(``rollsift.sim.fit``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..protocols import SamplingParams
from ..records import Completion, Context, Prompt, RewardResult


@dataclass
class DifficultyModel:
    """Per-prompt parameters: ``ease`` a_i and ``gain`` s_i, looked up by prompt id."""

    ease: dict[str, float]
    gain: dict[str, float]
    competence: float = 0.0

    def success(self, prompt_id: str) -> float:
        z = self.ease[prompt_id] + self.gain[prompt_id] * self.competence
        return 1.0 / (1.0 + math.exp(-z))


def synthetic_pool(size: int, seed: int = 0, easy: float = 0.3, hard: float = 0.3,
                   prefix: str = "sim") -> tuple[list[Prompt], DifficultyModel]:
    """A pool whose initial regime has about ``easy`` solved and ``hard`` hopeless prompts."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=size, p=[easy, hard, 1 - easy - hard])
    ease = np.where(kind == 0, rng.normal(4.5, 1.0, size),
                    np.where(kind == 1, rng.normal(-4.5, 1.0, size), rng.normal(0.0, 1.3, size)))
    gain = np.where(kind == 1, rng.uniform(0.0, 1.0, size), rng.uniform(0.5, 1.5, size))
    prompts = [Prompt(id=f"{prefix}/{i}", text=f"q{i}", answer="1", meta={"difficulty": int(kind[i])})
               for i in range(size)]
    model = DifficultyModel({p.id: float(e) for p, e in zip(prompts, ease)},
                            {p.id: float(g) for p, g in zip(prompts, gain)})
    return prompts, model


class SimGenerator:
    """Bernoulli rollouts from a DifficultyModel; ``last_stats`` like the HF backend."""

    def __init__(self, model: DifficultyModel, seed: int = 0, tokens_per_rollout: int = 32) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.tokens = tokens_per_rollout
        self.last_stats: dict[str, float] = {}

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams,
                 pruner: Any = None, ctx: Context | None = None) -> list[list[Completion]]:
        version = ctx.policy_version if ctx is not None else 0
        out = []
        for p in prompts:
            hits = self.rng.random(n) < self.model.success(p.id)
            out.append([Completion(p.id, i, (1,) * self.tokens, "1" if h else "0", (0.0,) * self.tokens,
                                   policy_version=version) for i, h in enumerate(hits)])
        self.last_stats = {"gen_tokens": self.tokens * n * len(prompts), "rows": n * len(prompts), "pruned_rows": 0}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "competence": self.model.competence}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.model.competence = float(state["competence"])

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)


def sim_reward(prompt: Prompt, completion: Completion) -> RewardResult:
    ok = completion.text == "1"
    return RewardResult(1.0 if ok else 0.0, ok, None if ok else "wrong")


class SimLearner:
    """Raises the model's competence by the expected GRPO signal of each batch."""

    def __init__(self, model: DifficultyModel, lr: float = 0.05, batch_size: int = 32, n: int = 8) -> None:
        self.model, self.lr, self.batch_size, self.n = model, lr, batch_size, n
        self.policy_version = 0

    def update(self, batch: Any, ctx: Any = None) -> dict[str, float]:
        signal = 0.0
        for g in batch.groups:
            if not g.is_zero_variance:
                p = self.model.success(g.prompt_id)
                signal += p * (1 - p) * g.n
        step = self.lr * signal / (self.batch_size * self.n)
        self.model.competence += step
        self.policy_version += 1
        return {"sim/competence": self.model.competence, "sim/signal": signal}

    def state_dict(self) -> dict[str, Any]:
        return {"policy_version": self.policy_version}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy_version = int(state["policy_version"])

    def metrics(self) -> dict[str, float]:
        return {}


def stable_unit(key: str) -> float:
    """A uniform number in [0, 1) derived from a string (stable across processes)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2**64
