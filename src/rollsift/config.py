"""The run configuration of the reference trainer: one dataclass per concern, one doc per field.

A run file is TOML (see ``src/rollsift/configs/*.toml``); ``--set key=value`` overrides any key
(``--set learner.lr=1e-4 --set selector.type=greso --set filters=dynamic,pods``). Strategy
sections (``[selector]``, ``[pruner]`` and one section per filter named in ``filters``) are
resolved through the registries below into each strategy's own config dataclass, which
documents and validates its knobs. The resolved config is written to ``OUT/config.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, Optional

from .configlib import ConfigError, check_positive, check_range, doc, from_dict, load_class
from .records import SamplingParams

# name -> "module:ConfigClass"; the config class names its strategy class in ``strategy``.
SELECTORS = {
    "uniform": "rollsift.select.uniform:UniformConfig",
    "greso": "rollsift.select.greso:GresoConfig",
    "dots": "rollsift.select.dots:DotsConfig",
    "posterior": "rollsift.select.posterior:PosteriorConfig",
    "learned": "rollsift.select.learned:LearnedConfig",
}
FILTERS = {
    "dynamic": "rollsift.filters.dynamic:DynamicSamplingConfig",
    "pods": "rollsift.filters.pods:PODSConfig",
}
PRUNERS = {
    "none": None,
    "quality_head": "rollsift.prune.quality_head:QualityHeadConfig",
}


REGISTRIES = {"selector": SELECTORS, "filter": FILTERS, "pruner": PRUNERS}


def resolve_strategy(kind: str, registry: dict, data: Any, key: str) -> Any:
    """Turn ``{"type": name, **knobs}`` (or an already built config) into its config dataclass."""
    if not isinstance(data, Mapping):
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


def make_strategy(kind: str, spec: Any, seed: int, key: str | None = None) -> Any:
    """A strategy from whatever a user may hand an engine: a ready object (used as is), a config
    dataclass, a registry name or a table ``{type = name, knobs}``; None (or pruner 'none') gives None."""
    if spec is None:
        return None
    key = key or kind
    if isinstance(spec, str):
        if spec not in REGISTRIES[kind]:
            raise ConfigError(f"{key} {spec!r} is not known; choose one of {sorted(REGISTRIES[kind])}")
        spec = {"type": spec}
    if isinstance(spec, Mapping):
        spec = resolve_strategy(kind, REGISTRIES[kind], dict(spec), key)
        if spec is None:
            return None
    if is_dataclass(spec) and not isinstance(spec, type):
        if getattr(type(spec), "strategy", None) is None:
            raise ConfigError(f"{key}: {type(spec).__name__} names no strategy class; pass the {kind} object itself")
        return build_strategy(spec, seed)
    return spec


def fold_filter_tables(data: dict) -> dict:
    """Move top-level tables named after a registered filter (``[dynamic]``, ``--set pods.m=4``)
    into that filter's entry of ``filters``, so no filter needs a field of its own in RunConfig.
    Knobs of a filter that is not listed are still checked (a typo is an error), then ignored."""
    default = [f.default_factory() for f in fields(RunConfig) if f.name == "filters"][0]
    listed = data.get("filters", default)
    if isinstance(listed, str):
        listed = [x for x in listed.split(",") if x]
    entries = [dict(e) if isinstance(e, Mapping) else ({"type": e} if isinstance(e, str) else e) for e in listed]
    for name, spec in FILTERS.items():
        knobs = data.pop(name, None)
        if knobs is None:
            continue
        if not isinstance(knobs, Mapping):
            raise ConfigError(f"{name} must be a table of the '{name}' filter's knobs, got {knobs!r}")
        from_dict(load_class(spec), {**knobs, "type": name}, name)
        for e in entries:
            if isinstance(e, dict) and e.get("type") == name:
                e.update(knobs)
    if "filters" in data or any(isinstance(e, dict) and len(e) > 1 for e in entries):
        data["filters"] = entries
    return data


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
    old_logprobs: Literal["behaviour", "recompute"] = doc(
        "pi_old of fresh on-policy groups: the log-probs recorded while generating ('behaviour': no forward pass; "
        "at most 2e-4 from a teacher-forced pass on the testbed, docs/async.md) or one forward pass over the "
        "batch before the update ('recompute'). Off-policy groups (carried, replayed, generated by older weights) are always "
        "recomputed.", "behaviour")
    undo_nonfinite: bool = doc(
        "Undo a step whose loss, gradient or new weights are not finite (keeps a copy of the weights and optimiser "
        "state during the update; false only skips the optimiser step whose gradient is not finite).", True)
    max_nonfinite_steps: int = doc("Stop the run after this many consecutive undone (non-finite) steps.", 3)

    def __post_init__(self) -> None:
        check_positive("learner.lr", self.lr)
        check_positive("learner.minibatches", self.minibatches)
        check_positive("learner.ppo_epochs", self.ppo_epochs)
        check_range("learner.clip_low", self.clip_low, 0.0, 1.0)
        check_positive("learner.clip_high", self.clip_high, allow_zero=True)
        check_positive("learner.kl_coef", self.kl_coef, allow_zero=True)
        check_positive("learner.is_cap", self.is_cap)
        check_positive("learner.max_nonfinite_steps", self.max_nonfinite_steps)


@dataclass
class DataConfig:
    train: str = doc("Training prompts: 'testbed' or a local .jsonl/.json/.parquet file or directory.", "testbed")
    eval: str = doc("Held-out prompts: 'testbed', a local file, or 'none'.", "testbed")
    train_size: Optional[int] = doc("Use only the first N training prompts (a subset spans more epochs).", 2048)
    eval_size: Optional[int] = doc("Use only the first N held-out prompts.", 512)
    style: Literal["auto", "trl", "verl"] = doc("Row layout of local files.", "auto")
    on_error: Literal["raise", "skip"] = doc("A bad row stops the run ('raise') or is skipped and counted.", "raise")


@dataclass
class RewardConfig:
    timeout_s: float = doc("Bound on one completion's answer check, in seconds (math-verify in a worker process).", 5.0)
    batch_timeout: Optional[float] = doc(
        "Bound on scoring one batch (one score() call: a group, or a whole step's batch), in seconds, however many "
        "completions it holds: they are checked in parallel on the worker pool and what is unfinished at the "
        "deadline counts as wrong with reason 'timeout' (reward/reason/timeout). 30 s: a healthy batch of 256 "
        "distinct symbolic answers takes 1.3 s, so none is cut; a stalled one costs at most this, not timeout_s per "
        "completion (docs/robustness.md). None: no batch bound.", 30.0)

    def __post_init__(self) -> None:
        check_positive("reward.timeout_s", self.timeout_s)
        if self.batch_timeout is not None:
            check_positive("reward.batch_timeout", self.batch_timeout)

    def build(self):
        """The run's ``MathReward`` with these bounds."""
        from .rewards import MathReward

        return MathReward(timeout_s=self.timeout_s, batch_timeout=self.batch_timeout)


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
class AsyncConfig:
    enabled: bool = doc(
        "Generate and train at the same time: a rollout process (its own core) selects, generates, scores and "
        "filters with the newest weights it has, the trainer updates as soon as a batch is ready (AReaL).", False)
    max_staleness: int = doc(
        "eta: a batch is started only when the weights it samples with are at most eta versions behind the "
        "trainer that will train on it; a group more than eta behind is never trained on (0 = synchronous).", 1)
    timeout_s: float = doc("Fail when the rollout process delivers no batch for this long.", 900.0)

    def __post_init__(self) -> None:
        check_positive("async.max_staleness", self.max_staleness, allow_zero=True)
        check_positive("async.timeout_s", self.timeout_s)


