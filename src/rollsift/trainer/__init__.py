"""rollsift's reference trainer: the loop skeleton (``loop``), the synchronous and asynchronous loops
(``train``, ``async_train``), their assembly from a run config (``assembly``), the update (``learner``,
``grpo``), checkpoints, health checks, held-out evaluation, model loading and the run summary.

``from rollsift.trainer import train`` is the entry point; it is loaded on first use so that importing
a light module of this package (``summary``, ``health``) does not import torch."""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from .train import train

        return train
    raise AttributeError(f"module 'rollsift.trainer' has no attribute {name!r}")
