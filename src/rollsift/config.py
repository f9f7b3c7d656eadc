"""The run configuration of the reference trainer: one dataclass per concern, one doc per field.

A run file is TOML (see ``src/rollsift/configs/*.toml``); ``--set key=value`` overrides any key
(``--set learner.lr=1e-4 --set selector.type=greso --set filters=dynamic,pods``). Strategy
sections (``[selector]``, ``[pruner]`` and one section per filter named in ``filters``) are
resolved through the registries below into each strategy's own config dataclass, which
documents and validates its knobs. The resolved config is written to ``OUT/config.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .configlib import ConfigError, check_positive, check_range, doc, from_dict, load_class

# name -> "module:ConfigClass"; the config class names its strategy class in ``strategy``.
SELECTORS = {
    "uniform": "rollsift.select.uniform:UniformConfig",
    "greso": "rollsift.select.greso:GresoConfig",
    "dots": "rollsift.select.dots:DotsConfig",
}
FILTERS = {
    "dynamic": "rollsift.filters.dynamic:DynamicSamplingConfig",
    "pods": "rollsift.filters.pods:PODSConfig",
}
PRUNERS = {
    "none": None,
    "quality_head": "rollsift.prune.quality_head:QualityHeadConfig",
}


def resolve_strategy(kind: str, registry: dict, data: Any, key: str) -> Any:
    """Turn ``{"type": name, **knobs}`` (or an already built config) into its config dataclass."""
    if not isinstance(data, dict):
        return data
    name = data.get("type")
    if name not in registry:
        raise ConfigError(f"{key}.type = {name!r} is not a known {kind}; choose one of {sorted(registry)}")
    spec = registry[name]
    if spec is None:
        return None
    cls = load_class(spec)
    return from_dict(cls, data, key)


def build_strategy(config: Any, seed: int) -> Any:
    """The strategy a resolved config names (``type(config).strategy``), seeded. Torch-free, so the
    simulator and the counterfactual replay build strategies exactly as ``rollsift train`` does."""
    return load_class(type(config).strategy)(config, seed=seed)


@dataclass
class SamplingConfig:
    temperature: float = doc("Sampling temperature for training rollouts (1.0 = the policy as is).", 1.0)
    top_p: float = doc("Nucleus sampling mass kept; 1.0 disables top-p.", 1.0)
    max_new_tokens: int = doc("Length limit of a completion, in tokens.", 64)


@dataclass
class LearnerConfig:
    lr: float = doc("AdamW learning rate.", 2e-4)
    weight_decay: float = doc("AdamW weight decay.", 0.0)
    warmup_steps: int = doc("Linear learning-rate warm-up, in training steps.", 0)
    grad_clip: float = doc("Global gradient-norm clip (0 disables).", 1.0)
    minibatches: int = doc("Optimiser steps per training step (the batch is split in this many parts).", 2)
    ppo_epochs: int = doc("Passes over the batch per training step.", 1)
    clip_low: float = doc("PPO ratio clip below 1 (1 - clip_low).", 0.2)
    clip_high: float = doc("PPO ratio clip above 1 (1 + clip_high); DAPO's clip-higher uses 0.28.", 0.28)
    loss_agg: Literal["token-mean", "seq-mean"] = doc(
        "How token losses become one number: mean over all tokens of the batch (DAPO), or the "
        "mean over sequences of each sequence's token mean (original GRPO).",
        "token-mean",
    )
    adv_scale: Literal["group", "none"] = doc(
        "Divide group-centred rewards by the group's std ('group', GRPO) or not ('none', Dr. GRPO).", "group"
    )
    kl_coef: float = doc("Weight of a k3 KL penalty to the starting policy (0 = off, no reference model kept).", 0.0)
    is_cap: float = doc("Decoupled loss: tokens whose importance weight pi_old/pi_behaviour exceeds this are masked.", 5.0)
    max_tokens_per_forward: int = doc("Micro-batch size for forward/backward passes, in padded tokens.", 16384)

    def __post_init__(self) -> None:
        check_positive("learner.lr", self.lr)
        check_positive("learner.minibatches", self.minibatches)
        check_positive("learner.ppo_epochs", self.ppo_epochs)
        check_range("learner.clip_low", self.clip_low, 0.0, 1.0)
        check_positive("learner.clip_high", self.clip_high, allow_zero=True)
        check_positive("learner.kl_coef", self.kl_coef, allow_zero=True)
        check_positive("learner.is_cap", self.is_cap)


@dataclass
class DataConfig:
    train: str = doc("Training prompts: 'testbed' or a local .jsonl/.json/.parquet file or directory.", "testbed")
    eval: str = doc("Held-out prompts: 'testbed', a local file, or 'none'.", "testbed")
    train_size: Optional[int] = doc("Use only the first N training prompts (a subset spans more epochs).", 2048)
    eval_size: Optional[int] = doc("Use only the first N held-out prompts.", 512)
    style: Literal["auto", "trl", "verl"] = doc("Row layout of local files.", "auto")
    on_error: Literal["raise", "skip"] = doc("A bad row stops the run ('raise') or is skipped and counted.", "raise")


@dataclass
class EvalConfig:
    every: int = doc("Evaluate on the held-out set every this many training steps (0 = only at start and end).", 20)
    samples: int = doc("Sampled completions per held-out prompt; accuracy is their mean (GRESO validates with 4).", 4)
    temperature: float = doc("Temperature of the sampled evaluation.", 1.0)
    greedy: bool = doc("Also report greedy accuracy.", True)


@dataclass
class ReplayConfig:
    enabled: bool = doc("Mix replayed informative groups into each training batch.", False)
    fraction: float = doc("Share of the batch's groups taken from the buffer once it holds enough (DOTS: 0.5).", 0.5)
    capacity: int = doc("Buffer size in groups (FIFO, newest group per prompt kept).", 256)
    max_staleness: int = doc("Never replay a group sampled more than this many policy versions ago.", 4)

    def __post_init__(self) -> None:
        check_range("replay.fraction", self.fraction, 0.0, 1.0)
        check_positive("replay.capacity", self.capacity)
        check_positive("replay.max_staleness", self.max_staleness)


@dataclass
class LogConfig:
    progress: bool = doc("Show a rich progress bar with live metrics.", True)
    tensorboard: bool = doc("Also write TensorBoard event files under OUT/tb (needs the tensorboard package).", False)


@dataclass
class RunConfig:
    seed: int = doc("Seed of every random generator of the run.", 0)
    steps: int = doc("Training steps (optimiser updates of the policy batch).", 200)
    max_minutes: Optional[float] = doc("Stop after this much wall time (checked between steps).", None)
    out: str = doc("Run directory: config.toml, metrics.jsonl, ledger.sqlite, checkpoints/.", "runs/default")
    model: str = doc("Policy: 'testbed' (the shipped tiny model) or a local from_pretrained directory.", "testbed")
    device: str = doc("'cpu', 'cuda', 'cuda:1', or 'auto' (CUDA when available).", "auto")
    threads: Optional[int] = doc("torch CPU threads (default: torch's choice).", None)
    batch_size: int = doc("Prompts (groups) trained on per step.", 32)
    n: int = doc("Rollouts per prompt (the group size).", 8)
    checkpoint_every: int = doc("Save a resumable checkpoint every this many steps (0 = only at the end).", 10)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    log: LogConfig = field(default_factory=LogConfig)
    selector: Any = doc(
        "Pre-rollout prompt selector: a table with type = 'uniform' | 'greso' | 'dots' and its knobs.",
        default_factory=lambda: {"type": "greso"},
    )
    filters: list[str] = doc(
        "Post-rollout filters, applied in order: 'dynamic' (DAPO dynamic sampling), 'pods'.",
        default_factory=lambda: ["dynamic"],
    )
    dynamic: Any = doc("Knobs of the 'dynamic' filter (used when it is listed in filters).", default_factory=dict)
    pods: Any = doc("Knobs of the 'pods' filter (used when it is listed in filters).", default_factory=dict)
    pruner: Any = doc(
        "In-flight rollout pruner: a table with type = 'none' | 'quality_head' and its knobs.",
        default_factory=lambda: {"type": "none"},
    )

    def __post_init__(self) -> None:
        check_positive("steps", self.steps)
        check_positive("batch_size", self.batch_size)
        if self.n < 2:
            raise ConfigError(f"n must be >= 2 (GRPO needs a group to compare within), got {self.n}")
        for f in self.filters:
            if f not in FILTERS:
                raise ConfigError(f"filters: {f!r} is not a known filter; choose from {sorted(FILTERS)}")
        if len(set(self.filters)) != len(self.filters):
            raise ConfigError(f"filters lists a filter twice: {self.filters}")
        self.selector = resolve_strategy("selector", SELECTORS, self.selector, "selector")
        self.pruner = resolve_strategy("pruner", PRUNERS, self.pruner, "pruner")
        if isinstance(self.dynamic, dict):
            self.dynamic = from_dict(load_class(FILTERS["dynamic"]), {"type": "dynamic", **self.dynamic}, "dynamic")
        if isinstance(self.pods, dict) and "pods" in self.filters:
            self.pods = from_dict(load_class(FILTERS["pods"]), {"type": "pods", **self.pods}, "pods")
        elif isinstance(self.pods, dict):
            self.pods = None


def build_config(files: list[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then each TOML file in order, then each ``--set`` override."""
    from .configlib import apply_override, load_toml, merge_into

    data: dict = {}
    for path in files or []:
        merge_into(data, load_toml(path))
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(RunConfig, data)

