"""Frozen records passed between rollsift components.

Nothing here imports torch: records are shared by the reference trainer (where token ids and
log-probs are 1-D torch tensors), the simulator (plain tuples) and the TRL/verl adapters.
Shapes are written next to the fields; ``T`` is a completion's own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .configlib import doc

# Completion.status values.
STOP = "stop"  # ended with EOS
LENGTH = "length"  # hit max_new_tokens
PRUNED = "pruned"  # stopped by a RolloutPruner mid-flight
STATUSES = (STOP, LENGTH, PRUNED)

# Why a group was generated (Context.purpose, the ledger's group events).
PURPOSES = ("train", "probe", "eval")


@dataclass(frozen=True)
class Prompt:
    """One training or evaluation prompt.

    ``id`` is stable across runs and processes (given by the data, or a content hash); the ledger
    keys everything on it. ``meta`` carries data-source fields and, for the testbed, a
    ``difficulty`` label that is for analysis only: no strategy may read it.
    """

    id: str
    answer: str
    text: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError(
                f"Prompt {self.id!r}: give exactly one of text= or messages= "
                f"(got text={self.text!r}, messages={self.messages!r})"
            )

    def as_messages(self) -> list[dict[str, str]]:
        """Chat messages for a chat template (plain text becomes one user turn)."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.text or ""}]


@dataclass(frozen=True)
class Completion:
    """One sampled completion of a prompt.

    ``token_ids`` [T] and ``logprobs`` [T] are 1-D tensors in the Hugging Face backend and plain
    sequences elsewhere; ``logprobs`` are the behaviour policy's log-probabilities of the sampled
    tokens (temperature applied, before top-p truncation), needed by off-policy corrections.
    """

    prompt_id: str
    index: int
    token_ids: Any
    text: str
    logprobs: Any = None
    status: str = STOP
    policy_version: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class RewardResult:
    """Score of one completion: a (possibly shaped) reward and the binary correctness behind it.

    Filters and selectors look at ``correct`` (DAPO filters on accuracy, not on a shaped score);
    the learner uses ``reward``. ``reason`` names why a completion got no credit
    ("no_answer", "timeout", "parse_error", "wrong", ...), or is None when correct.
    """

    reward: float
    correct: bool
    reason: str | None = None


@dataclass(frozen=True)
class Group:
    """A prompt with its ``n`` completions and their scores, as generated in one round.

    ``step`` is the training step whose generation produced it, ``round`` the generation round
    within that step, ``policy_version`` the number of optimiser updates behind the sampling policy.
    """

    prompt: Prompt
    completions: tuple[Completion, ...]
    rewards: tuple[float, ...]
    correct: tuple[bool, ...]
    step: int = 0
    round: int = 0
    policy_version: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if not (len(self.completions) == len(self.rewards) == len(self.correct)):
            raise ValueError(
                f"Group {self.prompt.id!r}: {len(self.completions)} completions but "
                f"{len(self.rewards)} rewards and {len(self.correct)} correctness flags"
            )

    @property
    def prompt_id(self) -> str:
        return self.prompt.id

    @property
    def n(self) -> int:
        return len(self.completions)

    @property
    def mean(self) -> float:
        """Mean reward."""
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the rewards."""
        if not self.rewards:
            return 0.0
        m = self.mean
        return math.sqrt(sum((r - m) ** 2 for r in self.rewards) / len(self.rewards))

    @property
    def accuracy(self) -> float:
        """Fraction of correct completions."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    @property
    def is_zero_variance(self) -> bool:
        """True when every completion is correct or every one is wrong (no GRPO signal)."""
        return all(self.correct) or not any(self.correct)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.completions)

    def subset(self, indices: Sequence[int]) -> "Group":
        """The same group restricted to the given completion indices (order kept)."""
        idx = list(indices)
        return replace(
            self,
            completions=tuple(self.completions[i] for i in idx),
            rewards=tuple(self.rewards[i] for i in idx),
            correct=tuple(self.correct[i] for i in idx),
        )


@dataclass(frozen=True)
class Decision:
    """A selector's verdict on one candidate prompt.

    ``prob`` is the probability with which the prompt was kept (1.0 for deterministic keeps).
    ``reason`` is a short tag such as "no_history", "explore", "easy", "hard", "target".
    """

    prompt_id: str
    kept: bool
    reason: str
    prob: float = 1.0


