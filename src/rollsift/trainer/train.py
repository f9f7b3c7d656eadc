"""The reference training loop: GRPO/DAPO on one process, CPU or one GPU.

One step = collect a batch through the pipeline (select, generate, score, record, filter, refill,
replay), update the policy, let the strategies observe (``pipeline.train_step``), log, checkpoint.
The skeleton every step shares (evaluation, logging, checkpoints, the time limit) is ``loop.py``;
building the pieces and checkpointing ``assembly.py``; the loss ``grpo.py``; the learner
``learner.py``; divergence checks ``health.py``.

Departures from textbook GRPO (Shao et al. 2024), each a knob in ``RunConfig``:
* token-mean loss aggregation and clip-higher (0.2 / 0.28) as in DAPO; no KL term by default;
* the batch is split into ``learner.minibatches`` optimiser steps (PPO-style), with pi_old taken
  from the behaviour log-probs of fresh rollouts;
* groups sampled by older policies (carried by dynamic sampling, or replayed) use the decoupled
  PPO loss with a capped importance weight (AReaL);
* zero-advantage completions skip the forward/backward pass (same update, less compute);
* a step whose loss, gradient or new weights are not finite is undone and counted; several in a
  row stop the run (``health.py``);
* held-out accuracy is sampled (mean over ``eval.samples`` at ``eval.temperature``), as GRESO
  validates; greedy accuracy is reported beside it. Evaluation time is excluded from
  ``time/train_wall``, the clock that benchmarks compare.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..config import RunConfig
from ..pipeline.rollout_pipeline import train_step
from .learner import batch_advantages
from .loop import StepOutcome, opened_run, run_steps, summarize_attempt


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    if cfg.async_.enabled:  # generation and training in two processes (rollsift.trainer.async_train)
        from .async_train import train_async

        return train_async(cfg, resume=resume, overwrite=overwrite)

    with opened_run(cfg, resume=resume, overwrite=overwrite) as (run, start):
        advantages = partial(batch_advantages, scale=cfg.learner.adv_scale)

        def one_step(step: int) -> StepOutcome:
            ctx = run.pipeline.context(step, run.learner.policy_version)
            run.reward_stats.reset()
            _, metrics = train_step(run.pipeline, run.learner, ctx, advantages)
            metrics.update(run.reward_stats.metrics())
            return StepOutcome(metrics)

        run_steps(run, start, one_step)
    return summarize_attempt(cfg, start)


__all__ = ["train"]
