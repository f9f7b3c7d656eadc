"""rollsift compare / report: the smoke preset end to end, reuse of finished runs, the summary's figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rollsift.configlib import ConfigError, dumps_toml, to_dict
from rollsift.measure import compare as cmp
from rollsift.measure.presets import PRESETS, Preset, RunSpec


def _write_run(d: Path, curve: list[tuple[int, float, float, float]]) -> None:
    """A fake run: one evaluated metrics row per (step, accuracy, rollouts_total, train_wall)."""
    d.mkdir(parents=True)
    with open(d / "metrics.jsonl", "w") as f:
        for step, acc, rollouts, wall in curve:
            row = {"step": step, "eval/accuracy": acc, "cost/rollouts_total": rollouts,
                   "cost/gen_tokens_total": 10 * rollouts, "time/train_wall": wall, "cost/effective_share": 0.5}
            f.write(json.dumps(row) + "\n")


class _Cfg:
    def __init__(self, out: Path, steps: int = 100, max_minutes: float | None = None) -> None:
        self.out, self.steps, self.max_minutes = str(out), steps, max_minutes


def _pair(tmp_path: Path, ref_curve, other_curve, seed: int = 0):
    preset = Preset("p", "d", "ref", (RunSpec("ref", ("grpo",)), RunSpec("other", ("grpo",))))
    ref, other = tmp_path / f"ref-s{seed}", tmp_path / f"other-s{seed}"
    _write_run(ref, ref_curve)
    _write_run(other, other_curve)
    return preset, [(preset.runs[0], seed, _Cfg(ref)), (preset.runs[1], seed, _Cfg(other))]


def test_targets_costs_to_target_and_ratios(tmp_path):
    preset, runs = _pair(tmp_path, [(0, 0.40, 0, 0.1), (10, 0.50, 1000, 100), (20, 0.60, 2000, 200)],
                         [(0, 0.40, 0, 0.1), (10, 0.595, 500, 50), (20, 0.61, 1000, 100)])
    s = cmp.summarize(preset, runs, "rollsift compare --preset p", crossing="first")
    assert s["reference_best"]["0"] == 0.60 and s["targets"]["0"] == pytest.approx(0.99 * 0.60)
    by = {r["name"]: r for r in s["runs"]}
    assert by["ref"]["seeds"][0]["to_target"] == {"step": 20, "rollouts": 2000, "gen_tokens": 20000, "train_wall_s": 200}
    assert by["other"]["seeds"][0]["to_target"]["rollouts"] == 500  # 0.595 >= 0.594 at step 10
    assert by["other"]["seeds"][0]["vs_reference"] == pytest.approx({"rollouts": 4.0, "gen_tokens": 4.0, "train_wall_s": 4.0})
    assert by["ref"]["seeds"][0]["vs_reference"] == pytest.approx({"rollouts": 1.0, "gen_tokens": 1.0, "train_wall_s": 1.0})
    assert by["other"]["reached_target"] == 1
    assert by["other"]["mean"]["eval_initial"]["mean"] == 0.40 and by["other"]["mean"]["steps"]["mean"] == 20
    cmp.validate(s)


def test_a_run_that_never_reaches_the_target_reports_null(tmp_path):
    preset, runs = _pair(tmp_path, [(0, 0.4, 0, 0), (10, 0.6, 1000, 100)], [(0, 0.4, 0, 0), (10, 0.5, 1000, 100)])
    s = cmp.summarize(preset, runs, "x", crossing="first")
    slow = s["runs"][1]
    assert slow["seeds"][0]["to_target"] == {"step": None, "rollouts": None, "gen_tokens": None, "train_wall_s": None}
    assert slow["seeds"][0]["vs_reference"] == {"rollouts": None, "gen_tokens": None, "train_wall_s": None}
    assert slow["reached_target"] == 0 and slow["mean"]["to_target_rollouts"] == {
        "mean": None, "lo": None, "hi": None, "std": None, "min": None, "max": None, "n": 0}
    assert slow["ratios"]["rollouts"]["verdict"] == "worse" and slow["ratios"]["rollouts"]["seeds_not_reached"] == 1
    cmp.validate(s)


def test_a_target_reached_before_training_has_no_ratio():
    """Step 0 spends nothing; its wall clock is set-up time, so 'times cheaper' is undefined."""
    at0 = {"step": 0, "rollouts": 0.0, "gen_tokens": 0.0, "train_wall_s": 0.02}
    later = {"step": 10, "rollouts": 100.0, "gen_tokens": 1000.0, "train_wall_s": 5.0}
    assert cmp.ratios(at0, later) == {"rollouts": None, "gen_tokens": None, "train_wall_s": None}
    assert cmp.ratios(later, at0) == {"rollouts": None, "gen_tokens": None, "train_wall_s": None}
    assert cmp.ratios(later, {**later, "rollouts": 50.0})["rollouts"] == 2.0
    assert cmp.target(0.5) == pytest.approx(0.495) and cmp.target(None) is None


def test_several_seeds_have_their_own_targets_and_a_spread(tmp_path):
    preset = Preset("p", "d", "ref", (RunSpec("ref", ("grpo",)), RunSpec("other", ("grpo",))))
    curves = {("ref", 0): [(0, 0.4, 0, 0), (10, 0.6, 1000, 100)], ("ref", 1): [(0, 0.4, 0, 0), (10, 0.5, 1000, 100)],
              ("other", 0): [(0, 0.4, 0, 0), (10, 0.6, 500, 50)], ("other", 1): [(0, 0.4, 0, 0), (10, 0.5, 250, 25)]}
    runs = []
    for spec in preset.runs:
        for seed in (0, 1):
            _write_run(tmp_path / f"{spec.name}-s{seed}", curves[spec.name, seed])
            runs.append((spec, seed, _Cfg(tmp_path / f"{spec.name}-s{seed}")))
    s = cmp.summarize(preset, runs, "x", target_mode="per-seed", crossing="first")
    assert s["seeds"] == [0, 1]
    assert s["targets"] == pytest.approx({"0": 0.594, "1": 0.495})
    other = s["runs"][1]
    assert [x["vs_reference"]["rollouts"] for x in other["seeds"]] == [2.0, 4.0]
    st = other["mean"]["vs_reference_rollouts"]
    assert (st["mean"], st["min"], st["max"], st["n"]) == (3.0, 2.0, 4.0, 2)
    assert st["std"] == pytest.approx(2 ** 0.5)  # sample std of (2, 4)
    assert other["mean"]["eval_best"]["mean"] == pytest.approx(0.55)
    cmp.validate(s)


def test_finished_detection(tmp_path):
    cfg = _Cfg(tmp_path, steps=10, max_minutes=1.0)
    assert not cmp.is_finished(cfg, [])
    assert cmp.is_finished(cfg, [{"step": 10, "eval/accuracy": 0.5}])
    assert not cmp.is_finished(cfg, [{"step": 10}])                                   # not evaluated at the end
    assert not cmp.is_finished(cfg, [{"step": 5, "eval/accuracy": 0.5, "time/train_wall": 30.0}])
    assert cmp.is_finished(cfg, [{"step": 5, "eval/accuracy": 0.5, "time/train_wall": 61.0}])  # out of time
    assert not cmp.is_finished(_Cfg(tmp_path, steps=10), [{"step": 5, "eval/accuracy": 0.5, "time/train_wall": 1e9}])


def test_run_status_reuses_resumes_or_trains(tmp_path):
    """Same config + finished -> reuse; same config + checkpoint -> resume; any config change -> train."""
    preset = PRESETS["smoke"]
    [(_, _, cfg)] = cmp.plan(preset, str(tmp_path / "runs"), 1, ["dynamic"], [])
    d = Path(cfg.out)
    assert cmp.run_status(cfg) == "train"                                              # nothing there
    d.mkdir(parents=True)
    (d / "config.toml").write_text(dumps_toml(to_dict(cfg)))
    rows = [{"step": 0, "eval/accuracy": 0.5}, {"step": 4, "eval/accuracy": 0.5}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cmp.run_status(cfg) == "train"                                              # unfinished, no checkpoint
    (d / "checkpoints" / "step_000004").mkdir(parents=True)
    (d / "checkpoints" / "step_000004" / "state.pt").write_bytes(b"")     # what checkpoint.latest requires
    (d / "checkpoints" / "latest").write_text("step_000004")
    assert cmp.run_status(cfg) == "resume"
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": cfg.steps, "eval/accuracy": 0.6}) + "\n")
    assert cmp.run_status(cfg) == "finished"
    [(_, _, changed)] = cmp.plan(preset, str(tmp_path / "runs"), 1, ["dynamic"], ["learner.lr=1e-3"])
    assert changed.out == cfg.out and cmp.run_status(changed) == "train"


def test_resolved_config_is_exactly_the_documented_override_order(tmp_path):
    from rollsift.config import build_config

    preset = PRESETS["testbed"]
    [(spec, _, cfg)] = [r for r in cmp.plan(preset, "bench/testbed/runs", 1, ["pods"], ["threads=1"]) if r[0].name == "pods"]
    files = [str(Path(cmp.__file__).parent.parent / "configs" / "pods.toml")]
    want = build_config(files, [*preset.common, *spec.overrides, "threads=1", "out=bench/testbed/runs/pods-s0", "seed=0"])
    assert to_dict(cfg) == to_dict(want) and cfg.out == "bench/testbed/runs/pods-s0"


def test_bad_preset_and_bad_only_name_the_choices(capsys):
    with pytest.raises(ConfigError, match="smoke"):
        cmp.main(["--preset", "nope", "--out", "/tmp/x"])
    with pytest.raises(ConfigError, match="not runs of preset"):
        cmp.plan(PRESETS["greso"], "/tmp/x/runs", 1, ["pods"], [])
    from rollsift.cli import main

    assert main(["compare", "--preset", "nope", "--out", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a preset" in err and all(name in err for name in PRESETS)


def test_only_keeps_the_reference_first_and_seeds_multiply():
    runs = cmp.plan(PRESETS["testbed"], "bench/runs", 2, ["pods"], [])
    assert [(s.name, seed) for s, seed, _ in runs] == [("dynamic", 0), ("dynamic", 1), ("pods", 0), ("pods", 1)]
    assert runs[3][2].out == "bench/runs/pods-s1" and runs[3][2].seed == 1 and runs[3][2].n == 16


def test_smoke_preset_covers_every_strategy():
    cfgs = {s.name: c for s, _, c in cmp.plan(PRESETS["smoke"], "/tmp/x/runs", 1, None, [])}
    assert type(cfgs["greso"].selector).__name__ == "GresoConfig"
    assert type(cfgs["dots_replay"].selector).__name__ == "DotsConfig" and cfgs["dots_replay"].replay.enabled
    assert cfgs["pods"].filter_names == ["pods"] and cfgs["dynamic"].filter_names == ["dynamic"] and cfgs["grpo"].filters == []
    assert type(cfgs["prune"].pruner).__name__ == "QualityHeadConfig"
    assert cfgs["best"].replay.enabled and all(c.threads == 1 and c.device == "cpu" for c in cfgs.values())


@pytest.mark.slow
def test_smoke_preset_end_to_end_then_reuse(tmp_path, capsys):
    out = tmp_path / "cmp"
    t0 = time.perf_counter()
    assert cmp.main(["--preset", "smoke", "--out", str(out)]) == 0
    first = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    cmp.validate(summary)
    assert {r["name"] for r in summary["runs"]} == {s.name for s in PRESETS["smoke"].runs}
    assert summary["runs"][0]["name"] == "dynamic" == summary["reference"]
    assert all(s["action"] == "trained" for r in summary["runs"] for s in r["seeds"])
    for r in summary["runs"]:
        s = r["seeds"][0]
        assert s["steps"] == 8 and s["rollouts"] > 0 and s["eval_best"] is not None and len(s["curve"]) == 3
    by = {r["name"]: r["seeds"][0] for r in summary["runs"]}
    assert by["grpo"]["rollouts"] == 8 * 4 * 4
    assert by["pods"]["rollouts"] == 8 * 4 * 8                  # n = 8 generated per prompt, m = 4 trained
    assert by["dynamic"]["to_target"]["step"] is not None        # the reference reaches its own target
    page = (out / "report.html").read_text()
    # accuracy, zero-variance, GRESO, posterior, DOTS, pruning, staleness (groups carried over by dynamic
    # sampling, replayed by 'best' and 'dots_replay'), and one heat map per run
    assert page.count("data:image/png;base64,") == 7 + len(PRESETS["smoke"].runs)
    assert "Staleness of the groups trained on" in page
    for title in ("GRESO", "Posterior selector", "DOTS", "Pruning", "Outcome heat map: prune-s0", "Realism card"):
        assert f"<h2>{title}</h2>" in page
    assert "dynamic (ref)" in page
    print(f"\nsmoke compare: {first:.1f}s")

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()}
    capsys.readouterr()
    assert cmp.main(["--preset", "smoke", "--out", str(out), "--no-report"]) == 0
    log = capsys.readouterr().out
    assert log.count(": reused (") == len(PRESETS["smoke"].runs) and ": train (" not in log
    again = json.loads((out / "summary.json").read_text())
    assert all(s["action"] == "reused" for r in again["runs"] for s in r["seeds"])
    assert {p: p.stat().st_mtime_ns for p in before} == before

    assert cmp.main(["--preset", "smoke", "--out", str(out), "--only", "greso", "--no-report"]) == 0
    only = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in only["runs"]] == ["dynamic", "greso"]
    assert only["targets"] == summary["targets"]

    from rollsift.measure.report import main as report_main

    runs = [str(out / "runs" / "greso-s0"), str(out / "runs" / "prune-s0")]
    assert report_main([*runs, "--out", str(tmp_path / "rep")]) == 0
    rep = (tmp_path / "rep" / "report.html").read_text()
    # accuracy, zero-variance, GRESO, pruning, staleness (groups carried over by dynamic sampling), 2 heat maps
    assert rep.count("data:image/png;base64,") == 7
    assert "<h2>DOTS</h2>" not in rep                   # no run has DOTS metrics: left out quietly
    assert report_main([*runs, "--out", str(tmp_path / "rep2"), "--summary", str(out / "summary.json")]) == 0
    assert "greso" in (tmp_path / "rep2" / "report.html").read_text()


def test_report_needs_run_directories(tmp_path, capsys):
    from rollsift.measure.report import main as report_main

    assert report_main([str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_report_of_runs_without_ledger_or_strategy_metrics(tmp_path):
    from rollsift.measure.report import labels, render

    _, runs = _pair(tmp_path, [(0, 0.4, 0, 0), (10, 0.6, 1000, 100)], [(0, 0.4, 0, 0), (10, 0.5, 1000, 100)])
    page = render([c.out for _, _, c in runs], tmp_path / "rep").read_text()
    assert page.count("data:image/png;base64,") == 2  # accuracy; effective share (the only per-step metric here)
    assert "Held-out accuracy against cost" in page and not any(t in page for t in ("GRESO", "DOTS", "Pruning", "heat map"))
    assert labels(["a/runs/x", "b/runs/x", "b/runs/y"]) == ["a/runs/x", "b/runs/x", "b/runs/y"]
    assert labels(["a/runs/x", "a/runs/y"]) == ["x", "y"]


def test_a_shared_target_interpolated_crossings_and_verdicts(tmp_path):
    """One target for all seeds (0.99 x the reference's mean best); costs read where the line between
    two evaluations crosses it; "better" only where the interval of the paired ratio excludes 1."""
    preset = Preset("p", "d", "ref", (RunSpec("ref", ("grpo",)), RunSpec("fast", ("grpo",)),
                                      RunSpec("same", ("grpo",))))
    runs = []
    for seed, (best, jitter) in enumerate([(0.60, 1.00), (0.62, 1.05), (0.58, 0.95)]):
        curves = {"ref": [(0, 0.40, 0, 0), (10, 0.50, 1000, 100), (20, best, 2000, 200)],
                  "fast": [(0, 0.40, 0, 0), (10, 0.62, 1000 / 2 * jitter, 50), (20, 0.63, 2000 / 2, 100)],
                  "same": [(0, 0.40, 0, 0), (10, 0.50, 1000 * jitter, 100), (20, best, 2000 * jitter, 200)]}
        for spec in preset.runs:
            d = tmp_path / f"{spec.name}-s{seed}"
            _write_run(d, curves[spec.name])
            runs.append((spec, seed, _Cfg(d)))
    s = cmp.summarize(preset, runs, "x")
    assert s["target_mode"] == "shared" and s["target"] == pytest.approx(0.99 * 0.60)
    assert set(s["targets"].values()) == {s["target"]}
    by = {r["name"]: r for r in s["runs"]}
    ref0 = by["ref"]["seeds"][0]["to_target"]  # 0.5 at 1000 -> 0.6 at 2000: crosses 0.594 at 1940
    assert ref0["rollouts"] == pytest.approx(1940) and ref0["step"] == 20
    assert by["ref"]["seeds"][2]["to_target"]["step"] is None  # best 0.58 < 0.594: never, and said so
    assert by["fast"]["ratios"]["rollouts"]["verdict"] == "better"
    assert by["fast"]["ratios"]["rollouts"]["lo"] > 1.0 and by["fast"]["ratios"]["rollouts"]["n"] == 2
    assert by["same"]["ratios"]["rollouts"]["verdict"] == "no difference shown"
    assert by["ref"]["mean"]["eval_best"]["lo"] < 0.60 < by["ref"]["mean"]["eval_best"]["hi"]
    head, rows = __import__("rollsift.measure.tables", fromlist=["x"]).headline_rows(s)
    fast = dict(zip(head, rows[1]))
    assert "better" in fast["rollouts x"] and fast["reached"] == "3/3"
    cmp.validate(s)


@pytest.mark.slow
def test_jobs_2_gives_the_same_summary_as_jobs_1(tmp_path):
    def figures(summary):
        keep = ("eval_initial", "eval_best", "eval_final", "rollouts", "gen_tokens", "informative_rollouts", "steps")
        return [(r["name"], s["seed"], *(s[k] for k in keep), s["to_target"]["rollouts"], s["curve"] and
                 [(c["step"], c["accuracy"], c["rollouts"]) for c in s["curve"]])
                for r in summary["runs"] for s in r["seeds"]]

    out = {}
    for jobs in (1, 2):
        d = tmp_path / f"j{jobs}"
        t0 = time.perf_counter()
        assert cmp.main(["--preset", "smoke", "--out", str(d), "--only", "greso", "--seeds", "2", "--jobs", str(jobs),
                         "--no-report"]) == 0
        out[jobs] = (json.loads((d / "summary.json").read_text()), time.perf_counter() - t0)
        assert len(list((d / "runs").glob("*.log"))) == 4  # each run's own output
    assert figures(out[1][0]) == figures(out[2][0])
    print(f"\n--jobs 1: {out[1][1]:.0f}s, --jobs 2: {out[2][1]:.0f}s")


def test_two_core_runs_take_both_cores_and_run_alone(tmp_path, monkeypatch):
    """--jobs 2: one-thread runs go side by side on their own cores; a run with threads=2 or an async
    run waits until both cores are free and is pinned to both (its processes pin themselves)."""
    import os

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    events = []

    class Proc:
        def __init__(self, name, cores):
            self.name, self.cores, self.returncode, self.polls = name, cores, 0, 0

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            events.append(("end", self.name))
            return 0

    def start(cfg, status, cores):
        name = Path(cfg.out).name
        events.append(("start", name, tuple(sorted(cores))))
        return Proc(name, cores)

    monkeypatch.setattr(cmp, "_start", start)
    monkeypatch.setattr(cmp, "check_run", lambda cfg: ("train", "no run"))
    monkeypatch.setattr("rollsift.trainer.summary.summarize_run", lambda out: {"eval_best": 0.5, "steps": 1})
    preset = Preset("t", "t", "a", (RunSpec("a", ("grpo",)), RunSpec("b", ("grpo",)),
                                    RunSpec("two", ("grpo",), ("threads=2",)), RunSpec("as", ("async",)),
                                    RunSpec("c", ("grpo",))), ("threads=1",))
    runs = cmp.plan(preset, str(tmp_path / "runs"), 1, None, [])
    cmp.execute(runs, jobs=2)
    cores = sorted(os.sched_getaffinity(0))[:2]
    starts = {e[1]: e[2] for e in events if e[0] == "start"}
    assert starts["a-s0"] != starts["b-s0"] and len(starts["a-s0"]) == 1
    assert starts["two-s0"] == starts["as-s0"] == tuple(cores)
    order = [e[:2] for e in events]
    # the two-core runs start only after everything before them ended, and nothing runs beside them
    for wide in ("two-s0", "as-s0"):
        i = order.index(("start", wide))
        started = {n for k, n in order[:i] if k == "start"}
        ended = {n for k, n in order[:i] if k == "end"}
        assert started == ended
        assert order[i + 1] == ("end", wide)
    assert cmp.width(runs[3][2]) == 2 and cmp.width(runs[0][2]) == 1


def test_accuracy_at_equal_rollout_budgets_paired_by_seed(tmp_path, capsys):
    """Each seed's run is read at 25/50/100% of its reference's rollouts (linear between evaluations);
    the difference is paired by seed; a run that stopped short of a budget is counted, not guessed."""
    preset = Preset("p", "d", "ref", (RunSpec("ref", ("grpo",)), RunSpec("other", ("grpo",))))
    curves = {("ref", s): [(0, 0.4, 0, 0), (10, 0.5, 1000, 100), (20, 0.6, 2000, 200)] for s in (0, 1, 2)}
    for s, lift in ((0, 0.10), (1, 0.12), (2, 0.08)):  # more accuracy per rollout, but stops at 1500
        curves["other", s] = [(0, 0.4, 0, 0), (10, 0.5 + lift, 500, 50), (20, 0.6 + lift, 1500, 100)]
    runs = []
    for spec in preset.runs:
        for seed in (0, 1, 2):
            _write_run(tmp_path / f"{spec.name}-s{seed}", curves[spec.name, seed])
            runs.append((spec, seed, _Cfg(tmp_path / f"{spec.name}-s{seed}")))
    s = cmp.summarize(preset, runs, "x")
    cmp.validate(s)
    quarter, half, full = s["runs"][1]["at_budget"]
    assert [quarter["fraction"], half["fraction"], full["fraction"]] == [0.25, 0.5, 1.0]
    # at 500 rollouts the reference is at 0.45 and the other at 0.5 + lift: +0.15 on average
    assert quarter["accuracy"]["mean"] == pytest.approx(0.60)
    assert quarter["difference"]["mean"] == pytest.approx(0.15) and quarter["difference"]["verdict"] == "better"
    # at 1000: the other is half-way from 0.5 + lift to 0.6 + lift, the reference at 0.5
    assert half["difference"]["mean"] == pytest.approx(0.15) and half["difference"]["n"] == 3
    assert full["accuracy"]["n"] == 0 and full["difference"]["seeds_not_reached"] == 3
    assert full["difference"]["verdict"] == "not measured"
    assert s["runs"][0]["at_budget"][0]["difference"]["verdict"] == "no difference shown"  # itself: 0 +- 0
    cmp.print_table(s)
    assert "not reached (3 seeds)" in capsys.readouterr().out
    assert cmp.accuracy_at([{"rollouts": 0, "accuracy": 0.4}, {"rollouts": 100, "accuracy": 0.6}], 25) == pytest.approx(0.45)


def test_realistic_preset_is_the_long_horizon_at_the_recalibrated_settings():
    """The recalibrated testbed (docs/testbed.md): lr 2e-5, training and evaluation at T = 1.5, 300 steps."""
    cfgs = {s.name: c for s, _, c in cmp.plan(PRESETS["realistic"], "/tmp/x/runs", 1, None, [])}
    assert set(cfgs) == {"grpo", "dynamic", "greso", "posterior"} and PRESETS["realistic"].reference == "dynamic"
    for c in cfgs.values():
        assert c.learner.lr == 2e-5 and c.sampling.temperature == 1.5 and c.eval.temperature == 1.5
        assert c.steps == 300 and c.threads == 1
    assert cfgs["grpo"].filters == [] and all(cfgs[k].filter_names == ["dynamic"] for k in ("dynamic", "greso", "posterior"))
    assert type(cfgs["greso"].selector).__name__ == "GresoConfig"
    # a user's --set still wins over the preset's
    [(_, _, c)] = cmp.plan(PRESETS["realistic"], "/tmp/x/runs", 1, ["dynamic"], ["sampling.temperature=1.0"])
    assert c.sampling.temperature == 1.0 and c.learner.lr == 2e-5
