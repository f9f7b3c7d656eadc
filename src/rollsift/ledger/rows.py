"""The ledger's row types: what a history query returns (``groups``, ``decisions``, ``filters``,
``steps``, ``uses``), the columns each event table stores, and the rule (``cutoffs``) that decides
which events a rollback left live."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

GROUP_COLUMNS = ("attempt", "step", "round", "epoch", "prompt_id", "purpose", "n", "n_correct", "accuracy",
                 "mean", "std", "policy_version", "pruned", "rewards", "correct", "lengths")
SELECTION_COLUMNS = ("attempt", "step", "round", "epoch", "prompt_id", "kept", "reason", "prob")
FILTER_COLUMNS = ("attempt", "step", "round", "name", "prompt_id", "kept", "reason", "n")
STEP_COLUMNS = ("attempt", "step", "metrics")
USE_COLUMNS = ("attempt", "step", "prompt_id", "group_step", "group_round", "group_version", "trainer_version",
               "replayed")
COLUMNS = {"groups": GROUP_COLUMNS, "selections": SELECTION_COLUMNS, "filters": FILTER_COLUMNS,
           "steps": STEP_COLUMNS, "uses": USE_COLUMNS}
_LIGHT = GROUP_COLUMNS[:13]  # group columns without the per-completion blobs


class GroupRow(NamedTuple):
    """One generated group. ``rewards`` [n], ``correct`` [n], ``lengths`` [n] (completion tokens) are
    filled only by ``groups(detail=True)``; ``live`` is False for events hidden by a rollback."""

    step: int
    round: int
    epoch: int
    prompt_id: str
    purpose: str
    n: int
    n_correct: int
    accuracy: float
    mean: float
    std: float
    policy_version: int
    pruned: int
    attempt: int
    live: bool = True
    rewards: tuple[float, ...] | None = None
    correct: tuple[bool, ...] | None = None
    lengths: tuple[int, ...] | None = None


class UseRow(NamedTuple):
    """A group trained on at ``step``: the group's own step, round and policy version, the trainer's
    policy version when it used it (their difference is the group's staleness), and whether it came
    from the replay buffer."""

    step: int
    prompt_id: str
    group_step: int
    group_round: int
    group_version: int
    trainer_version: int
    replayed: bool
    attempt: int
    live: bool = True

    @property
    def kind(self) -> str:
        """``fresh`` (generated for the step that used it), ``carried`` (generated for an earlier step,
        kept by dynamic sampling or generated ahead by an asynchronous rollout process) or ``replayed``."""
        return "replayed" if self.replayed else "fresh" if self.group_step == self.step else "carried"

    @property
    def staleness(self) -> int:
        """Policy versions the group was behind the trainer that used it."""
        return self.trainer_version - self.group_version


class DecisionRow(NamedTuple):
    step: int
    round: int
    epoch: int
    prompt_id: str
    kept: bool
    reason: str
    prob: float
    attempt: int
    live: bool = True


class FilterRow(NamedTuple):
    """``n`` is the number of completions the filter kept (PODS keeps fewer than generated); 0 if dropped."""

    step: int
    round: int
    name: str
    prompt_id: str
    kept: bool
    reason: str | None
    n: int
    attempt: int
    live: bool = True


class StepRow(NamedTuple):
    step: int
    metrics: dict[str, Any]
    attempt: int
    live: bool = True


def cutoffs(attempts: Sequence[tuple[int, int | None]]) -> dict[int, float]:
    """attempt -> last live step of the events it wrote, from (attempt, after_step) markers.

    ``after_step`` is the step of the rollback that started the attempt (None for attempt 0). An
    attempt's events stay live up to the smallest ``after_step`` of any later attempt.
    """
    out: dict[int, float] = {}
    low = math.inf
    for attempt, after in sorted(attempts, reverse=True):
        out[attempt] = low
        if after is not None:
            low = min(low, after)
    return out