@dataclass(frozen=True)
class Selection:
    """What a selector chose from the candidates it examined.

    Candidates not named in ``decisions`` were not examined and go back to the stream.
    """

    chosen: tuple[Prompt, ...]
    decisions: tuple[Decision, ...]

    @property
    def skipped(self) -> dict[str, Decision]:
        return {d.prompt_id: d for d in self.decisions if not d.kept}


@dataclass(frozen=True)
class Candidate:
    """A prompt offered to a selector, with the pass over the pool (``epoch``) it belongs to.

    ``ref`` is the engine's handle on the prompt's row (verl: its place in a dataloader chunk);
    the prompt walk carries it through untouched.
    """

    prompt: Prompt
    epoch: int
    ref: Any = None


@dataclass(frozen=True)
class FilterResult:
    """Groups a filter kept (possibly edited, e.g. down-sampled by PODS) and why others went."""

    kept: tuple[Group, ...]
    dropped: Mapping[str, str]
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainBatch:
    """What the learner trains on in one step.

    ``advantages[i]`` [n_i] belongs to ``groups[i]``; ``replayed[i]`` marks groups that come from
    the replay buffer (their completions were sampled by an older policy).
    """

    groups: tuple[Group, ...]
    advantages: tuple[tuple[float, ...], ...]
    replayed: tuple[bool, ...]

    @property
    def num_completions(self) -> int:
        return sum(g.n for g in self.groups)


@dataclass(frozen=True)
class PromptStats:
    """A prompt's history summary, as derived by the ledger from its group events.

    ``trailing_all_correct`` / ``trailing_all_wrong`` count the consecutive most recent groups that
    were all correct / all wrong (what GRESO's rule reads). ``last_accuracy`` is None when the
    prompt was never rolled out.
    """

    prompt_id: str
    rollouts: int = 0
    skips: int = 0
    last_accuracy: float | None = None
    last_step: int = -1
    last_epoch: int = -1
    trailing_all_correct: int = 0
    trailing_all_wrong: int = 0
    ever_informative: bool = False


@dataclass(frozen=True)
class Context:
    """Where the loop stands, handed to every strategy call.

    ``purpose`` says why the groups of the call are generated: "train" (the step's batch), "probe"
    (a probing selector's reference prompts, never trained on) or "eval". ``n`` is the group size
    when the caller knows it; strategies that need it (the quality-head pruner) reject None
    instead of assuming a size. ``epoch`` is the pass over the pool the call belongs to.
    """

    step: int
    epoch: int = 0
    round: int = 0
    policy_version: int = 0
    n: int | None = None
    purpose: str = "train"

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"Context.purpose must be one of {PURPOSES}, got {self.purpose!r}")



def zero_variance_share(groups: Sequence[Group]) -> float:
    """The share of ``groups`` whose completions are all correct or all wrong (0.0 for none): the one
    definition behind ``step/zero_variance_frac``, ``batch/zero_variance_frac``, the refill's sizing
    rate and the adapters' figures."""
    groups = list(groups)
    return sum(g.is_zero_variance for g in groups) / len(groups) if groups else 0.0


# ---------------------------------------------------------------------- plain records the protocols pass
@dataclass(frozen=True)
class PromptArrays:
    """Vectorised ``PromptStats`` for many prompts at once (all arrays [P], numpy).

    ``last_accuracy`` is NaN for prompts never rolled out.
    """

    rollouts: Any
    skips: Any
    last_accuracy: Any
    last_step: Any
    trailing_all_correct: Any
    trailing_all_wrong: Any


@dataclass
class PartialBatch:
    """What a pruner sees of the rollouts in flight, every ``poll_every`` tokens.

    Rows are completions; ``group_of[r]`` is the prompt group of row r (index into the prompts).
    ``token_ids`` [R, t] holds the tokens generated so far (right-padded), ``active`` [R] marks rows
    still generating, ``hidden`` [R, H] is the policy's last-layer hidden state at each row's last
    generated token (present when the pruner asked for hidden states).
    """

    step_tokens: int
    group_of: Any
    token_ids: Any
    lengths: Any
    active: Any
    hidden: Any = None


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled: the run config's ``[sampling]`` table and what generators receive."""

    temperature: float = doc("Sampling temperature for training rollouts (1.0 = the policy as is; 0 = greedy).", 1.0)
    top_p: float = doc("Nucleus sampling mass kept; 1.0 disables top-p.", 1.0)
    max_new_tokens: int = doc("Length limit of a completion, in tokens.", 64)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
