"""The reference training loop: GRPO/DAPO on one process, CPU or one GPU.

One step = collect a batch through the pipeline (select, generate, score, record, filter, refill,
replay), update the policy, let the strategies observe, log, checkpoint. Building the pieces and
checkpointing live in ``rollsift.run``; the loss in ``rollsift.grpo``; the learner in
``rollsift.learner``.

Departures from textbook GRPO (Shao et al. 2024), each a knob in ``RunConfig``:
* token-mean loss aggregation and clip-higher (0.2 / 0.28) as in DAPO; no KL term by default;
* the batch is split into ``learner.minibatches`` optimiser steps (PPO-style), with pi_old taken
  from the behaviour log-probs of fresh rollouts;
* groups sampled by older policies (carried by dynamic sampling, or replayed) use the decoupled
  PPO loss with a capped importance weight (AReaL);
* zero-advantage completions skip the forward/backward pass (same update, less compute);
* held-out accuracy is sampled (mean over ``eval.samples`` at ``eval.temperature``), as GRESO
  validates; greedy accuracy is reported beside it. Evaluation time is excluded from
  ``time/train_wall``, the clock that benchmarks compare.
"""

from __future__ import annotations

import time
from typing import Any

from .config import RunConfig
from .learner import batch_advantages
from .records import Context, TrainBatch


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    from .run import build

    run = build(cfg, resume=resume, overwrite=overwrite)
    start = run.restore() if resume else 0
    log, e = run.log, cfg.eval
    if start == 0 and run.eval_prompts:
        log.log(0, _timed(run.evaluate, 0, "time/eval"))
    try:
        for step in range(start + 1, cfg.steps + 1):
            ctx = Context(step=step, epoch=run.pipeline.stream.epoch, policy_version=run.learner.policy_version, n=cfg.n)
            run.reward_stats.reset()
            collected = run.pipeline.collect(ctx)
            batch = TrainBatch(
                groups=tuple(collected.groups),
                advantages=batch_advantages(collected.groups, cfg.learner.adv_scale),
                replayed=tuple(collected.off_policy),
            )
            t0 = time.perf_counter()
            metrics = run.learner.update(batch, ctx)
            metrics["time/train"] = time.perf_counter() - t0
            metrics.update(run.pipeline.observe(collected, ctx))
            metrics.update(collected.metrics)
            metrics.update(run.reward_stats.metrics())
            out_of_time = cfg.max_minutes is not None and log.train_wall() >= cfg.max_minutes * 60
            last = step == cfg.steps or out_of_time
            if run.eval_prompts and ((e.every and step % e.every == 0) or last):
                metrics.update(_timed(run.evaluate, step, "time/eval"))
            row = log.log(step, metrics)
            run.ledger.record_step(step, row)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
                run.save(step)
            if out_of_time:
                break
    finally:
        log.close()
    from .summary import summarize_run

    return summarize_run(cfg.out)


def _timed(fn, step: int, key: str) -> dict[str, float]:
    t0 = time.perf_counter()
    out = fn(step)
    out[key] = time.perf_counter() - t0
    return out
