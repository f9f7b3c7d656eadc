"""Nothing lost, nothing doubled, no traceback: resume without a usable checkpoint, a locked run
directory, non-finite steps, changed configs on resume, bad data through the CLI, short batches,
disk full, read-only ledgers. (Reward bounds: test_rewards.py; kills anywhere: test_kill_anywhere.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rollsift.cli import main as cli
from rollsift.config import build_config
from rollsift.configlib import ConfigError
from rollsift.rundir import RunDir, RunDirError
from rollsift.metrics_file import read_metrics
from conftest import assert_same_run, overrides, weights


def train(model, out, steps, extra=(), resume=False):
    from rollsift.trainer.train import train as run

    torch.set_num_threads(1)
    return run(build_config(overrides=overrides(model, out, steps, extra)), resume=resume)


# ------------------------------------------------------------------------------ resume without a checkpoint
def test_resume_with_no_checkpoint_rolls_back_to_nothing(tiny_model, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_model, straight, 4, ["checkpoint_every=10"])
    train(tiny_model, split, 2, ["checkpoint_every=10"])  # ends with a checkpoint of step 2 ...
    shutil.rmtree(split / "checkpoints")  # ... which a kill before it would not have left
    train(tiny_model, split, 4, ["checkpoint_every=10"], resume=True)
    assert_same_run(straight, split)
    assert [r["step"] for r in read_metrics(split)] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tiny_model, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_model, straight, 6, ["checkpoint_every=2"])
    train(tiny_model, split, 4, ["checkpoint_every=2"])
    ck = split / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_000002", "step_000004"]
    (ck / "step_000004" / "state.pt").write_bytes(b"truncated")
    train(tiny_model, split, 6, ["checkpoint_every=2"], resume=True)
    assert "step_000004 is damaged" in capsys.readouterr().err
    assert_same_run(straight, split)


@pytest.mark.slow
def test_missing_latest_pointer_uses_the_newest_complete_checkpoint(tiny_model, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"  # split at 3: an evaluated step in both
    train(tiny_model, straight, 6, ["checkpoint_every=3"])
    train(tiny_model, split, 3, ["checkpoint_every=3"])
    (split / "checkpoints" / "latest").unlink()
    (split / "checkpoints" / ".step_000006.tmp").mkdir()  # a killed checkpoint write
    train(tiny_model, split, 6, ["checkpoint_every=3"], resume=True)
    assert_same_run(straight, split)
    assert not list((split / "checkpoints").glob(".*.tmp"))


def test_resume_of_nothing_is_refused(tiny_model, tmp_path):
    with pytest.raises(RunDirError, match="holds no run"):
        train(tiny_model, tmp_path / "nope", 2, resume=True)


def test_missing_or_corrupt_ledger_on_resume_is_refused(tiny_model, tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_model, out, 2)
    (out / "ledger.sqlite").rename(out / "moved.sqlite")
    args = ["train", *sum((["--set", o] for o in overrides(tiny_model, out, 3)), []), "--resume"]
    assert cli(args) == 2
    assert "ledger.sqlite is missing" in capsys.readouterr().err
    (out / "ledger.sqlite").write_bytes(b"not a database" * 100)
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "cannot be opened as a rollsift ledger" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ one owner per run directory
def test_a_second_trainer_fails_at_once_naming_the_holder(tiny_model, tmp_path):
    out = tmp_path / "r"
    with RunDir(out).lock():
        with pytest.raises(RunDirError, match=r"in use by another rollsift process \(\{\"pid\""):
            train(tiny_model, out, 2)
    assert not (out / "metrics.jsonl").exists()
    train(tiny_model, out, 1)  # released: the directory is usable again


# ------------------------------------------------------------------------------ non-finite steps
@pytest.mark.slow
def test_nonfinite_steps_are_undone_and_stop_the_run(tiny_model, tmp_path, capsys):
    from rollsift.trainer.health import TrainingDiverged

    out = tmp_path / "r"
    before = {k: v.clone() for k, v in weights_of(tiny_model).items()}
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(tiny_model, out, 8, ["learner.lr=1e30", "checkpoint_every=1", "dynamic.max_rounds=4"])
    err = capsys.readouterr().err
    assert "non-finite loss or gradient; the step was undone" in err
    rows = read_metrics(out)
    skipped = [r["step"] for r in rows if r.get("train/nonfinite_skipped")]
    assert len(skipped) >= 3
    for name, w in weights(out).items():  # every checkpoint holds finite weights
        assert torch.isfinite(w).all(), name
    # the first checkpointed step came right after undone steps: the policy never moved
    first_skip = skipped[0]
    if all(r.get("train/nonfinite_skipped") for r in rows if 1 <= r["step"] <= first_skip):
        assert all(torch.equal(before[k], w) for k, w in weights(out).items() if k in before)
    # a lower learning rate resumes the run (with a notice)
    train(tiny_model, out, 9, ["learner.lr=1e-3", "checkpoint_every=1", "dynamic.max_rounds=4"], resume=True)
    assert "resuming with learner.lr 1e+30 -> 0.001" in capsys.readouterr().err


def weights_of(model_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_checkpoint_refuses_nonfinite_weights(tmp_path):
    from rollsift.trainer.checkpoint import CheckpointError, save
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer

    model = build_model(build_tokenizer(), TinyModelConfig(hidden_size=64, num_layers=1, intermediate_size=64,
                                                            num_kv_heads=1))
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save(tmp_path, 1, model, None, {})
    assert not list((tmp_path / "checkpoints").iterdir())


def test_collapse_is_warned(capsys):
    from rollsift.trainer.health import Health

    h = Health(build_config())
    for step in range(12):
        h.check(step, {"step/accuracy": 0.5 if step < 6 else 0.0})
    h.check(0, {"eval/accuracy": 0.5})
    h.check(20, {"eval/accuracy": 0.01})
    err = capsys.readouterr().err
    assert "training accuracy collapsed from 0.500" in err and "held-out accuracy collapsed from 0.500 to 0.010" in err


# ------------------------------------------------------------------------------ changed config on resume
@pytest.mark.slow
def test_resume_refuses_a_config_the_state_depends_on(tiny_model, tmp_path):
    out = tmp_path / "r"
    train(tiny_model, out, 2)
    saved = (out / "config.toml").read_text()
    for change, key in (["n=8"], "n"), (["selector.type=uniform"], "selector.type"), (["seed=3"], "seed"), \
                       (["data.train_size=30"], "data.train_size"), (["filters=dynamic,pods"], "filters"):
        with pytest.raises(ConfigError, match=f"changed config: {key}"):
            train(tiny_model, out, 3, change, resume=True)
        assert (out / "config.toml").read_text() == saved  # untouched by a refused resume
    train(tiny_model, out, 3, ["eval.every=1", "log.tensorboard=false"], resume=True)  # safe keys
    assert [r["step"] for r in read_metrics(out)][-1] == 3


# ------------------------------------------------------------------------------ bad data through the CLI
BAD = {
    "broken.jsonl": ('{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2", "answer": \n', "line 2"),
    "no_answer.jsonl": ('{"prompt": "1+1"}\n', "'answer'"),
    "types.jsonl": ('{"prompt": 3, "answer": "2"}\n', "'prompt'"),
    "chat.jsonl": ('{"prompt": [{"role": "user"}], "answer": "2"}\n', "prompt[0].content"),
    "empty.jsonl": ("\n", "no prompts"),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("command", ["train", "eval"])
def test_bad_data_is_a_message_and_a_nonzero_exit(name, command, tmp_path, capsys):
    text, where = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    if command == "train":
        args = ["train", "--set", f"data.train={path}", "--set", f"out={tmp_path / 'run'}", "--set", "steps=1"]
    else:
        args = ["eval", "--data", str(path)]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_bad_paths_and_schemas(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question_text": ["1+1"], "gold": ["2"]}), tmp_path / "wrong.parquet")
    (tmp_path / "nodata").mkdir()
    for data, want in ((tmp_path / "wrong.parquet", "row 0"), (tmp_path / "missing.jsonl", "no such file"),
                       (tmp_path / "nodata", "no .parquet files")):
        assert cli(["train", "--set", f"data.train={data}", "--set", f"out={tmp_path / 'run'}"]) == 2
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err, err
    assert cli(["train", "--set", "model=/no/such/model", "--set", f"out={tmp_path / 'run'}"]) == 2
    assert "is not a model directory" in capsys.readouterr().err


def test_round_cap_error_is_a_message(tiny_model, tmp_path, capsys):
    args = ["train", *sum((["--set", o] for o in overrides(tiny_model, tmp_path / "r", 4,
                                                           ["dynamic.at_cap=error", "dynamic.max_rounds=1",
                                                            "dynamic.round_size=fixed"])), [])]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "RoundCapError" in err and "dynamic.max_rounds=1" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ short batches and small pools
def _pipe(size, selector=None, **dyn):
    from rollsift.filters.dynamic import DynamicSamplingConfig, DynamicSamplingFilter
    from rollsift.ledger import MemoryLedger
    from rollsift.pipeline import RolloutPipeline
    from rollsift.select.uniform import UniformSelector
    from rollsift.sim.model import SimGenerator, SimLearner, sim_score, synthetic_pool

    pool, model = synthetic_pool(size, seed=0, easy=0.3, hard=0.3)
    ledger = MemoryLedger()
    pipe = RolloutPipeline(pool, selector or UniformSelector(), SimGenerator(model, seed=0), sim_score, ledger,
                           batch_size=4, n=4, filters=[DynamicSamplingFilter(DynamicSamplingConfig(**dyn))])
    return pipe, ledger, SimLearner(model)


class SkipAll:
    scope = "stream"

    def ask(self, candidates, budget, ledger, ctx):
        from rollsift.records import Decision, Selection

        return Selection((), tuple(Decision(p.id, False, "never") for p in candidates))

    def tell(self, groups, ledger, ctx):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def metrics(self):
        return {}


def test_no_prompt_offered_is_a_short_batch_or_an_error():
    from rollsift.pipeline import RoundCapError, train_step

    pipe, _, learner = _pipe(16, SkipAll())
    _, m = train_step(pipe, learner, pipe.context(1))
    assert m["cost/short_batch"] == 1.0 and m["batch/groups"] == 0
    pipe, _, learner = _pipe(16, SkipAll(), at_cap="error")
    with pytest.raises(RoundCapError, match="offered no prompt"):
        train_step(pipe, learner, pipe.context(1))


def test_a_small_pool_never_loses_an_epoch():
    """A 16-prompt pool with refills that wrap within a step: prompts already in the step are deferred,
    not passed over, so every epoch of the stream shows up and each prompt comes once per epoch."""
    from rollsift.pipeline import train_step

    pipe, ledger, learner = _pipe(16, max_rounds=4, round_size="fixed", max_round_factor=3.0)
    for step in range(1, 31):
        train_step(pipe, learner, pipe.context(step))
    groups = list(ledger.groups("train"))
    epochs = sorted({g.epoch for g in groups})
    assert epochs == list(range(epochs[-1] + 1)) and len(epochs) >= 8
    for e in epochs[:-1]:
        ids = [g.prompt_id for g in groups if g.epoch == e]
        assert len(ids) == len(set(ids)) == 16, (e, len(ids))


def test_filter_metrics_belong_to_their_step():
    from rollsift.pipeline import train_step

    pipe, _, learner = _pipe(64)
    _, m = train_step(pipe, learner, pipe.context(1))
    assert "filter/dynamic/zero_variance_frac" in m
    pipe.carry.extend(pipe.collect(pipe.context(2)).groups * 2)  # a step the carry alone fills
    _, m = train_step(pipe, learner, pipe.context(3))
    assert m["cost/rounds"] == 0 and not any(k.startswith("filter/dynamic/") for k in m)


# ------------------------------------------------------------------------------ disk and media
@pytest.mark.slow
def test_disk_full_before_a_checkpoint_is_a_clear_error(tiny_model, tmp_path, monkeypatch, capsys):
    import rollsift.trainer.checkpoint as ck

    out = tmp_path / "r"
    train(tiny_model, out, 1)
    real = shutil.disk_usage
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    args = ["train", *sum((["--set", o] for o in overrides(tiny_model, out, 2)), []), "--resume"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "MiB free" in err and "Traceback" not in err
    assert not list((out / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()
    assert cli(args) == 0  # space again: the run resumes from its last checkpoint


@pytest.mark.slow
def test_readers_write_nothing_next_to_a_ledger(tiny_model, tmp_path):
    from rollsift.measure.ledger_show import summarize
    from rollsift.measure.report import render

    out = tmp_path / "r"
    train(tiny_model, out, 2)
    before = sorted(p.name for p in out.iterdir())
    assert not (out / "ledger.sqlite-wal").exists()
    summarize(out)
    render([out], tmp_path / "rep")
    assert sorted(p.name for p in out.iterdir()) == before
    assert cli(["ledger", "show", str(out), "--json"]) == 0
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
def test_report_is_written_at_the_end_of_a_cli_run(tiny_model, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", *sum((["--set", o] for o in overrides(tiny_model, out, 2)), [])]
    assert cli(args) == 0
    assert f"report: {out}/report.html" in capsys.readouterr().out
    assert (out / "report.html").stat().st_size > 1000
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
