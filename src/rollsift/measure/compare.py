"""``rollsift compare --preset NAME --out DIR [--seeds K --jobs J]``: run a preset's configurations
over seeds, in parallel, and say which differences the seeds support.

Each run of the preset (``rollsift.measure.presets``) and seed is an ordinary training run in
``RUNS/<name>-s<seed>/`` (RUNS = ``--runs``, default ``DIR/runs``); its config is exactly

    build_config([run files...], [*preset.common, *run.overrides, *--set items,
                                  "out=RUNS/<name>-s<seed>", "seed=<seed>"])

so the same command again (or another preset pointed at the same RUNS) reuses finished runs, resumes
unfinished ones from their last checkpoint, and trains the rest. Each run is its own process
(``rollsift train``), pinned to as many cores as it has threads (``threads``; an asynchronous run
takes two, one per process); ``--jobs J`` lets runs use J cores at once (2 here: two one-thread runs
side by side, or one two-core run alone). A run's results do not depend on how many run beside it
(``--jobs 2`` gives the same summary as ``--jobs 1``, times aside).

The target is shared: 0.99 x the reference run's best held-out accuracy, averaged over seeds
(``--target per-seed``: each seed's own reference best). Every run reports, per seed, the rollouts,
generated tokens and training wall time it had spent when its held-out accuracy first reached the
target, read between evaluations by linear interpolation (``--crossing first``: at the first
evaluation at or above it); a seed that never reached it is reported as such. Every figure gets
its mean and 95% t-interval over seeds; every cost ratio against the reference (reference cost /
run cost, paired by seed) its geometric mean and 95% interval, and the verdict "better" or
"worse" only where that interval excludes 1 (``rollsift.measure.stats``). ``DIR/summary.json``
follows ``summary.schema.json`` (docs/measure.md); ``DIR/report.html`` is rendered by
``rollsift.measure.report``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..configlib import ConfigError
from ..errors import UserError
from .presets import PRESETS, Preset, RunSpec
from .stats import mean_interval, ratio_interval

TARGET_FRACTION = 0.99
SCHEMA = Path(__file__).with_name("summary.schema.json")
_COSTS = ("rollouts", "gen_tokens", "train_wall_s")
# per-seed figures summarised across seeds in each run's "mean" (docs/measure.md)
_STATS = ("eval_initial", "eval_best", "eval_final", "rollouts", "gen_tokens", "train_wall_s", "effective_share",
          "steps", "train_s_per_step", "step_wall_s")
# per-step costs compared with the reference's, paired by seed, in each run's "per_step" (a speed ratio)
_PER_STEP = ("train_s_per_step", "step_wall_s")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift compare",
                                description="Run a preset's configurations with the same seeds; "
                                            "write summary.json and report.html.",
                                epilog="Presets, reuse/resume and the summary.json fields: docs/measure.md")
    p.add_argument("--preset", required=True, help=f"one of {', '.join(sorted(PRESETS))}")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="runs go to DIR/runs/, then DIR/summary.json and DIR/report.html")
    p.add_argument("--runs", default=None, metavar="RUNS_DIR",
                   help="where the runs live (default: DIR/runs); point several presets at one set of runs")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the preset's)")
    p.add_argument("--jobs", type=int, default=1,
                   help="cores to use at once: one-thread runs side by side, each pinned to its own core; a run "
                        "with threads=2 or async takes two (default 1; 2 on this machine)")
    p.add_argument("--target", choices=("shared", "per-seed"), default="shared",
                   help="one target for all seeds (0.99 x the reference's mean best; default) or one per seed")
    p.add_argument("--crossing", choices=("interpolate", "first"), default="interpolate",
                   help="cost to target read between evaluations (default) or at the first one above it")
    p.add_argument("--only", default=None, metavar="A,B",
                   help="run only these runs of the preset (the reference is always kept)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key in every run")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--dry-run", action="store_true", help="print what would be trained, reused or resumed, and stop")
    return p


def config_files(spec: RunSpec) -> list[str]:
    """Packaged run files by name (``src/rollsift/configs/NAME.toml``), or paths as given."""
    base = Path(__file__).resolve().parent.parent / "configs"
    out = []
    for c in spec.configs:
        path = base / f"{c}.toml"
        if not path.is_file() and not Path(c).is_file():
            raise ConfigError(f"run {spec.name!r}: config {c!r} is neither a packaged run file ({path}) nor a file")
        out.append(str(path if path.is_file() else Path(c)))
    return out


def run_dir(runs: str, name: str, seed: int) -> str:
    """``RUNS/<name>-s<seed>``, as a string kept relative if RUNS is (it is part of the config)."""
    return f"{runs.rstrip('/')}/{name}-s{seed}"


def resolve_run(preset: Preset, spec: RunSpec, runs: str, seed: int, sets: Sequence[str] = ()) -> Any:
    from ..config import build_config

    return build_config(config_files(spec), [*preset.common, *spec.overrides, *sets,
                                             f"out={run_dir(runs, spec.name, seed)}", f"seed={seed}"])


def check_run(cfg: Any) -> tuple[str, str]:
    """(status, why): 'finished' (same config, ran to its end: reuse), 'resume' (same config, has a
    checkpoint) or 'train' (from scratch, overwriting whatever is in the directory)."""
    from ..metrics_file import read_metrics

    d = Path(cfg.out)
    if not (d / "config.toml").is_file():
        return "train", "new run"
    if not _same_config(cfg):
        return "train", "config.toml differs from the resolved config: overwriting the run"
    if (d / "metrics.jsonl").is_file() and is_finished(cfg, read_metrics(d)):
        return "finished", "same config, finished"
    from ..trainer.checkpoint import latest

    if latest(d) is not None:  # the checkpoint `train(resume=True)` would restore
        return "resume", "same config, unfinished: resuming from its last checkpoint"
    return "train", "same config, unfinished, no checkpoint: starting over"


def run_status(cfg: Any) -> str:
    return check_run(cfg)[0]


def _same_config(cfg: Any) -> bool:
    """The saved config.toml, read back as a RunConfig (keys a later rollsift added take their defaults),
    equals the resolved one."""
    from ..config import RunConfig
    from ..configlib import dumps_toml, load_toml, loads_toml, to_dict

    try:
        saved = RunConfig.from_data(load_toml(Path(cfg.out) / "config.toml"))
    except ConfigError:
        return False
    return loads_toml(dumps_toml(to_dict(saved))) == loads_toml(dumps_toml(to_dict(cfg)))


def is_finished(cfg: Any, rows: Sequence[dict]) -> bool:
    """The last metrics row was evaluated and ended the run (all steps, or the time budget)."""
    if not rows or rows[-1].get("eval/accuracy") is None:
        return False
    last = rows[-1]
    if int(last["step"]) >= cfg.steps:
        return True
    return cfg.max_minutes is not None and float(last.get("time/train_wall", 0.0)) >= cfg.max_minutes * 60


def plan(preset: Preset, runs_dir: str, seeds: int, only: Sequence[str] | None,
         sets: Sequence[str]) -> list[tuple[RunSpec, int, Any]]:
    """(run, seed, resolved config) for every run to compare; the reference run first."""
    names = [s.name for s in preset.runs]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: not runs of preset {preset.name!r}; choose from {names}")
        keep = set(only) | {preset.reference}
        specs = [s for s in preset.runs if s.name in keep]
    else:
        specs = list(preset.runs)
    specs.sort(key=lambda s: s.name != preset.reference)
    return [(spec, seed, resolve_run(preset, spec, runs_dir, seed, sets)) for spec in specs for seed in range(seeds)]


class CompareError(UserError):
    """Some runs of a comparison failed; their logs are named."""

    exit_code = 1


def execute(runs: Sequence[tuple[RunSpec, int, Any]], dry_run: bool = False, jobs: int = 1) -> dict[str, str]:
    """Train, resume or reuse each run, one status line each; returns run dir -> 'trained' | 'resumed' | 'reused'.

    Runs that need training go to ``jobs`` worker slots, each a ``rollsift train`` process pinned to its
    own core with one thread (``RUNS/<name>-s<seed>.log`` holds its output)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    done, todo = {}, []
    for spec, seed, cfg in runs:
        status, why = check_run(cfg)
        action = {"finished": "reused", "resume": "resumed", "train": "trained"}[status]
        verb = {"finished": "reused", "resume": "resume", "train": "train"}[status]
        print(f"[compare] {spec.name} seed {seed}: {verb} ({cfg.out}; {why})", flush=True)
        done[cfg.out] = action
        if status != "finished":
            todo.append((spec, seed, cfg, status))
    if dry_run or not todo:
        return done
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if jobs > len(cores):
        print(f"[compare] warning: --jobs {jobs} on {len(cores)} cores: runs will share cores and time each other",
              flush=True)
    slots: list[Any] = [None] * jobs  # slot i runs on core cores[i % len(cores)]; a run takes width(cfg) slots
    failed = []
    queue = list(todo)
    while queue or any(slots):
        if queue:  # in order: the next run starts once it has all the slots it needs
            spec, seed, cfg, status = queue[0]
            free = [i for i in range(jobs) if slots[i] is None]
            need = min(width(cfg), jobs)
            if len(free) >= need:
                queue.pop(0)
                mine = free[:need]
                item = [_start(cfg, status, {cores[i % len(cores)] for i in mine}), (spec, seed, cfg),
                        time.perf_counter(), sorted({cores[i % len(cores)] for i in mine})]
                for i in mine:
                    slots[i] = item
                continue
        for item in {id(x): x for x in slots if x is not None}.values():
            proc, (spec, seed, cfg), t0, used = item
            if proc.poll() is None:
                continue
            slots = [None if x is item else x for x in slots]
            if proc.returncode != 0:
                failed.append(f"{spec.name} seed {seed} ({_log(cfg)})")
                print(f"[compare] {spec.name} seed {seed}: FAILED (exit {proc.returncode}); see {_log(cfg)}", flush=True)
                continue
            from ..trainer.summary import summarize_run

            s = summarize_run(cfg.out)
            best = "-" if s["eval_best"] is None else f"{s['eval_best']:.3f}"
            where = f"core {used[0]}" if len(used) == 1 else f"cores {','.join(map(str, used))}"
            print(f"[compare] {spec.name} seed {seed}: {done[cfg.out]} in {time.perf_counter() - t0:.0f}s on {where}, "
                  f"{s['steps']} steps, best held-out accuracy {best}", flush=True)
        time.sleep(0.2)
    if failed:
        raise CompareError(f"{len(failed)} run(s) failed: {'; '.join(failed)}. Fix the cause and run the same "
                           f"command again: finished runs are reused and unfinished ones resumed")
    return done