@dataclass
class LogConfig:
    progress: bool = doc("Show a rich progress bar with live metrics.", True)
    tensorboard: bool = doc("Also write TensorBoard event files under OUT/tb (needs the tensorboard package).", False)


@dataclass
class RunConfig:
    seed: int = doc("Seed of every random generator of the run.", 0)
    steps: int = doc("Training steps (optimiser updates of the policy batch).", 120)
    max_minutes: Optional[float] = doc("Stop after this much wall time (checked between steps).", None)
    out: str = doc("Run directory: config.toml, metrics.jsonl, ledger.sqlite, checkpoints/.", "runs/default")
    model: str = doc("Policy: 'testbed' (the shipped tiny model) or a local from_pretrained directory.", "testbed")
    device: str = doc("'cpu', 'cuda', 'cuda:1', or 'auto' (CUDA when available).", "auto")
    threads: Optional[int] = doc("torch CPU threads (default: torch's choice).", None)
    batch_size: int = doc("Prompts (groups) trained on per step.", 32)
    n: int = doc("Rollouts per prompt (the group size).", 8)
    checkpoint_every: int = doc("Save a resumable checkpoint every this many steps (0 = only at the end).", 10)
    checkpoint_keep: int = doc(
        "Checkpoints kept in RUN/checkpoints, the newest ones; older ones are deleted after each save. Keep 2 or "
        "more: a resume falls back to the previous checkpoint when the newest is damaged.", 2)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    log: LogConfig = field(default_factory=LogConfig)
    async_: AsyncConfig = field(default_factory=AsyncConfig, metadata={"key": "async"})
    selector: Any = doc(
        "Pre-rollout prompt selector: a table with type = 'uniform' | 'greso' | 'posterior' | 'learned' | 'dots' and its knobs.",
        default_factory=lambda: {"type": "greso"},
    )
    filters: list[Any] = doc(
        "Post-rollout filters, applied in order: names ('dynamic' = DAPO dynamic sampling, 'pods') or tables "
        "{type = name, knobs}. A top-level table named after a listed filter ([dynamic], --set pods.m=4) sets its "
        "knobs.",
        default_factory=lambda: ["dynamic"],
    )
    pruner: Any = doc(
        "In-flight rollout pruner: a table with type = 'none' | 'quality_head' and its knobs.",
        default_factory=lambda: {"type": "none"},
    )

    def __post_init__(self) -> None:
        check_positive("steps", self.steps)
        check_positive("batch_size", self.batch_size)
        if self.checkpoint_keep < 1:
            raise ConfigError(f"checkpoint_keep must be >= 1 (the checkpoint a resume starts from), got "
                              f"{self.checkpoint_keep}")
        if self.n < 2:
            raise ConfigError(f"n must be >= 2 (GRPO needs a group to compare within), got {self.n}")
        filters = []
        for i, f in enumerate(self.filters):
            spec = {"type": f} if isinstance(f, str) else f
            if isinstance(spec, Mapping) and spec.get("type") not in FILTERS:
                raise ConfigError(f"filters: {spec.get('type')!r} is not a known filter; choose from {sorted(FILTERS)}")
            filters.append(resolve_strategy("filter", FILTERS, spec, spec.get("type") if isinstance(spec, Mapping) else f"filters[{i}]"))
        names = [f.type for f in filters]
        if len(set(names)) != len(names):
            raise ConfigError(f"filters lists a filter twice: {names}")
        self.filters = filters
        self.selector = resolve_strategy("selector", SELECTORS, self.selector, "selector")
        self.pruner = resolve_strategy("pruner", PRUNERS, self.pruner, "pruner")

    @property
    def filter_names(self) -> list[str]:
        return [f.type for f in self.filters]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "RunConfig":
        """A RunConfig from plain (TOML) data, filter tables folded in (``fold_filter_tables``)."""
        return from_dict(cls, fold_filter_tables(dict(data)))


def build_config(files: list[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then each TOML file in order, then each ``--set`` override."""
    from .configlib import apply_override, load_toml, merge_into

    data: dict = {}
    for path in files or []:
        merge_into(data, load_toml(path))
    for item in overrides or []:
        apply_override(data, item)
    return RunConfig.from_data(data)

