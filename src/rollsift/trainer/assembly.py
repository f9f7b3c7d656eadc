"""Builds a run from its config: data, model, reward, pipeline, learner, ledger, log, run directory.

The loops (``train.py`` and ``async_train.py``, through ``loop.py``) only call what is assembled here;
checkpoint saving and restoring also live here so the loops stay short. The rollout side
(``assemble_rollouts``: policy, generator, reward, pipeline) is one function, used here and by the
asynchronous trainer's rollout process. The order is chosen so that nothing is lost and
nothing slow happens before a mistake is caught: the run directory is locked, a resume's config is
checked against the saved one and the data is read before the model is loaded; ``config.toml`` is
written only once the run's state has loaded.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from ..config import RunConfig
from ..configlib import ConfigError, dumps_toml, to_dict
from ..pipeline.rollout_pipeline import RolloutPipeline, seed_of
from .policy import check_model, load_model, resolve_device
from ..records import Prompt
from ..rundir import RunDir, RunDirError
from ..metrics_file import RunLog

# Keys a resumed run may change: they steer the loop, logging and evaluation, not the state it
# restores (evaluation draws from its own seeds and restores the sampler's state afterwards). The
# step size may change too (lowering learner.lr is how a diverged run is recovered); the run then
# no longer equals an uninterrupted one, which the resume says.
RESUME_SAFE = ("steps", "max_minutes", "out", "device", "threads", "checkpoint_every", "checkpoint_keep", "log.", "eval.",
               "reward.",
               "data.eval", "data.eval_size")
RESUME_TUNABLE = ("learner.lr", "learner.warmup_steps", "learner.grad_clip", "learner.max_nonfinite_steps",
                  "learner.undo_nonfinite", "learner.old_logprobs", "async.enabled", "async.max_staleness",
                  "async.timeout_s")


def load_data(cfg: RunConfig) -> tuple[list[Prompt], list[Prompt]]:
    d = cfg.data

    from ..data import check_batch_fill, load_prompts

    def read(source: str, split: str, size: int | None) -> list[Prompt]:
        if source == "none":
            return []
        if source == "testbed":
            from ..testbed.problems import prompts

            out = prompts(split)
        else:  # an empty or all-skipped file is an error naming it, before any model loads
            res = load_prompts(source, style=d.style, on_error=d.on_error, nonempty=True)
            out = res.prompts[:size] if size else res.prompts
            if split == "train":  # rows skipped as bad may leave fewer prompts than a batch: say so
                check_batch_fill(res, cfg.batch_size, source, "data.train", used=len(out))
            return out
        return out[:size] if size else out

    train = read(d.train, "train", d.train_size)
    if not train:
        raise ConfigError(f"data.train = {d.train!r} gave no prompts")
    return train, read(d.eval, "eval", d.eval_size)


def check_resume_config(saved: dict | None, cfg: RunConfig) -> None:
    """Refuse a resume whose config changes what the saved state depends on, naming the keys."""
    if saved is None:
        return
    from ..configlib import loads_toml

    try:  # read back as a RunConfig: keys a later rollsift added take their defaults
        saved = loads_toml(dumps_toml(to_dict(RunConfig.from_data(saved))))
    except ConfigError:
        pass  # compare as written; the differences will be named
    now = loads_toml(dumps_toml(to_dict(cfg)))
    before, after = _flat(saved), _flat(now)
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    tuned = [k for k in diff if k in RESUME_TUNABLE]
    changed = [k for k in diff if not k.startswith(RESUME_SAFE) and k not in RESUME_TUNABLE]
    swapped = [k[: -len("type")] for k in changed if k.endswith(".type")]  # a new strategy: its knobs follow
    changed = [k for k in changed if k.endswith(".type") or not k.startswith(tuple(swapped))]
    if tuned and not changed:
        print("rollsift: resuming with " + ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in tuned)
              + "; the run no longer equals an uninterrupted one", file=sys.stderr)
    if changed:
        show = ", ".join(f"{k}: {_flat(saved).get(k)!r} -> {_flat(now).get(k)!r}" for k in changed[:6])
        raise ConfigError(f"--resume with a changed config: {show}. The saved state depends on these keys; resume "
                          f"with the run's own config ({cfg.out}/config.toml), or start a new run. Keys that may "
                          f"change on resume: steps, max_minutes, checkpoint_every, threads, device, log.*, eval.*, "
                          f"and (with a notice) {', '.join(RESUME_TUNABLE)}")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


@dataclass
class Run:
    cfg: RunConfig
    rundir: RunDir
    lock: Any
    model: Any
    tokenizer: Any
    generator: Any
    learner: Any
    pipeline: RolloutPipeline
    ledger: Any
    reward: Any
    reward_stats: Any
    eval_prompts: list[Prompt]
    log: RunLog
    restored_state: Any = None  # the checkpoint state restore() loaded (None for a fresh start)

    def evaluate(self, step: int) -> dict[str, float]:
        from .evaluation import evaluate

        e = self.cfg.eval
        return evaluate(
            self.generator, self.eval_prompts, lambda p, cs: self.reward.score([(p, c) for c in cs]),
            samples=e.samples, temperature=e.temperature, max_new_tokens=self.cfg.sampling.max_new_tokens,
            greedy=e.greedy, seed=self.cfg.seed * 1_000_003 + step,
        )

    def save(self, step: int, pipeline_state: Any = None, generator_state: Any = None,
             extra: dict | None = None) -> Path:
        """Checkpoint the run; the asynchronous trainer passes the rollout process's states instead of
        the local pipeline's and generator's (``extra``: more entries of the state)."""
        state = {
            "learner": self.learner.state_dict(),
            "pipeline": self.pipeline.state_dict() if pipeline_state is None else pipeline_state,
            "generator": self.generator.state_dict() if generator_state is None else generator_state,
            "log": self.log.state_dict(),
            **(extra or {}),
        }
        self.ledger.sync()  # every event of the checkpointed steps is durable before the state that counts on them
        return checkpoint.save(self.cfg.out, step, self.model, self.tokenizer, state, keep=self.cfg.checkpoint_keep)

    def restore(self) -> int:
        """Load the newest intact checkpoint (falling back past damaged ones) and roll the ledger and
        metrics back to its step; with none, roll them back to nothing. Returns the step."""
        step = 0
        for path in checkpoint.candidates(self.cfg.out):
            try:
                state = checkpoint.load(path, self.model)
            except checkpoint.CheckpointError as e:
                print(f"rollsift: {e}; trying an earlier checkpoint", file=sys.stderr)
                continue
            self.learner.load_state_dict(state["learner"])
            self.pipeline.load_state_dict(state["pipeline"])
            self.generator.load_state_dict(state["generator"])
            checkpoint.set_rng_state(state["rng"])
            self.restored_state = state
            step = int(state["step"])
            checkpoint.discard_after(self.cfg.out, step)
            print(f"rollsift: resuming from step {step} ({path.name}); steps {step + 1}-{self.cfg.steps} to go",
                  file=sys.stderr)
            break
        else:
            if checkpoint.candidates(self.cfg.out) or (self.rundir.checkpoints / checkpoint.LATEST).exists() \
                    or self.rundir.metrics_path.exists():
                print(f"rollsift: no intact checkpoint in {self.rundir.checkpoints}; resuming from the start "
                      f"(the ledger and metrics are rolled back to step 0)", file=sys.stderr)
            state = None
        self.log.close()
        self.log = RunLog(self.cfg.out, progress=self.cfg.log.progress, tensorboard=self.cfg.log.tensorboard,
                          total_steps=self.cfg.steps, resume_step=step)
        if state is not None:
            self.log.load_state_dict(state["log"])
        self.ledger.rollback(after_step=step)
        pending = (state or {}).get("async_pending")
        if pending is not None and not self.cfg.async_.enabled:
            # an asynchronous run's checkpoint: its last batch was not yet told to the strategies
            self.pipeline.observe(*pending)
        return step

    def write_config(self) -> None:
        self.rundir.config_path.write_text(dumps_toml(to_dict(self.cfg)))

    def close(self) -> None:
        self.log.close()
        self.ledger.close()
        self.lock.release()


@dataclass
class Rollouts:
    """The rollout side of a run: the policy, its generator, the reward and the pipeline that drives
    them. The synchronous trainer holds one; the asynchronous trainer's rollout process holds its own."""

    model: Any
    tokenizer: Any
    device: Any
    generator: Any
    reward: Any
    reward_stats: Any
    pipeline: RolloutPipeline
    train: list[Prompt]  # the pool the pipeline walks: the data's prompts that fit the context