def width(cfg: Any) -> int:
    """Cores a run needs: its thread count, or two for an asynchronous run (one per process)."""
    return 2 if cfg.async_.enabled else max(1, int(cfg.threads))


def _log(cfg: Any) -> str:
    return f"{str(cfg.out).rstrip('/')}.log"


def _start(cfg: Any, status: str, cores: set[int]) -> subprocess.Popen:
    """``rollsift train`` on the run's resolved config, in its own process, pinned to ``cores``."""
    from ..configlib import dumps_toml, to_dict

    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = out.parent / f".{out.name}.toml"  # the resolved config, read back by build_config as it is
    spec.write_text(dumps_toml(to_dict(cfg)))
    cmd = [sys.executable, "-m", "rollsift", "train", "--config", str(spec), "--no-report",
           "--resume" if status == "resume" else "--overwrite"]
    threads = str(max(1, int(cfg.threads)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    pin = (lambda: os.sched_setaffinity(0, cores)) if hasattr(os, "sched_setaffinity") else None
    with open(_log(cfg), "a") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=pin)


def ratios(ref: dict[str, Any], run: dict[str, Any]) -> dict[str, float | None]:
    """Reference cost to target / this run's cost, per cost (2.0 = half the reference's cost).

    None for every cost when either run never reached the target or reached it before its first
    training step (step 0: nothing was spent, and the step-0 wall is set-up time, not training).
    """
    if not ref.get("step") or not run.get("step"):
        return {k: None for k in _COSTS}
    return {k: (ref[k] / run[k] if ref.get(k) and run.get(k) else None) for k in _COSTS}


def summarize(preset: Preset, runs: Sequence[tuple[RunSpec, int, Any]], command: str,
              actions: dict[str, str] | None = None, target_mode: str = "shared",
              crossing: str = "interpolate") -> dict[str, Any]:
    """summary.json as a dict (see summary.schema.json and docs/measure.md)."""
    from ..trainer.summary import summarize_run

    if target_mode not in ("shared", "per-seed"):
        raise ConfigError(f"target mode must be 'shared' or 'per-seed', got {target_mode!r}")
    if crossing not in ("interpolate", "first"):
        raise ConfigError(f"crossing must be 'interpolate' or 'first', got {crossing!r}")
    shared = target_mode == "shared"
    seeds = sorted({seed for _, seed, _ in runs})
    ref_best = {seed: summarize_run(cfg.out)["eval_best"] for spec, seed, cfg in runs if spec.name == preset.reference}
    if not ref_best:
        raise ConfigError(f"the reference run {preset.reference!r} of preset {preset.name!r} is not among the runs")
    bests = [b for b in ref_best.values() if b is not None]
    common = target(sum(bests) / len(bests)) if bests else None
    targets = {seed: (common if shared else target(ref_best.get(seed))) for seed in seeds}
    per_run: dict[str, dict[str, Any]] = {}
    for spec, seed, cfg in runs:
        s = summarize_run(cfg.out, targets[seed], interpolate=crossing == "interpolate")
        s["seed"], s["target"] = seed, targets[seed]
        s["action"] = (actions or {}).get(cfg.out)
        s.setdefault("to_target", {"step": None, "rollouts": None, "gen_tokens": None, "train_wall_s": None})
        per_run.setdefault(spec.name, {"name": spec.name, "configs": list(spec.configs),
                                       "overrides": list(spec.overrides), "seeds": []})["seeds"].append(s)
    ref_seeds = {s["seed"]: s for s in per_run[preset.reference]["seeds"]}
    for entry in per_run.values():
        for s in entry["seeds"]:
            s["vs_reference"] = ratios(ref_seeds.get(s["seed"], {}).get("to_target", {}), s["to_target"])
        seeds_ = entry["seeds"]
        entry["mean"] = {k: mean_interval([s[k] for s in seeds_]) for k in _STATS}
        entry["mean"].update({f"to_target_{k}": mean_interval([s["to_target"][k] for s in seeds_]) for k in _COSTS})
        entry["mean"].update({f"vs_reference_{k}": mean_interval([s["vs_reference"][k] for s in seeds_])
                              for k in _COSTS})
        entry["reached_target"] = sum(s["to_target"]["step"] is not None for s in seeds_)
        entry["ratios"] = {k: _ratio(ref_seeds, seeds_, k) for k in _COSTS}
        entry["per_step"] = {k: ratio_interval([ref_seeds.get(s["seed"], {}).get(k) for s in seeds_],
                                               [s.get(k) for s in seeds_]) for k in _PER_STEP}
        entry["at_budget"] = at_budgets(ref_seeds, seeds_)
    return {
        "schema": "rollsift.compare/2",
        "preset": preset.name,
        "description": preset.description,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "reference": preset.reference,
        "target_fraction": TARGET_FRACTION,
        "target_mode": target_mode,
        "crossing": crossing,
        "target": common if shared else None,
        "reference_best": {str(k): v for k, v in sorted(ref_best.items())},
        "targets": {str(k): v for k, v in sorted(targets.items())},
        "seeds": seeds,
        "runs": list(per_run.values()),
    }


def _ratio(ref_seeds: dict[int, dict], seeds: Sequence[dict], cost: str) -> dict[str, Any]:
    """The reference's cost to target over the run's, paired by seed, with its interval and verdict. A
    seed where the reference reached the target and the run did not is counted (``seeds_not_reached``)
    and forbids "better": the run's true cost there is unknown and higher than it spent."""
    pairs = [(ref_seeds.get(s["seed"], {}).get("to_target", {}).get(cost), s["to_target"][cost]) for s in seeds]
    pairs = [(a, b) for a, b in pairs if (a or 0) > 0 or (b or 0) > 0]  # reached at step 0: nothing spent
    r = ratio_interval([a for a, _ in pairs], [b for _, b in pairs])
    r["seeds_not_reached"] = sum(a is not None and b is None for a, b in pairs)
    if r["seeds_not_reached"] and r["verdict"] == "better":
        r["verdict"] = "no difference shown"
    if r["n"] == 0 and r["seeds_not_reached"]:
        r["verdict"] = "worse"  # the reference got there on every measured seed, the run on none
    return r


# Held-out accuracy at equal rollouts: fractions of the reference's rollouts (same seed, at its last evaluation).
BUDGETS = (0.25, 0.5, 1.0)


def accuracy_at(curve: Sequence[dict], rollouts: float) -> float | None:
    """Held-out accuracy at ``rollouts`` spent, on the straight line between the evaluations around it;
    None past the run's last evaluation (it never spent that much)."""
    pts = [(c["rollouts"], c["accuracy"]) for c in curve]
    if not pts or rollouts > pts[-1][0]:
        return None
    if rollouts <= pts[0][0]:
        return pts[0][1]
    for (r0, a0), (r1, a1) in zip(pts, pts[1:]):
        if r0 <= rollouts <= r1:
            return a0 if r1 == r0 else a0 + (a1 - a0) * (rollouts - r0) / (r1 - r0)
    return None


def at_budgets(ref_seeds: dict[int, dict], seeds: Sequence[dict]) -> list[dict[str, Any]]:
    """Per budget (``BUDGETS`` x the reference's rollouts, per seed): the run's held-out accuracy there and its
    difference from the reference's, paired by seed, with a 95% interval and a verdict ("better" / "worse"
    only where the interval excludes 0). A seed whose run ended before spending the budget is counted in
    ``seeds_not_reached``: a figure at equal budgets needs both runs to have spent it."""
    out = []
    for frac in BUDGETS:
        accs, diffs, missing = [], [], 0
        for s in seeds:
            ref_curve = ref_seeds.get(s["seed"], {}).get("curve") or []
            if not ref_curve or not ref_curve[-1]["rollouts"]:
                continue
            budget = frac * ref_curve[-1]["rollouts"]
            a, r = accuracy_at(s.get("curve") or [], budget), accuracy_at(ref_curve, budget)
            if a is None:
                missing += 1
                continue
            accs.append(a)
            diffs.append(a - r)
        d = mean_interval(diffs)
        d["verdict"] = ("no difference shown" if d["lo"] is None or d["lo"] <= 0 <= d["hi"]
                        else "better" if d["lo"] > 0 else "worse") if d["lo"] is not None else "not measured"
        d["seeds_not_reached"] = missing
        out.append({"fraction": frac, "accuracy": mean_interval(accs), "difference": d})
    return out


def target(reference_best: float | None) -> float | None:
    """The accuracy a seed's runs must reach: TARGET_FRACTION x the reference's best (None without one)."""
    return None if reference_best is None else TARGET_FRACTION * reference_best


def validate(summary: dict[str, Any]) -> None:
    """Check summary against summary.schema.json (needs the ``jsonschema`` package, a dev extra)."""
    import jsonschema

    jsonschema.validate(summary, json.loads(SCHEMA.read_text()))


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from .tables import headline_rows, title_line

    t = Table(title=title_line(summary))
    head, rows = headline_rows(summary)
    for col in head:
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        t.add_row(*r)
    Console(width=240).print(t)
    b = Table(title="held-out accuracy at equal rollouts (fraction of the reference's, per seed): the run's, and its "
                    "difference from the reference's with a 95% interval, paired by seed")
    b.add_column("run", justify="left")
    for frac in BUDGETS:
        b.add_column(f"at {frac:.0%}", justify="right")
    for e in summary["runs"]:
        cells = []
        for x in e.get("at_budget", []):
            a, d = x["accuracy"], x["difference"]
            if a["mean"] is None:
                cells.append(f"not reached ({d['seeds_not_reached']} seeds)")
                continue
            iv = f" [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d["lo"] is not None else ""
            miss = f", {d['seeds_not_reached']} not reached" if d["seeds_not_reached"] else ""
            cells.append(f"{a['mean']:.3f} ({d['mean']:+.3f}{iv}, {d['verdict']}{miss})")
        b.add_row(e["name"], *cells)
    Console(width=240).print(b)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.preset not in PRESETS:
        raise ConfigError(f"--preset {args.preset!r} is not a preset; choose one of {sorted(PRESETS)}")
    preset = PRESETS[args.preset]
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    only = [x for x in args.only.split(",") if x] if args.only else None
    runs = plan(preset, args.runs or f"{args.out.rstrip('/')}/runs", seeds, only, args.set)
    actions = execute(runs, dry_run=args.dry_run, jobs=args.jobs)
    if args.dry_run:
        return 0
    command = "rollsift compare " + shlex.join(sys.argv[2:] if argv is None else argv)
    summary = summarize(preset, runs, command, actions, target_mode=args.target, crossing=args.crossing)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"wrote {out / 'summary.json'}")
    try:  # after writing: a schema bug must not throw away hours of runs
        validate(summary)
    except ImportError:  # jsonschema is a dev extra
        pass
    if not args.no_report:
        from .report import render

        page = render([cfg.out for _, _, cfg in runs], out, summary=summary)
        print(f"wrote {page}")
    return 0
