"""What the trainer tells a user at its edges: the step a resume starts from, one message for a second
trainer, the disk-space margin, the grad-clip advice, checkpoint retention (issue: bounded at the edges)."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import overrides
from rollsift.cli import main as cli
from rollsift.config import build_config
from rollsift.configlib import ConfigError
from rollsift.rundir import RunDir, RunDirError


def train(model, out, steps, extra=(), resume=False):
    from rollsift.trainer.train import train as run

    torch.set_num_threads(1)
    return run(build_config(overrides=overrides(model, out, steps, extra)), resume=resume)


@pytest.mark.slow
def test_a_resume_says_its_step_and_the_summary_counts_this_attempt(tiny_model, tmp_path, capsys):
    from rollsift.trainer.summary import format_summary

    out = tmp_path / "r"
    train(tiny_model, out, 2)
    capsys.readouterr()
    summary = train(tiny_model, out, 4, resume=True)
    assert "resuming from step 2 (step_000002); steps 3-4 to go" in capsys.readouterr().err
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert "in 4 steps (2 in this attempt, resumed from step 2)" in format_summary(summary)
    assert "in this attempt" not in format_summary({**summary, "resumed_from": None})


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_trainer_gets_one_message_with_or_without_resume(tiny_model, tmp_path, resume):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0}\n')  # a run is there: without the lock check, "already holds"
    with RunDir(out).lock():
        with pytest.raises(RunDirError, match=r"is in use by another rollsift process"):
            train(tiny_model, out, 2, resume=resume)


def test_checkpoint_retention_is_a_key(tiny_model, tmp_path):
    out = tmp_path / "r"
    train(tiny_model, out, 3, ["checkpoint_keep=3"])
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [
        "step_000001", "step_000002", "step_000003"]
    train(tiny_model, tmp_path / "one", 2, ["checkpoint_keep=1"])
    assert [p.name for p in (tmp_path / "one" / "checkpoints").glob("step_*")] == ["step_000002"]
    with pytest.raises(ConfigError, match="checkpoint_keep must be >= 1"):
        build_config(overrides=["checkpoint_keep=0"])


@pytest.mark.slow
def test_the_disk_space_message_states_its_margin(tiny_model, tmp_path, monkeypatch, capsys):
    import rollsift.trainer.checkpoint as ck

    out = tmp_path / "r"
    train(tiny_model, out, 1)
    need = sum(f.stat().st_size for f in (out / "checkpoints" / "step_000001").iterdir())
    real = shutil.disk_usage
    # more free than a checkpoint's size, less than the margin asks: refused, and the message says why
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: real(p)._replace(free=int(need * 1.1)))
    assert cli(["train", *sum((["--set", o] for o in overrides(tiny_model, out, 2)), []), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{ck.DISK_MARGIN:g}x that" in err and "must be free" in err


def test_divergence_advice_lowers_the_clip():
    from rollsift.trainer.health import Health, TrainingDiverged

    cfg = build_config(overrides=["learner.max_nonfinite_steps=1", "learner.grad_clip=1.0"])
    with pytest.raises(TrainingDiverged) as e:
        Health(cfg).check(1, {"train/nonfinite_skipped": 1.0})
    assert "or learner.grad_clip (now 1" in str(e.value) and "raise" not in str(e.value)
