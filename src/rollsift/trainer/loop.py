"""The skeleton both training loops share (``train.train`` and ``async_train.train_async``).

A run is opened (built, restored on ``--resume``, its config written only once its state loaded),
held-out accuracy is measured at step 0, and then every step ends the same way: evaluation when due,
the metrics row, the ledger's step record, the health check, a checkpoint every
``checkpoint_every`` steps and at the last, the fault-injection point, and a stop once
``max_minutes`` of training time are spent. What differs between the loops, how one step's update
is produced, is the ``one_step`` callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import faults
from ..config import RunConfig
from .assembly import Run, build
from .health import Health
from .summary import summarize_run


@dataclass
class StepOutcome:
    """What one step of a loop hands to the skeleton."""

    metrics: dict[str, float]  # the row's metrics so far (update, selection, cost, time, reward)
    before_log: Callable[[], None] | None = None  # runs after evaluation, before the row is written
    checkpoint: dict[str, Any] = field(default_factory=dict)  # keyword arguments of ``Run.save``


@contextmanager
def opened_run(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Iterator[tuple[Run, int]]:
    """The assembled run and the step it starts after (0, or the restored checkpoint's); closed on exit."""
    run = build(cfg, resume=resume, overwrite=overwrite)
    try:
        start = run.restore() if resume else 0
        run.write_config()  # only now: a resume that failed to load left the old config.toml as it was
        yield run, start
    finally:
        run.close()


def run_steps(run: Run, start: int, one_step: Callable[[int], StepOutcome]) -> None:
    """Steps ``start + 1 .. cfg.steps`` (or until ``max_minutes``), each produced by ``one_step``."""
    cfg = run.cfg
    health = Health(cfg)
    if start == 0 and run.eval_prompts:
        health.check(0, run.log.log(0, timed(run.evaluate, 0, "time/eval")))
    for step in range(start + 1, cfg.steps + 1):
        out = one_step(step)
        last, out_of_time = end_step(run, step, out.metrics, health, before_log=out.before_log)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
            run.save(step, **out.checkpoint)
        faults.point("step")
        if out_of_time:
            break


def summarize_attempt(cfg: RunConfig, start: int) -> dict[str, Any]:
    """The run's summary, saying from which step this attempt resumed (None for a fresh start)."""
    summary = summarize_run(cfg.out)
    summary["resumed_from"] = start or None
    return summary


def end_step(run: Run, step: int, metrics: dict[str, float], health: Health,
             before_log: Callable[[], None] | None = None) -> tuple[bool, bool]:
    """Evaluate when due (every ``eval.every`` steps and at the last), log the row, record it in the
    ledger, check the run's health. Returns ``(last, out_of_time)``."""
    cfg = run.cfg
    out_of_time = cfg.max_minutes is not None and run.log.train_wall() >= cfg.max_minutes * 60
    last = step == cfg.steps or out_of_time
    if run.eval_prompts and ((cfg.eval.every and step % cfg.eval.every == 0) or last):
        metrics.update(timed(run.evaluate, step, "time/eval"))
    if before_log is not None:
        before_log()
    row = run.log.log(step, metrics)
    faults.point("metrics")
    run.ledger.record_step(step, row)
    faults.point("ledger.step")
    health.check(step, row)
    return last, out_of_time


def timed(fn: Callable[[int], dict[str, float]], step: int, key: str) -> dict[str, float]:
    """``fn(step)``'s metrics with its wall time under ``key``."""
    t0 = time.perf_counter()
    out = fn(step)
    out[key] = time.perf_counter() - t0
    return out


__all__ = ["StepOutcome", "end_step", "opened_run", "run_steps", "summarize_attempt", "timed"]
