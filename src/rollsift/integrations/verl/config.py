"""The adapter's knobs, read from verl's own config tree (no verl import here).

They live in ``trainer.v1.sampler.sampler_kwargs``: verl 0.9 documents that mapping as "additional
kwargs for the custom sampler" and hands it to the sampler's constructor, so the knobs travel with
the rest of a verl run's Hydra config (``key=value`` on the command line, a YAML file, the resolved
config verl logs). ``ppo_trainer.yaml`` declares ``sampler_kwargs: {}``, so on the command line the
keys need Hydra's ``+`` (``+trainer.v1.sampler.sampler_kwargs.selector.type=greso``); a config file
that extends ``ppo_trainer`` (``examples/verl/config/rollsift_grpo.yaml``) declares them, so plain
``key=value`` works there. docs/integrations/verl.md has the table.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...config import SELECTORS, resolve_strategy
from ...configlib import ConfigError, check_positive, doc, from_dict

SUPPORTED_VERL_VERSIONS = ("0.9.1",)
VERSION_OVERRIDE_ENV = "ROLLSIFT_VERL_UNSUPPORTED_OK"
CONFIG_KEY = "trainer.v1.sampler.sampler_kwargs"
TRAINER_MODE = "rollsift_sync"  # the name registered with verl.trainer.ppo.v1.register_trainer
LEDGER_NAMESPACE = "rollsift"  # Ray namespace of the ledger actor


def check_verl_version() -> str:
    """The installed verl version; raises unless it is a tested one (or the override is set).

    Reads the package metadata only, so it costs nothing and imports nothing.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("verl")
    except PackageNotFoundError:
        raise ImportError("rollsift.integrations.verl needs verl 0.9.1: pip install '/path/to/rollsift[verl]' (a "
                          "checkout or the wheel; docs/integrations/verl.md)") from None
    if found not in SUPPORTED_VERL_VERSIONS and os.environ.get(VERSION_OVERRIDE_ENV) != "1":
        raise ImportError(
            f"rollsift.integrations.verl is tested with verl=={' or '.join(SUPPORTED_VERL_VERSIONS)} and subclasses "
            f"private methods of its V1 trainer and ReplayBuffer that change between releases; found verl=={found}. "
            f"Install the pinned version (pip install '/path/to/rollsift[verl]'), or set {VERSION_OVERRIDE_ENV}=1 to try "
            "this one anyway."
        )
    return found


@dataclass
class LedgerSettings:
    path: str | None = doc(
        "SQLite file of the run's ledger. Default: <trainer.default_local_dir>/rollsift/ledger.sqlite under the "
        "rollsift_sync trainer; required when RollsiftSampler is named as a custom sampler of verl's own trainer.",
        None)
    backend: Literal["actor", "driver"] = doc(
        "'actor': a Ray actor on the trainer's node owns the SQLite file; any process of the job reaches it by "
        "name. 'driver': the trainer process owns the file itself.", "actor")
    placement: Literal["trainer", "head"] = doc(
        "Node of the ledger actor (and so of the file): 'trainer', the node of verl's trainer process; 'head', "
        "the Ray head node (a fixed place when the trainer may land elsewhere after a restart).", "trainer")
    name: str | None = doc(
        "Name of the ledger actor (Ray namespace 'rollsift'). Default: 'rollsift-ledger-' + a hash of the path.",
        None)

    def actor_name(self, path: str) -> str:
        return self.name or "rollsift-ledger-" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]


@dataclass
class VerlRollsiftConfig:
    selector: Any = doc(
        "Pre-rollout prompt selector: a table with type = 'uniform' | 'greso' | 'dots' and its knobs "
        "(the same tables as a rollsift run file).", default_factory=lambda: {"type": "greso"})
    seed: int | None = doc("Seed of the selector's random generator. Default: data.seed, else 0.", None)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    correct_key: str = doc(
        "Key of reward_extra_info holding a completion's correctness. verl's reward managers write 'acc' "
        "(the score itself for a reward function that returns a float).", "acc")
    correct_threshold: float = doc("A completion is correct when its correct_key value is > this.", 0.5)
    register_pool: bool = doc("Register every training prompt id in the ledger when training starts.", True)
    max_examined: float = doc(
        "Cap on candidates a stream selector may examine per request, in multiples of the pool size; past it "
        "the request is completed with the next candidates (decision reason 'fill').", 2.0)

    def __post_init__(self) -> None:
        check_positive(f"{CONFIG_KEY}.max_examined", self.max_examined)
        self.selector = resolve_strategy("selector", SELECTORS, self.selector, f"{CONFIG_KEY}.selector")

    @classmethod
    def from_kwargs(cls, sampler_kwargs: Any) -> VerlRollsiftConfig:
        """From ``trainer.v1.sampler.sampler_kwargs`` (a DictConfig, a dict or None)."""
        data = _plain(sampler_kwargs) if sampler_kwargs is not None else {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{CONFIG_KEY} must be a mapping, got {data!r}")
        return from_dict(cls, dict(data), CONFIG_KEY)


def _plain(value: Any) -> Any:
    """A DictConfig/ListConfig as plain dicts and lists (interpolations resolved); anything else as is."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - verl always brings omegaconf
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
