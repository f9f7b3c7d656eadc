"""Builds a run from its config: model, data, reward, strategies, pipeline, learner, ledger, log.

The reference loop (``rollsift.train``) only calls what is assembled here; checkpoint saving and
restoring also live here so the loop stays short.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .config import FILTERS, SELECTORS, RunConfig, build_strategy
from .configlib import ConfigError, dumps_toml, to_dict
from .pipeline import RolloutPipeline
from .protocols import SamplingParams
from .records import Prompt
from .runlog import RunLog


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but CUDA is not available here; use device = 'cpu' or 'auto'")
    return dev


def load_model(spec: str, device: torch.device):
    """The policy and its tokenizer: the shipped testbed checkpoint or a local directory."""
    from .generate import load_policy

    if spec == "testbed":
        from .testbed import base_checkpoint

        spec = str(base_checkpoint())
    return load_policy(spec, device=device)


def load_data(cfg: RunConfig) -> tuple[list[Prompt], list[Prompt]]:
    d = cfg.data

    def read(source: str, split: str, size: int | None) -> list[Prompt]:
        if source == "none":
            return []
        if source == "testbed":
            from .testbed.problems import prompts

            out = prompts(split)
        else:
            from .data import load_prompts

            out = load_prompts(source, style=d.style, on_error=d.on_error).prompts
        return out[:size] if size else out

    train = read(d.train, "train", d.train_size)
    if not train:
        raise ConfigError(f"data.train = {d.train!r} gave no prompts")
    return train, read(d.eval, "eval", d.eval_size)


@dataclass
class Run:
    cfg: RunConfig
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

    def score(self, prompt, completions):
        from .rewards import score_group

        return score_group(self.reward, prompt, completions, stats=self.reward_stats)

    def evaluate(self, step: int) -> dict[str, float]:
        from .evaluate import evaluate

        e = self.cfg.eval
        return evaluate(
            self.generator, self.eval_prompts, lambda p, cs: self.reward.score([(p, c) for c in cs]),
            samples=e.samples, temperature=e.temperature, max_new_tokens=self.cfg.sampling.max_new_tokens,
            greedy=e.greedy, seed=self.cfg.seed * 1_000_003 + step,
        )

    def save(self, step: int) -> Path:
        state = {
            "learner": self.learner.state_dict(),
            "pipeline": self.pipeline.state_dict(),
            "generator": self.generator.state_dict(),
            "log": self.log.state_dict(),
        }
        return checkpoint.save(self.cfg.out, step, self.model, self.tokenizer, state)

    def restore(self) -> int:
        """Load the newest checkpoint; returns its step (0 when there is none)."""
        path = checkpoint.latest(self.cfg.out)
        if path is None:
            return 0
        state = checkpoint.load(path, self.model)
        self.learner.load_state_dict(state["learner"])
        self.pipeline.load_state_dict(state["pipeline"])
        self.generator.load_state_dict(state["generator"])
        checkpoint.set_rng_state(state["rng"])
        step = int(state["step"])
        self.log.close()
        self.log = RunLog(self.cfg.out, progress=self.cfg.log.progress, tensorboard=self.cfg.log.tensorboard,
                          total_steps=self.cfg.steps, resume_step=step)
        self.log.load_state_dict(state["log"])
        self.ledger.rollback(after_step=step)
        return step


def build(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Run:
    from .generate import HFGenerator
    from .ledger import open_ledger
    from .learner import PolicyLearner
    from .replay import FifoReplayBuffer
    from .rewards import MathReward, RewardStats

    seed = cfg.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if not resume and (out / "metrics.jsonl").exists():
        if not overwrite:
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to start over, "
                f"or choose another directory with --set out=..."
            )
        import shutil

        for name in ("metrics.jsonl", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "checkpoints", "tb"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(dumps_toml(to_dict(cfg)))

    device = resolve_device(cfg.device)
    model, tokenizer = load_model(cfg.model, device)
    train, evals = load_data(cfg)
    generator = HFGenerator(model, tokenizer, max_batch_rows=256, seed=seed)
    learner = PolicyLearner(model, generator.encode, cfg.learner, temperature=cfg.sampling.temperature,
                            pad_id=generator.pad_id, seed=seed + 1)
    ledger = open_ledger(out / "ledger.sqlite")
    ledger.register_pool([p.id for p in train], labels=[p.meta.get("difficulty") for p in train])
    reward = MathReward()
    stats = RewardStats()
    filters = [build_strategy(getattr(cfg, name), seed + 2) for name in cfg.filters]  # [dynamic], [pods]
    pruner = build_strategy(cfg.pruner, seed + 3) if cfg.pruner is not None else None
    replay = None
    if cfg.replay.enabled:
        replay = FifoReplayBuffer(cfg.replay.capacity, cfg.replay.max_staleness, seed=seed + 4)
    run = Run(cfg, model, tokenizer, generator, learner, None, ledger, reward, stats, evals,  # type: ignore[arg-type]
              RunLog(out, progress=cfg.log.progress, tensorboard=cfg.log.tensorboard, total_steps=cfg.steps))
    selector = build_strategy(cfg.selector, seed + 5)
    for strategy in (selector, pruner):  # strategies that read the policy (DOTS embeddings, pruning head)
        if hasattr(strategy, "bind"):
            strategy.bind(model=model, tokenizer=tokenizer, encode=generator.encode, out=out, device=device, pool=train)
    run.pipeline = RolloutPipeline(
        train, selector, generator, run.score, ledger,
        batch_size=cfg.batch_size, n=cfg.n,
        sampling=SamplingParams(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_new_tokens),
        filters=filters, pruner=pruner, replay=replay,
        replay_fraction=cfg.replay.fraction if replay is not None else 0.0, seed=seed,
    )
    return run


__all__ = ["Run", "build", "load_data", "load_model", "resolve_device", "SELECTORS", "FILTERS", "replace"]
