"""Where a policy comes from: the device, and the model with its tokenizer (the shipped testbed
checkpoint or a local ``save_pretrained`` directory). Shared by ``rollsift train``, ``eval`` and
``testbed regime``; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from ..configlib import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device = {name!r} is not a device; use 'cpu', 'cuda', 'cuda:1' or 'auto'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but CUDA is not available here; use device = 'cpu' or 'auto'")
    return dev


def check_model(spec: str) -> str:
    """The directory ``spec`` names ('testbed' or a local path); a clear error, before any loading, if
    it holds no model."""
    if spec == "testbed":
        from ..testbed import base_checkpoint

        return str(base_checkpoint())
    if not (Path(spec) / "config.json").is_file():
        raise ConfigError(f"model = {spec!r} is not a model directory (a folder with config.json, as written by "
                          f"save_pretrained); use 'testbed' or a local path")
    return spec


def load_model(spec: str, device: torch.device):
    """The policy and its tokenizer, without transformers' progress bars."""
    from ..generate.hf import load_policy, quiet_transformers

    path = check_model(spec)
    with quiet_transformers():
        return load_policy(path, device=device)


__all__ = ["check_model", "load_model", "resolve_device"]
