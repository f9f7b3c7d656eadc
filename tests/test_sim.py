"""The simulator: strategies behave as their papers say on simulated dynamics; fitting recovers a planted model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rollsift.configlib import ConfigError
from rollsift.ledger import MemoryLedger, open_ledger
from rollsift.sim.fit import correlation, fit
from rollsift.sim.model import DifficultyModel, synthetic_embeddings, synthetic_pool
from rollsift.sim.simulate import _parser, main, run, run_configs, simulate


def _one(argv):
    return run(argv)[1]["runs"]


def _by_epoch(series, key):
    out = {}
    for row in series:
        if row[key] is not None:
            out.setdefault(row["epoch"], []).append(row[key])
    return {e: float(np.mean(v)) for e, v in sorted(out.items())}


def test_greso_skip_rate_rises_as_prompts_saturate():
    # 320 prompts, 10 steps an epoch; a fast learner saturates the pool within a few epochs
    (r,) = _one(["--selector", "greso", "--pool", "320", "--steps", "120", "--lr", "0.4"])
    skip = _by_epoch(r["series"], "skip_frac")
    epochs = sorted(skip)
    assert skip[epochs[0]] < 0.1        # no history in the first epoch (a refill may cross into the second)
    assert skip[epochs[-1]] > 0.3 and skip[epochs[-1]] > skip[epochs[1]]
    zero_var = _by_epoch(r["series"], "zero_variance_frac")
    assert r["series"][-1]["mean_success"] > r["series"][0]["mean_success"]
    assert r["skipped"] > 0 and r["skip_frac"] == pytest.approx(r["skipped"] / r["examined"])
    assert all(0.0 <= v <= 1.0 for v in zero_var.values())


def test_dynamic_sampling_rounds_grow_with_the_zero_variance_share():
    (r,) = _one(["--selector", "uniform", "--pool", "320", "--steps", "80", "--lr", "0.4"])
    s = r["series"]
    early, late = s[:10], s[-10:]
    assert np.mean([x["zero_variance_frac"] for x in late]) > np.mean([x["zero_variance_frac"] for x in early])
    assert np.mean([x["rounds"] for x in late]) > np.mean([x["rounds"] for x in early])
    assert r["skip_frac"] == 0.0 and all(x["batch_groups"] <= 32 for x in s)


def test_greso_reaches_uniforms_success_with_fewer_rollouts():
    out = run(["--compare", "uniform,greso", "--pool", "320", "--steps", "100", "--lr", "0.4"])[1]
    u, g = out["runs"]
    assert out["reference"] == "uniform" and out["target"] == pytest.approx(0.99 * u["final_mean_success"])
    assert g["rollouts"] < u["rollouts"] and g["effective_share"] > u["effective_share"]
    assert g["rollouts_to_target"] is not None and g["rollouts_to_target"] < u["rollouts_to_target"]
    assert g["speedup_to_target"] > 1.0 and u["speedup_to_target"] == 1.0


def test_simulation_is_deterministic_for_a_seed():
    argv = ["--compare", "greso,uniform", "--pool", "200", "--steps", "30", "--seed", "3"]
    a, b = _one(argv), _one(argv)
    for x, y in zip(a, b):
        x.pop("seconds"), y.pop("seconds")
    assert a == b
    c = _one(argv[:-1] + ["4"])
    assert c[0]["rollouts"] != a[0]["rollouts"] or c[0]["series"] != a[0]["series"]


def _planted(tmp_path=None):
    """A synthetic run recorded in a ledger, with its planted model and competence trajectory."""
    args = _parser().parse_args(["--selector", "uniform", "--steps", "200", "--batch", "30", "--seed", "1"])
    (cfg,) = run_configs(args)
    prompts, model = synthetic_pool(600, seed=1, easy=0.2, hard=0.2)
    ledger = MemoryLedger() if tmp_path is None else open_ledger(tmp_path / "ledger.sqlite")
    ledger.register_pool([p.id for p in prompts])
    r = simulate(cfg, prompts, model, lr=0.3, ledger=ledger)
    return ledger, model, np.array([0.0] + [row["competence"] for row in r["series"]]), r


@pytest.mark.slow
def test_fit_recovers_a_planted_model_from_a_simulated_ledger():
    ledger, model, competence, _ = _planted()
    f = fit(ledger, practice=False)
    truth = dict(zip(model.ids, zip(model.a, model.s)))
    a, s = np.array([truth[i] for i in f.ids]).T
    assert correlation(f.ease, a) > 0.9
    assert correlation(f.gain, s) > 0.6
    # competence is identified up to the gauge (mean gain 1): compare trajectories, not levels
    assert correlation(f.competence, competence[f.versions]) > 0.98
    assert 0.5 * 0.3 < f.lr < 1.5 * 0.3
    assert f.batch_size == 30 and f.n == 8 and len(f.pool) == 600


@pytest.mark.slow
def test_fit_from_a_sqlite_run_drives_the_simulator(tmp_path):
    ledger, _, _, recorded = _planted(tmp_path)
    ledger.close()
    out = run(["--fit", str(tmp_path), "--selector", "uniform", "--steps", "200", "--batch", "30", "--seed", "1"])[1]
    (sim,) = out["runs"]
    assert out["pool"]["source"] == "fit" and out["pool"]["size"] == 600 and out["pool"]["fit"]["groups"] > 0
    # the fitted simulator spends about what the recorded run spent
    assert 0.8 < sim["rollouts"] / recorded["rollouts"] < 1.25
    assert abs(sim["final_mean_success"] - recorded["final_mean_success"]) < 0.1
    with pytest.raises(ConfigError, match="no ledger.sqlite"):
        run(["--fit", str(tmp_path / "nope")])


def test_dots_runs_on_synthetic_embeddings_that_carry_the_ease():
    _, model = synthetic_pool(3000, seed=0)
    emb = synthetic_embeddings(model, seed=0)
    x = np.c_[emb, np.ones(len(emb))]
    fitted = x @ np.linalg.lstsq(x, model.a, rcond=None)[0]
    assert 0.8 < correlation(fitted, model.a) < 0.97   # about 1 / sqrt(1 + 0.5^2) = 0.89
    (r,) = _one(["--selector", "dots", "--pool", "400", "--steps", "6", "--set", "dots.train_steps=2",
                 "--set", "dots.ref_size=32"])
    assert r["probe_rollouts"] == 3 * 32 * 8 and r["rollouts"] > r["probe_rollouts"]
    assert any("pearson" in row for row in r["series"])


@pytest.mark.slow
def test_a_large_pool_steps_without_per_prompt_loops():
    # a million prompts work the same way (docs/simulate.md has the timing); no timing asserted here
    (r,) = _one(["--selector", "greso", "--pool", "200000", "--steps", "2", "--batch", "512", "--n", "16"])
    assert r["pool"] == 200000 and r["rollouts"] >= 512 * 16
    m = DifficultyModel.from_arrays(["a", "b"], [0.0, 100.0], [1.0, 1.0])
    assert m.success_rows().tolist() == pytest.approx([0.5, 1.0])


def test_config_layering(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('batch_size = 16\nfilters = ["dynamic", "pods"]\n[selector]\ntype = "greso"\np_easy = 0.3\n'
                    '[pods]\nm = 4\n')
    args = _parser().parse_args(["--config", str(toml), "--compare", "uniform,greso,dots", "--set", "dots.mu=4",
                                 "--set", "dynamic.max_rounds=3", "--n", "8"])
    u, g, d = run_configs(args)
    assert (u.selector.type, g.selector.p_easy, d.selector.mu) == ("uniform", 0.3, 4)
    assert u.batch_size == 16 and u.filter_names == ["dynamic", "pods"] and u.filters[1].m == 4
    assert g.filters[0].max_rounds == 3
    (only,) = run_configs(_parser().parse_args(["--config", str(toml), "--filters", ""]))
    assert only.selector.type == "greso" and only.filters == []


def test_bad_names_are_named():
    with pytest.raises(ConfigError, match="not known"):
        main(["--selector", "nope"])
    with pytest.raises(ConfigError, match="not a known filter"):
        main(["--filters", "nope"])
    with pytest.raises(ConfigError, match="not simulated"):
        main(["--selector", "greso", "--set", "dots.mu=3"])
    with pytest.raises(ConfigError, match="unknown key"):
        main(["--selector", "uniform", "--set", "selector.p_easy=0.3"])


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["--compare", "uniform,greso", "--pool", "100", "--steps", "5", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["command"].startswith("rollsift simulate --compare uniform,greso")
    assert [r["selector"] for r in d["runs"]] == ["uniform", "greso"] and len(d["runs"][1]["series"]) == 5
    for key in ("rollouts", "effective_share", "skip_frac", "zero_variance_frac", "rounds_per_step",
                "final_mean_success", "rollouts_to_target", "config"):
        assert key in d["runs"][0]
    assert "greso" in capsys.readouterr().out
