"""``rollsift compare --preset NAME --out DIR``: run a preset's configurations, summarise, report.

Each run of the preset (``rollsift.measure.presets``) and seed is an ordinary training run in
``RUNS/<name>-s<seed>/`` (RUNS = ``--runs``, default ``DIR/runs``); its config is exactly

    build_config([run files...], [*preset.common, *run.overrides, *--set items,
                                  "out=RUNS/<name>-s<seed>", "seed=<seed>"])

so the same command again (or another preset pointed at the same RUNS) reuses finished runs, resumes
unfinished ones from their last checkpoint, and trains the rest. The target of seed k is 0.99 x the
best held-out accuracy of the preset's reference run with seed k (per-seed targets: a seed's runs
share its data order and initial policy, so they are measured against the same bar); every run
reports the rollouts, generated tokens and training wall time it had spent when it first reached
its seed's target, and the reference's cost divided by that (how many times cheaper).
``DIR/summary.json`` follows ``summary.schema.json`` (docs/measure.md); ``DIR/report.html`` is
rendered by ``rollsift.measure.report``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..configlib import ConfigError
from .presets import PRESETS, Preset, RunSpec

TARGET_FRACTION = 0.99
SCHEMA = Path(__file__).with_name("summary.schema.json")
_COSTS = ("rollouts", "gen_tokens", "train_wall_s")
# per-seed figures summarised across seeds in each run's "mean" (docs/measure.md)
_STATS = ("eval_initial", "eval_best", "eval_final", "rollouts", "gen_tokens", "train_wall_s", "effective_share",
          "steps")


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
    from ..runlog import read_metrics

    d = Path(cfg.out)
    if not (d / "config.toml").is_file():
        return "train", "new run"
    if not _same_config(cfg):
        return "train", "config.toml differs from the resolved config: overwriting the run"
    if (d / "metrics.jsonl").is_file() and is_finished(cfg, read_metrics(d)):
        return "finished", "same config, finished"
    from ..checkpoint import latest

    if latest(d) is not None:  # the checkpoint `train(resume=True)` would restore
        return "resume", "same config, unfinished: resuming from its last checkpoint"
    return "train", "same config, unfinished, no checkpoint: starting over"


def run_status(cfg: Any) -> str:
    return check_run(cfg)[0]


def _same_config(cfg: Any) -> bool:
    from ..configlib import dumps_toml, load_toml, loads_toml, to_dict

    return loads_toml(dumps_toml(to_dict(cfg))) == load_toml(Path(cfg.out) / "config.toml")


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


def execute(runs: Sequence[tuple[RunSpec, int, Any]], dry_run: bool = False) -> dict[str, str]:
    """Train, resume or reuse each run, one status line each; returns run dir -> 'trained' | 'resumed' | 'reused'."""
    from ..train import train

    done = {}
    for spec, seed, cfg in runs:
        status, why = check_run(cfg)
        action = {"finished": "reused", "resume": "resumed", "train": "trained"}[status]
        verb = {"finished": "reused", "resume": "resume", "train": "train"}[status]
        print(f"[compare] {spec.name} seed {seed}: {verb} ({cfg.out}; {why})", flush=True)
        if not dry_run and status != "finished":
            t0 = time.perf_counter()
            s = train(cfg, resume=status == "resume", overwrite=status == "train")
            best = "-" if s["eval_best"] is None else f"{s['eval_best']:.3f}"
            print(f"[compare] {spec.name} seed {seed}: {action} in {time.perf_counter() - t0:.0f}s, "
                  f"{s['steps']} steps, best held-out accuracy {best}", flush=True)
        done[cfg.out] = action
    return done


def ratios(ref: dict[str, Any], run: dict[str, Any]) -> dict[str, float | None]:
    """Reference cost to target / this run's cost, per cost (2.0 = half the reference's cost).

    None for every cost when either run never reached the target or reached it before its first
    training step (step 0: nothing was spent, and the step-0 wall is set-up time, not training).
    """
    if not ref.get("step") or not run.get("step"):
        return {k: None for k in _COSTS}
    return {k: (ref[k] / run[k] if ref.get(k) and run.get(k) else None) for k in _COSTS}


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    """mean, sample std (0 for one value), min, max over the values present; n counts them."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(preset: Preset, runs: Sequence[tuple[RunSpec, int, Any]], command: str,
              actions: dict[str, str] | None = None) -> dict[str, Any]:
    """summary.json as a dict (see summary.schema.json and docs/measure.md)."""
    from ..summary import summarize_run

    seeds = sorted({seed for _, seed, _ in runs})
    ref_best = {seed: summarize_run(cfg.out)["eval_best"] for spec, seed, cfg in runs if spec.name == preset.reference}
    if not ref_best:
        raise ConfigError(f"the reference run {preset.reference!r} of preset {preset.name!r} is not among the runs")
    targets = {seed: target(b) for seed, b in ref_best.items()}
    per_run: dict[str, dict[str, Any]] = {}
    for spec, seed, cfg in runs:
        s = summarize_run(cfg.out, targets.get(seed))
        s["seed"], s["target"] = seed, targets.get(seed)
        s["action"] = (actions or {}).get(cfg.out)
        s.setdefault("to_target", {"step": None, "rollouts": None, "gen_tokens": None, "train_wall_s": None})
        per_run.setdefault(spec.name, {"name": spec.name, "configs": list(spec.configs),
                                       "overrides": list(spec.overrides), "seeds": []})["seeds"].append(s)
    ref_seeds = {s["seed"]: s for s in per_run[preset.reference]["seeds"]}
    for entry in per_run.values():
        for s in entry["seeds"]:
            s["vs_reference"] = ratios(ref_seeds.get(s["seed"], {}).get("to_target", {}), s["to_target"])
        seeds_ = entry["seeds"]
        entry["mean"] = {k: _stats([s[k] for s in seeds_]) for k in _STATS}
        entry["mean"].update({f"to_target_{k}": _stats([s["to_target"][k] for s in seeds_]) for k in _COSTS})
        entry["mean"].update({f"vs_reference_{k}": _stats([s["vs_reference"][k] for s in seeds_]) for k in _COSTS})
        entry["reached_target"] = sum(s["to_target"]["step"] is not None for s in seeds_)
    return {
        "schema": "rollsift.compare/1",
        "preset": preset.name,
        "description": preset.description,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "reference": preset.reference,
        "target_fraction": TARGET_FRACTION,
        "reference_best": {str(k): v for k, v in sorted(ref_best.items())},
        "targets": {str(k): v for k, v in sorted(targets.items())},
        "seeds": seeds,
        "runs": list(per_run.values()),
    }


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

    from .tables import headline_rows

    targets = ", ".join(f"seed {k}: {'-' if v is None else f'{v:.3f}'}" for k, v in summary["targets"].items())
    t = Table(title=f"{summary['preset']}: target = {summary['target_fraction']} x best of "
                    f"'{summary['reference']}' ({targets}); 'x' = times cheaper than the reference")
    head, rows = headline_rows(summary)
    for col in head:
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        t.add_row(*r)
    Console(width=220).print(t)


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
    actions = execute(runs, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    command = "rollsift compare " + shlex.join(sys.argv[2:] if argv is None else argv)
    summary = summarize(preset, runs, command, actions)
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
