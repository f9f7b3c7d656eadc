"""What the pipeline counts during one step, drained into the step's metrics row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..records import Group

COUNTERS = ("cost/rollouts", "cost/gen_tokens", "cost/pruned_rollouts", "cost/informative_rollouts",
            "cost/prompts", "cost/probe_rollouts", "time/generate", "time/score", "time/ledger", "time/filter")


@dataclass
class StepCounters:
    """Counters since the last ``drain()``: costs and times (``cost/*``, ``time/*``; the ``COUNTERS``
    always appear, others when set), filter metrics averaged over the groups each filter call saw,
    and the training groups recorded (for ``step/zero_variance_frac`` and ``step/accuracy``)."""

    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    filter_sums: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (weighted sum, weight)
    groups: int = 0
    zero_variance_groups: int = 0
    accuracy_sum: float = 0.0

    def add(self, key: str, value: float) -> None:
        self.values[key] = self.values.get(key, 0.0) + float(value)

    def set(self, key: str, value: float) -> None:
        self.values[key] = float(value)

    def count_training_groups(self, groups: Sequence[Group]) -> None:
        self.groups += len(groups)
        self.zero_variance_groups += sum(g.is_zero_variance for g in groups)
        self.accuracy_sum += sum(g.accuracy for g in groups)

    def add_filter_metrics(self, metrics: Mapping[str, float], weight: int) -> None:
        for k, v in metrics.items():
            total, w = self.filter_sums.get(k, (0.0, 0.0))
            self.filter_sums[k] = (total + float(v) * weight, w + weight)

    def drain(self) -> dict[str, float]:
        """The step's figures; the counters start again from zero."""
        out = dict(self.values)
        out.update({k: total / w for k, (total, w) in self.filter_sums.items() if w})
        if self.groups:
            out["step/zero_variance_frac"] = self.zero_variance_groups / self.groups
            out["step/accuracy"] = self.accuracy_sum / self.groups
        self.values, self.filter_sums = dict.fromkeys(COUNTERS, 0.0), {}
        self.groups, self.zero_variance_groups, self.accuracy_sum = 0, 0, 0.0
        return out


__all__ = ["COUNTERS", "StepCounters"]
