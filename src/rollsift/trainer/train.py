"""The reference training loop: GRPO/DAPO on one process, CPU or one GPU.

One step = collect a batch through the pipeline (select, generate, score, record, filter, refill,
replay), update the policy, let the strategies observe (``pipeline.train_step``), log, checkpoint.
Building the pieces and checkpointing live in ``rollsift.run``; the loss in ``rollsift.grpo``; the
learner in ``rollsift.learner``; divergence checks in ``rollsift.health``.

Departures from textbook GRPO (Shao et al. 2024), each a knob in ``RunConfig``:
* token-mean loss aggregation and clip-higher (0.2 / 0.28) as in DAPO; no KL term by default;
* the batch is split into ``learner.minibatches`` optimiser steps (PPO-style), with pi_old taken
  from the behaviour log-probs of fresh rollouts;
* groups sampled by older policies (carried by dynamic sampling, or replayed) use the decoupled
  PPO loss with a capped importance weight (AReaL);
* zero-advantage completions skip the forward/backward pass (same update, less compute);
* a step whose loss, gradient or new weights are not finite is undone and counted; several in a
  row stop the run (``rollsift.health``);
* held-out accuracy is sampled (mean over ``eval.samples`` at ``eval.temperature``), as GRESO
  validates; greedy accuracy is reported beside it. Evaluation time is excluded from
  ``time/train_wall``, the clock that benchmarks compare.
"""

from __future__ import annotations

import time
from functools import partial
from collections.abc import Callable
from typing import Any

from .. import faults
from ..config import RunConfig
from .learner import batch_advantages
from ..pipeline.rollout_pipeline import train_step


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    from .health import Health
    from .assembly import build

    if cfg.async_.enabled:  # generation and training in two processes (rollsift.async_train)
        from .async_train import train_async

        return train_async(cfg, resume=resume, overwrite=overwrite)

    run = build(cfg, resume=resume, overwrite=overwrite)
    try:
        start = run.restore() if resume else 0
        run.write_config()  # only now: a resume that failed to load left the old config.toml as it was
        health = Health(cfg)
        advantages = partial(batch_advantages, scale=cfg.learner.adv_scale)
        if start == 0 and run.eval_prompts:
            health.check(0, run.log.log(0, _timed(run.evaluate, 0, "time/eval")))
        for step in range(start + 1, cfg.steps + 1):
            ctx = run.pipeline.context(step, run.learner.policy_version)
            run.reward_stats.reset()
            _, metrics = train_step(run.pipeline, run.learner, ctx, advantages)
            metrics.update(run.reward_stats.metrics())
            last, out_of_time = end_step(run, step, metrics, health)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
                run.save(step)
            faults.point("step")
            if out_of_time:
                break
    finally:
        run.close()
    from .summary import summarize_run

    return summarize_run(cfg.out)


def end_step(run: Any, step: int, metrics: dict[str, float], health: Any,
             before_log: Callable[[], None] | None = None) -> tuple[bool, bool]:
    """The end of a step, shared by this loop and the asynchronous trainer (``rollsift.async_train``):
    evaluate when due (every ``eval.every`` steps and at the last), log the row, record it in the
    ledger, check the run's health. ``before_log`` runs after evaluation, before the row is written.
    Returns ``(last, out_of_time)``; checkpointing stays with the caller, whose state differs."""
    cfg = run.cfg
    out_of_time = cfg.max_minutes is not None and run.log.train_wall() >= cfg.max_minutes * 60
    last = step == cfg.steps or out_of_time
    if run.eval_prompts and ((cfg.eval.every and step % cfg.eval.every == 0) or last):
        metrics.update(_timed(run.evaluate, step, "time/eval"))
    if before_log is not None:
        before_log()
    row = run.log.log(step, metrics)
    faults.point("metrics")
    run.ledger.record_step(step, row)
    faults.point("ledger.step")
    health.check(step, row)
    return last, out_of_time


def _timed(fn, step: int, key: str) -> dict[str, float]:
    t0 = time.perf_counter()
    out = fn(step)
    out[key] = time.perf_counter() - t0
    return out
