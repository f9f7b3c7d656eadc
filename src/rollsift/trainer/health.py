"""Divergence checks of the reference loop: steps undone for non-finite values, collapsed accuracy.

The learner undoes a step whose loss, gradient or new weights are not finite
(``train/nonfinite_skipped``); ``Health`` warns on each and stops the run after
``learner.max_nonfinite_steps`` of them in a row, before anything non-finite can be checkpointed.
It also warns (once) when held-out or training accuracy collapses, the usual sign of a learning
rate far too high.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from ..errors import UserError


class TrainingDiverged(UserError, RuntimeError):
    """Several consecutive steps had non-finite losses or gradients."""

    exit_code = 3


class Health:
    COLLAPSE = 0.25  # accuracy below this fraction of where it started counts as a collapse
    WINDOW = 5  # training steps averaged for the train-accuracy check

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.in_a_row = 0
        self.eval0: float | None = None
        self.train_acc: list[float] = []
        self.warned: set[str] = set()

    def check(self, step: int, row: Mapping[str, float]) -> None:
        if row.get("train/nonfinite_skipped"):
            self.in_a_row += 1
            lr = self.cfg.learner.lr
            _warn(f"step {step}: non-finite loss or gradient; the step was undone (policy unchanged). "
                  f"learner.lr = {lr:g}")
            if self.in_a_row >= self.cfg.learner.max_nonfinite_steps:
                raise TrainingDiverged(
                    f"{self.in_a_row} consecutive steps (to step {step}) had a non-finite loss or gradient and were "
                    f"undone; the checkpoints hold only finite weights. Lower learner.lr (now {lr:g}) or "
                    f"learner.grad_clip (now {self.cfg.learner.grad_clip:g}; 0 = no clipping), which bounds each "
                    f"update's size, then resume with --resume (both may change on resume) or start over")
        else:
            self.in_a_row = 0
        acc = row.get("eval/accuracy")
        if acc is not None:
            if self.eval0 is None:
                self.eval0 = acc
            elif self.eval0 >= 0.05 and acc < self.COLLAPSE * self.eval0:
                self._once("eval", f"step {step}: held-out accuracy collapsed from {self.eval0:.3f} to {acc:.3f}; "
                                   f"the policy is being destroyed (learner.lr = {self.cfg.learner.lr:g} may be "
                                   f"too high)")
        if row.get("step/accuracy") is not None:
            self.train_acc.append(row["step/accuracy"])
            w = self.WINDOW
            if len(self.train_acc) >= 2 * w:
                first = sum(self.train_acc[:w]) / w
                now = sum(self.train_acc[-w:]) / w
                if first >= 0.05 and now < self.COLLAPSE * first:
                    self._once("train", f"step {step}: training accuracy collapsed from {first:.3f} to {now:.3f} "
                                        f"(means over {w} steps); learner.lr = {self.cfg.learner.lr:g} may be too "
                                        f"high")

    def _once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            _warn(message)


def _warn(message: str) -> None:
    print(f"rollsift: warning: {message}", file=sys.stderr, flush=True)
