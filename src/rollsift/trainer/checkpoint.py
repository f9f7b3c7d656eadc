"""Resumable checkpoints: model weights, optimiser, every RNG and the pipeline state, together.

Layout: ``OUT/checkpoints/step_000010/{model.safetensors, config.json, tokenizer files, state.pt}``
and ``OUT/checkpoints/latest`` naming the newest complete one. A checkpoint is written into a
temporary directory and renamed into place, and ``latest`` is replaced atomically, so a run
killed at any moment leaves the previous checkpoint intact. Before writing, the free disk space
is checked against the size of the last checkpoint; a failed write removes its temporary
directory and says why. ``candidates`` lists the checkpoints a resume may try, newest first (the
one ``latest`` names, then every other complete one), so a damaged latest checkpoint falls back
to the previous intact one instead of to nothing.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import faults
from ..errors import UserError

LATEST = "latest"
STATE = "state.pt"
WEIGHTS = "model.safetensors"
# Free space asked for beyond a checkpoint's own size: the ledger, metrics and the next step's writes need room too.
DISK_MARGIN = 1.2


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be written or read; the message says which and why."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def save(out: str | Path, step: int, model, tokenizer, state: dict[str, Any], keep: int = 2) -> Path:
    root = Path(out) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise CheckpointError(f"step {step}: refusing to checkpoint non-finite weights ({', '.join(bad[:3])}...)")
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    previous = latest(out)
    need = _size(previous) if previous is not None else sum(p.numel() * p.element_size() for p in model.parameters()) * 3
    free = shutil.disk_usage(root).free
    if free < need * DISK_MARGIN:
        raise CheckpointError(f"step {step}: {free / 2**20:.1f} MiB free under {root}; a checkpoint needs about "
                              f"{need / 2**20:.1f} MiB, and {DISK_MARGIN:g}x that ({need * DISK_MARGIN / 2**20:.1f} MiB) "
                              f"must be free so that the ledger and metrics still have room; free some space and "
                              f"resume (--resume) from the last checkpoint")
    shutil.rmtree(tmp, ignore_errors=True)
    from ..generate.hf import quiet_transformers

    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        faults.point("checkpoint.weights")
        torch.save({"step": step, "rng": rng_state(), **state}, tmp / STATE)
        _fsync_dir(tmp)
        faults.point("checkpoint.state")
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"step {step}: writing the checkpoint under {root} failed ({e}); the previous "
                              f"checkpoint is intact, resume from it once the cause is fixed") from e
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    faults.point("checkpoint.rename")
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    faults.point("checkpoint.pointer")
    for old in sorted(p for p in root.glob("step_*") if p != final)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(path: Path) -> bool:
    """Written to the end: ``state.pt`` is the last file a checkpoint gets (``load`` checks the rest)."""
    return (path / STATE).is_file()


def latest(out: str | Path) -> Path | None:
    """The newest complete checkpoint (the one ``latest`` names if it is complete), or None."""
    found = candidates(out)
    return found[0] if found else None


def candidates(out: str | Path) -> list[Path]:
    """Complete checkpoints a resume may try, newest first: the one ``latest`` names, then the others."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    pointer = root / LATEST
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    rest = sorted((p for p in root.glob("step_*") if p.is_dir() and p != named), reverse=True)
    return [p for p in ([named] if named is not None else []) + rest if _complete(p)]


def step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def discard_after(out: str | Path, step: int) -> list[Path]:
    """Remove checkpoints of steps after ``step`` (a resume from an older one makes them a lost future)."""
    root = Path(out) / "checkpoints"
    gone = [p for p in root.glob("step_*") if p.is_dir() and step_of(p) > step] if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def load(path: str | Path, model) -> dict[str, Any]:
    """Load weights into ``model`` and return the saved state (RNGs are restored by the caller).

    Raises ``CheckpointError`` for a damaged checkpoint (unreadable files, missing tensors)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        weights = load_file(str(path / WEIGHTS), device=str(next(model.parameters()).device))
        state = torch.load(path / STATE, weights_only=False)
    except Exception as e:  # truncated or corrupt files: safetensors, pickle and zip errors of many kinds
        raise CheckpointError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})") from e
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied embeddings are saved once
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return state


def _fsync_dir(path: Path) -> None:
    for p in [*path.iterdir(), path] if path.is_dir() else [path]:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