def seed_everything(seed: int) -> None:
    """The global RNGs (Python, NumPy, torch), before the model is loaded; every strategy, the stream,
    the generator and the learner then draw from their own generators (``pipeline.SEEDS``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def assemble_rollouts(cfg: RunConfig, train: list[Prompt], ledger: Any, out: Path, device: Any = None) -> Rollouts:
    """Load the policy and build its generator, the reward and the rollout pipeline over ``train``,
    every strategy seeded from ``cfg.seed`` and bound to the policy (DOTS's embeddings, the quality head)."""
    from ..generate import HFGenerator
    from ..rewards import RewardStats, score_group

    device = resolve_device(cfg.device) if device is None else device
    model, tokenizer = load_model(cfg.model, device)
    generator = HFGenerator(model, tokenizer, max_batch_rows=256, seed=seed_of("generator", cfg.seed))
    train = fit_context(train, model, generator, cfg, "training prompts")
    ledger.register_pool([p.id for p in train], labels=[p.meta.get("difficulty") for p in train])
    reward, stats = cfg.reward.build(), RewardStats()
    pipeline = RolloutPipeline.from_config(
        cfg, train, ledger, generator=generator, score_fn=lambda p, cs: score_group(reward, p, cs, stats=stats),
        bind={"model": model, "tokenizer": tokenizer, "encode": generator.encode, "out": out, "device": device})
    return Rollouts(model, tokenizer, device, generator, reward, stats, pipeline, train)


def fit_context(prompts: list[Prompt], model: Any, generator: Any, cfg: RunConfig, what: str) -> list[Prompt]:
    """The prompts that fit the model's positions with ``sampling.max_new_tokens`` to spare, counted
    as generation encodes them; the others are dropped with one warning (verl's
    ``data.filter_overlong_prompts``). None fitting is an error: training on nothing is no run."""
    from ..data_filters import filter_overlong, max_prompt_tokens_for

    try:
        limit = max_prompt_tokens_for(model.config, cfg.sampling.max_new_tokens)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if limit is None or not prompts:
        return prompts
    kept, dropped = filter_overlong(prompts, generator.encode, limit, what=what)
    if dropped and not kept:
        raise ConfigError(f"all {dropped} {what} are longer than {limit} tokens, the model's "
                          f"{limit + cfg.sampling.max_new_tokens} positions less sampling.max_new_tokens = "
                          f"{cfg.sampling.max_new_tokens}; lower sampling.max_new_tokens or use shorter prompts")
    return kept


def build(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Run:
    from .learner import PolicyLearner

    rundir = RunDir(cfg.out)
    rundir.check_not_in_use()  # a second trainer gets the same message with or without --resume
    if resume and not rundir.has_run():
        raise RunDirError(f"--resume: {rundir.path} holds no run to resume; drop --resume to start one there")
    if not resume and rundir.has_run() and not overwrite:
        raise ConfigError(f"{rundir.path} already holds a run; pass --resume to continue it, --overwrite to start "
                          f"over, or choose another directory with --set out=...")
    if resume:
        check_resume_config(rundir.read_config(), cfg)
        if not rundir.has_ledger():
            raise RunDirError(f"--resume: {rundir.ledger_path} is missing, and with it every selector's history; "
                              f"the run cannot be resumed faithfully (start over with --overwrite)")
    train, evals = load_data(cfg)  # bad data and a bad model path fail here, before the model is loaded
    check_model(cfg.model)
    device = resolve_device(cfg.device)
    lock = rundir.lock().acquire()
    try:
        if not resume:
            rundir.reset()
        rundir.clean_temporaries()
        seed_everything(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ledger = _open_run_ledger(rundir, resume)
        r = assemble_rollouts(cfg, train, ledger, rundir.path, device)  # drops overlong prompts, registers the pool
        evals = fit_context(evals, r.model, r.generator, cfg, "held-out prompts")
        learner = PolicyLearner(r.model, r.generator.encode, cfg.learner, temperature=cfg.sampling.temperature,
                                pad_id=r.generator.pad_id, seed=seed_of("learner", cfg.seed))
        log = RunLog(cfg.out, progress=cfg.log.progress, tensorboard=cfg.log.tensorboard, total_steps=cfg.steps)
        return Run(cfg, rundir, lock, r.model, r.tokenizer, r.generator, learner, r.pipeline, ledger, r.reward,
                   r.reward_stats, evals, log)
    except BaseException:
        lock.release()
        raise


def _open_run_ledger(rundir: RunDir, resume: bool) -> Any:
    import sqlite3

    from ..ledger import open_ledger

    try:
        return open_ledger(rundir.ledger_path)
    except (sqlite3.DatabaseError, ValueError) as e:
        raise RunDirError(f"{rundir.ledger_path} cannot be opened as a rollsift ledger ({e}); "
                          + ("it holds the selectors' history, so the run cannot be resumed: start over with "
                             "--overwrite" if resume else "remove it or train into another directory")) from e


__all__ = ["RESUME_SAFE", "Rollouts", "Run", "assemble_rollouts", "build", "check_resume_config", "load_data",
           "seed_everything"]
