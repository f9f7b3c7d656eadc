"""Fixtures and helpers shared by the test modules (import the helpers with ``from conftest import ...``;
test modules never import each other)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rollsift.ledger import open_ledger
from rollsift.metrics_file import read_metrics


@pytest.fixture(scope="module")
def one_thread():
    """The test machine's 2 cores are shared: intra-op threads spin against other work and a tiny
    forward pass goes from ~1 ms to ~100 ms. One thread keeps a module of tiny models fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """A random hidden-64 Qwen2 over the testbed tokenizer, with wider weights than the default
    init: a default init (std 0.02) repeats one token forever; wider weights give varied outputs,
    so rows end with EOS at different steps and argmax ties are unlikely."""
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, num_kv_heads=1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15, generator=g)
    return model.eval(), tok


# ---------------------------------------------------------------------- end-to-end runs of the trainer
@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The shipped testbed policy (0.9M parameters): small enough for tests, and it learns."""
    from rollsift.testbed import base_checkpoint

    return str(base_checkpoint())


def overrides(model: str, out: Path, steps: int, extra=()) -> list[str]:
    return [
        f"model={model!s}", f"out={out!s}", f"steps={steps}", "device=cpu", "threads=1",
        "batch_size=4", "n=4", "data.train_size=24", "data.eval_size=6", "eval.every=3", "eval.samples=2",
        "checkpoint_every=1", "sampling.max_new_tokens=48", "log.progress=false", "learner.lr=1e-3",
        "selector.type=greso", "filters=dynamic", "dynamic.max_rounds=2", *extra,
    ]


def train_cli(model: str, out: Path, steps: int, extra=(), kill: str | None = None, resume: bool = False,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """``rollsift train`` in a subprocess on the ``overrides`` config, optionally killed at a fault point
    (``ROLLSIFT_KILL_AT``, rollsift.faults) or resumed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ROLLSIFT_KILL_AT", None)
    if kill:
        env["ROLLSIFT_KILL_AT"] = kill
    cmd = [sys.executable, "-m", "rollsift", "train", "--no-report",
           *sum((["--set", o] for o in overrides(model, out, steps, extra)), [])]
    if resume:
        cmd.append("--resume")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    ckpt = path / "checkpoints" / (path / "checkpoints" / "latest").read_text().strip()
    return load_file(str(ckpt / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert strip_times(read_metrics(a)) == strip_times(read_metrics(b))
    la, lb = open_ledger(a / "ledger.sqlite"), open_ledger(b / "ledger.sqlite")
    ga = [(g.step, g.round, g.prompt_id, g.accuracy) for g in la.groups()]
    gb = [(g.step, g.round, g.prompt_id, g.accuracy) for g in lb.groups()]
    assert ga == gb and len(ga) == len(set(ga))
