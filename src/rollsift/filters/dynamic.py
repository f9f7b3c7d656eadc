"""DAPO dynamic sampling: drop groups whose correctness has zero variance, refill, carry the surplus.

The filter itself is one line (keep a group unless all its completions are right or all wrong,
judged on correctness, not on a shaped reward: a format bonus would let all-wrong groups pass).
The refill loop lives in the pipeline; this filter is also its refill policy
(``protocols.RefillPolicy``, offered as ``refill``), whose knobs are:

* generation rounds continue until ``batch_size`` informative groups are collected, at most
  ``max_rounds`` per training step; at the cap the step trains on what it has (``at_cap="train"``)
  or stops the run with an error naming the knob (``at_cap="error"``, DAPO's behaviour);
* surplus informative groups are carried to the next step (``carry_over``) unless older than
  ``max_staleness`` steps; DAPO/verl discard them (verl issue #3475);
* the size of the next round follows GRESO's rule,
  ``missing / (1 - zero_variance_rate) * overshoot`` prompts, clamped to
  ``[min_round, max_round_factor * batch_size]`` (GRESO: ``* 1.25``, clamp ``[64, 384]`` at a
  train batch of 256).

Training steps and generation rounds are counted separately (``cost/rounds``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from ..configlib import ConfigError, check_positive, doc
from ..records import Context, FilterResult, Group


@dataclass
class DynamicSamplingConfig:
    type: str = doc("Filter name in the registry.", "dynamic")
    max_rounds: int = doc("Cap on generation rounds per training step (DAPO's max_num_gen_batches).", 6)
    at_cap: Literal["train", "error"] = doc(
        "At the round cap: train on the informative groups collected so far, or stop with an error.", "train"
    )
    carry_over: bool = doc("Keep surplus informative groups for the next step instead of discarding them.", True)
    max_staleness: int = doc("Carried groups older than this many steps are dropped.", 1)
    round_size: Literal["greso", "fixed"] = doc(
        "'greso': size each round from the observed zero-variance rate; 'fixed': every round is batch_size prompts.",
        "greso",
    )
    overshoot: float = doc("GRESO's safety factor on the estimated round size.", 1.25)
    min_round: int = doc("Smallest round, in prompts (GRESO: 64 at a train batch of 256).", 8)
    max_round_factor: float = doc("Largest round, in multiples of batch_size (GRESO: 384/256 = 1.5).", 3.0)

    strategy = "rollsift.filters.dynamic:DynamicSamplingFilter"

    def __post_init__(self) -> None:
        check_positive("dynamic.max_rounds", self.max_rounds)
        check_positive("dynamic.max_staleness", self.max_staleness, allow_zero=True)
        check_positive("dynamic.min_round", self.min_round)
        if self.overshoot < 1.0:
            raise ConfigError(f"dynamic.overshoot must be >= 1.0, got {self.overshoot}")
        if self.max_round_factor <= 0:
            raise ConfigError(f"dynamic.max_round_factor must be > 0, got {self.max_round_factor}")


def zero_variance_reason(group: Group) -> str | None:
    if all(group.correct):
        return "all_correct"
    if not any(group.correct):
        return "all_wrong"
    return None


class DynamicSamplingFilter:
    """Keeps groups with at least one correct and one wrong completion; refills the batch (``refill``)."""

    name = "dynamic"

    def __init__(self, cfg: DynamicSamplingConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or DynamicSamplingConfig()
        self.max_rounds, self.at_cap = self.cfg.max_rounds, self.cfg.at_cap
        self.carry_over, self.max_staleness = self.cfg.carry_over, self.cfg.max_staleness
        self._last: dict[str, float] = {}

    @property
    def refill(self) -> "DynamicSamplingFilter":
        """The refill policy this filter brings to the pipeline: itself (DAPO's loop with GRESO's sizing)."""
        return self

    def apply(self, groups: Sequence[Group], ctx: Context) -> FilterResult:
        kept, dropped = [], {}
        for g in groups:
            reason = zero_variance_reason(g)
            if reason is None:
                kept.append(g)
            else:
                dropped[g.prompt_id] = reason
        total = max(len(groups), 1)
        reasons = list(dropped.values())
        self._last = {
            "filter/dynamic/zero_variance_frac": len(dropped) / total,
            "filter/dynamic/all_correct_frac": reasons.count("all_correct") / total,
            "filter/dynamic/all_wrong_frac": reasons.count("all_wrong") / total,
        }
        return FilterResult(kept=tuple(kept), dropped=dropped, metrics=dict(self._last))

    def next_round_size(self, missing: int, zero_variance_rate: float, batch_size: int) -> int:
        """Prompts to roll out next to collect ``missing`` informative groups (GRESO's estimate)."""
        cfg = self.cfg
        cap = max(cfg.min_round, int(cfg.max_round_factor * batch_size))
        if cfg.round_size == "fixed":
            return batch_size
        informative = max(1.0 - zero_variance_rate, 1.0 / cap)  # all-zero-variance -> largest round
        return int(min(max(math.ceil(missing / informative * cfg.overshoot), cfg.min_round), cap))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
