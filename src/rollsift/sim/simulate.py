"""``rollsift simulate``: the real pipeline and strategies on a simulated policy, in seconds.

The rollout pipeline (``rollsift.pipeline``), the selectors, the filters, the replay buffer and the
in-memory ledger are the production ones, built from a ``RunConfig`` as ``rollsift train`` builds
them (same keys for ``--config`` and ``--set``, same seed offsets); only the generator and the
learner are simulated (``rollsift.sim.model``: Bernoulli rollouts from per-prompt success
probabilities that rise with the useful signal each update carries). The pool is synthetic
(``--pool``, ``--easy``, ``--hard``) or fitted to a recorded run's ledger (``--fit RUN``,
``rollsift.sim.fit``). DOTS gets synthetic embeddings that carry each prompt's ease and gain,
blurred (``synthetic_embeddings``). ``--compare`` runs several selectors on the same pool and seed.
The model, its limits and measured figures: docs/simulate.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..configlib import ConfigError, apply_override, load_class, load_toml, merge_into, to_dict

DEFAULT_POOL = 10_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--selector", default=None, help="selector: uniform, greso or dots (default: the config's, greso)")
    p.add_argument("--compare", "--selectors", default=None, metavar="S1,S2,...",
                   help="several selectors on the same pool and seed; the first is the reference")
    p.add_argument("--filters", default=None,
                   help="comma-separated filters, '' for none (default: the config's, dynamic)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="run TOML files (as for rollsift train); with --fit, default RUN/config.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="RunConfig keys as for rollsift train (selector.p_easy=0.3, dynamic.max_rounds=8, pods.m=4, "
                        "replay.enabled=true); NAME.KEY sets a knob of one compared selector (dots.mu=4)")
    p.add_argument("--pool", type=int, default=None,
                   help=f"pool size (default {DEFAULT_POOL}, or the fitted run's pool)")
    p.add_argument("--easy", type=float, default=0.3, help="synthetic pool: share of prompts solved at the start")
    p.add_argument("--hard", type=float, default=0.3, help="synthetic pool: share of hopeless prompts at the start")
    p.add_argument("--practice", type=float, default=0.0, help="synthetic pool: practice weight beta (memorisation)")
    p.add_argument("--embed-noise", type=float, default=0.5,
                   help="DOTS: noise on the synthetic embeddings' ease and gain (default 0.5; see docs/simulate.md)")
    p.add_argument("--fit", default=None, metavar="RUN",
                   help="fit pool, lr and practice to a run's ledger (dir or file)")
    p.add_argument("--lr", type=float, default=None,
                   help="competence gained per unit of signal (default 0.05, or fitted)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 200)")
    p.add_argument("--batch", type=int, default=None, help="prompts per training batch (batch_size; default 32)")
    p.add_argument("--n", type=int, default=None, help="rollouts per prompt (default 8)")
    p.add_argument("--seed", type=int, default=None, help="seed of the pool, the rollouts and every strategy")
    p.add_argument("--target", type=float, default=None,
                   help="mean success to reach (default with --compare: 0.99 x the reference's final)")
    p.add_argument("--every", type=int, default=1, help="keep every k-th step in the JSON series (default 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    return p


# ---------------------------------------------------------------------- configuration
def run_configs(args: argparse.Namespace) -> list[Any]:
    """One validated ``RunConfig`` per simulated selector: defaults, then the TOML files, the flags
    and ``--set``. A file's ``[selector]`` knobs apply when its selector type is simulated;
    ``selector.KEY`` applies to every simulated selector, ``NAME.KEY`` to selector NAME only."""
    from ..config import SELECTORS, RunConfig

    files = list(args.config)
    if not files and args.fit and (Path(args.fit) / "config.toml").is_file():
        files = [str(Path(args.fit) / "config.toml")]
    data: dict = {}
    for f in files:
        merge_into(data, load_toml(f))
    file_sel = data.pop("selector", None) or {}
    sets: dict = {}
    per: dict[str, dict] = {}
    for item in args.set:
        head = item.partition("=")[0].strip().split(".")[0]
        apply_override(per if head in SELECTORS else sets, item)
    set_sel = sets.pop("selector", {})
    if not isinstance(set_sel, dict):
        raise ConfigError("--set selector=...: use selector.type=NAME or selector.KEY=VALUE")
    for key, value in (("steps", args.steps), ("batch_size", args.batch), ("n", args.n), ("seed", args.seed)):
        if value is not None:
            data[key] = value
    if args.filters is not None:
        data["filters"] = [f for f in args.filters.split(",") if f]
    merge_into(data, sets)
    file_type = file_sel.get("type", "greso")
    default = set_sel.pop("type", None) or file_type
    names = [s for s in (args.compare or args.selector or default).split(",") if s]
    if not names:
        raise ConfigError("--compare: name at least one selector")
    for name in [*names, *per]:
        if name not in SELECTORS:
            raise ConfigError(f"selector {name!r} is not known; choose from {sorted(SELECTORS)}")
    if set(per) - set(names):
        raise ConfigError(f"--set {sorted(set(per) - set(names))[0]}.KEY: that selector is not simulated ({names})")
    out = []
    for name in names:
        sel = {k: v for k, v in file_sel.items() if k != "type"} if file_type == name else {}
        sel.update(set_sel)
        sel.update(per.get(name, {}))
        out.append(RunConfig.from_data({**data, "selector": {**sel, "type": name}}))
    return out


def build_pool(args: argparse.Namespace, seed: int) -> tuple[list, Any, float, dict[str, Any]]:
    """(prompts, difficulty model, lr, description): synthetic, or fitted to ``args.fit``."""
    from .model import synthetic_pool

    if args.pool is not None and args.pool < 1:
        raise ConfigError(f"--pool must be >= 1, got {args.pool}")
    if args.fit:
        from ..rundir import RunDir
        from .fit import fit

        if not RunDir(args.fit).has_ledger():
            raise ConfigError(f"--fit {args.fit}: no ledger.sqlite there; pass a run directory or its ledger file")
        fitted = fit(args.fit)
        prompts, model = fitted.to_model(size=args.pool, seed=seed)
        lr = fitted.lr if args.lr is None else args.lr
        return prompts, model, lr, {"source": "fit", "run": str(args.fit), "fit": fitted.summary()}
    size = DEFAULT_POOL if args.pool is None else args.pool
    prompts, model = synthetic_pool(size, seed=seed, easy=args.easy, hard=args.hard, practice=args.practice)
    lr = 0.05 if args.lr is None else args.lr
    return prompts, model, lr, {"source": "synthetic", "easy": args.easy, "hard": args.hard, "practice": args.practice}


# ---------------------------------------------------------------------- one simulated run
def _sim_ledger() -> Any:
    from ..ledger import MemoryLedger

    class SimLedger(MemoryLedger):
        """The in-memory ledger without its event rows, counting selection decisions.

        Strategies read only the derived per-prompt state, which every ``record_*`` call keeps in
        step (the same code as any ledger); it is built, empty, up front so that no stored event is
        ever needed. Stored rows would take gigabytes over a long run at a million prompts.
        """

        decided = skipped = 0

        def __init__(self) -> None:
            super().__init__()
            self.state  # noqa: B018 - built now, then kept in step by every record_* call

        def _append(self, table: str, rows: list[tuple]) -> None:
            pass

        def record_selection(self, decisions, ctx) -> None:
            super().record_selection(decisions, ctx)
            self.decided += len(decisions)
            self.skipped += sum(not d.kept for d in decisions)

    return SimLedger()


def simulate(cfg: Any, prompts: list, base_model: Any, lr: float, embeddings: np.ndarray | None = None,
             every: int = 1, ledger: Any = None, progress: Any = None) -> dict[str, Any]:
    """One simulated run of ``cfg`` (a RunConfig) on a fresh copy of ``base_model``: totals and a
    per-step series. The loop is ``rollsift.train``'s with the simulated generator and learner.
    ``ledger``: where the events go (default: the derived state only, in memory, see ``_sim_ledger``).
    ``progress(step)`` is called after every step."""
    from ..pipeline.rollout_pipeline import RolloutPipeline, train_step
    from .model import SimGenerator, SimLearner, sim_score

    model = base_model.fresh()
    # The pool is not registered with the ledger: registration only labels prompts for analysis (no
    # strategy reads it) and costs seconds at a million prompts; unseen ids read as "no history".
    ledger = _sim_ledger() if ledger is None else ledger
    pipe = RolloutPipeline.from_config(cfg, prompts, ledger, generator=SimGenerator(model, seed=cfg.seed),
                                       score_fn=sim_score)
    if hasattr(pipe.selector, "set_embeddings"):
        if embeddings is None:
            raise ValueError(f"selector {cfg.selector.type!r} needs embeddings")
        pipe.selector.set_embeddings([p.id for p in prompts], embeddings)
    learner = SimLearner(model, lr=lr)
    name = cfg.selector.type
    keys = ("rollouts", "probe_rollouts", "informative_rollouts", "prompts", "rounds", "gen_tokens")
    tot = dict.fromkeys(keys, 0.0)
    tot.update(groups=0, zero_variance_groups=0, short_batches=0)
    curve_rollouts, curve_success, series = [0.0], [model.mean_success()], []
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        ctx = pipe.context(step, learner.policy_version)
        col, m = train_step(pipe, learner, ctx)  # the simulated learner reads the groups, not advantages
        ledger.record_step(step, m)
        for k in keys:
            tot[k] += float(m.get(f"cost/{k}", 0.0))
        train_groups = col.generated
        zero_var = sum(g.is_zero_variance for g in train_groups)
        tot["groups"] += len(train_groups)
        tot["zero_variance_groups"] += zero_var
        tot["short_batches"] += int(m.get("cost/short_batch", 0.0))
        success = model.mean_success()
        if progress is not None:
            progress(step)
        curve_rollouts.append(tot["rollouts"])
        curve_success.append(success)
        if step % every == 0 or step == cfg.steps:
            series.append({
                "step": step, "epoch": ctx.epoch, "pool_passes": tot["prompts"] / len(prompts),
                "mean_success": success, "competence": model.competence, "rollouts": tot["rollouts"],
                "step_rollouts": m.get("cost/rollouts", 0.0), "rounds": m.get("cost/rounds", 0.0),
                "zero_variance_frac": zero_var / len(train_groups) if train_groups else None,
                "batch_groups": m.get("batch/groups", 0.0),
                "skip_frac": m.get(f"select/{name}/skip_frac"),
                **{k.rsplit("/", 1)[1]: m[k] for k in (f"select/{name}/p_easy", f"select/{name}/p_hard",
                                                       "select/dots/pearson") if k in m},
            })
    seconds = time.perf_counter() - t0
    if hasattr(ledger, "decided"):
        decided, skipped = ledger.decided, ledger.skipped
    else:
        kept = [d.kept for d in ledger.decisions()]
        decided, skipped = len(kept), kept.count(False)
    r = tot["rollouts"]
    return {
        "selector": name, "filters": cfg.filter_names, "replay": cfg.replay.fraction if pipe.replay else 0.0,
        "pool": len(prompts), "steps": cfg.steps, "batch": cfg.batch_size, "n": cfg.n, "seed": cfg.seed, "lr": lr,
        "seconds": seconds,
        "rollouts": r, "probe_rollouts": tot["probe_rollouts"], "informative_rollouts": tot["informative_rollouts"],
        "effective_share": tot["informative_rollouts"] / r if r else None, "gen_tokens": tot["gen_tokens"],
        "prompts_rolled_out": tot["prompts"], "pool_passes": tot["prompts"] / len(prompts),
        "rounds_per_step": tot["rounds"] / cfg.steps, "short_batches": tot["short_batches"],
        "zero_variance_frac": tot["zero_variance_groups"] / tot["groups"] if tot["groups"] else None,
        "examined": decided, "skipped": skipped, "skip_frac": skipped / decided if decided else 0.0,
        "initial_mean_success": curve_success[0], "final_mean_success": curve_success[-1],
        "final_competence": model.competence,
        "config": {k: v for k, v in to_dict(cfg).items() if k in ("selector", "filters", "replay")},
        "series": series, "_curve": (curve_rollouts, curve_success),
    }


def reach(curve: tuple[list[float], list[float]], target: float) -> tuple[int | None, float | None]:
    """(steps, rollouts) at the first step whose mean success is >= target; (None, None) if never."""
    rollouts, success = curve
    hit = np.flatnonzero(np.asarray(success) >= target)
    return (int(hit[0]), float(rollouts[hit[0]])) if len(hit) else (None, None)


def run(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``rollsift simulate`` options and simulate each selector; (args, result)."""
    args = _parser().parse_args(argv)
    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    configs = run_configs(args)
    seed = configs[0].seed
    prompts, model, lr, source = build_pool(args, seed)
    emb = None
    if any(c.selector.type == "dots" for c in configs):
        from .model import synthetic_embeddings

        emb = synthetic_embeddings(model, noise=args.embed_noise, seed=seed)
        source["embed_noise"] = args.embed_noise
    runs = []
    with _Bar(sum(c.steps for c in configs)) as bar:
        for c in configs:
            runs.append(simulate(c, prompts, model, lr, emb, args.every, progress=bar.task(c.selector.type, c.steps)))
    for r, c in zip(runs, configs):
        if getattr(load_class(c.selector.strategy), "uses_history", False) and r["pool_passes"] < 2:
            print(f"rollsift simulate: warning: {r['selector']} rolled out {r['pool_passes']:.2f} passes over the "
                  f"{len(prompts):,}-prompt pool; a history-based selector acts from a prompt's second visit on, "
                  f"so it had little or no history to act on. Run more steps (--steps), a larger batch (--batch) "
                  f"or a smaller pool (--pool) to see its effect.", file=sys.stderr)
    curves = [r.pop("_curve") for r in runs]
    target = args.target if args.target is not None else (
        0.99 * runs[0]["final_mean_success"] if len(runs) > 1 else None)
    if target is not None:
        for r, curve in zip(runs, curves):
            r["steps_to_target"], r["rollouts_to_target"] = reach(curve, target)
        base = runs[0]["rollouts_to_target"]
        for r in runs:
            r["speedup_to_target"] = base / r["rollouts_to_target"] if base and r["rollouts_to_target"] else None
    return args, {"pool": {"size": len(prompts), "initial_mean_success": model.mean_success(), **source},
                  "target": target, "reference": runs[0]["selector"], "runs": runs}


class _Bar:
    """A progress bar on stderr over the simulated steps of every selector (gone once done)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.total = total
        self.bar = Progress(TextColumn("simulate {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self) -> "_Bar":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def task(self, name: str, steps: int) -> Any:
        tid = self.bar.add_task(name, total=steps)
        every = max(1, steps // 200)
        return lambda step: (step % every == 0 or step == steps) and self.bar.update(tid, completed=step)


def _table(args: argparse.Namespace, out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    runs, ref = out["runs"], out["runs"][0]
    c = runs[0]
    title = (f"simulated: pool {out['pool']['size']:,} ({out['pool']['source']}), {c['steps']} steps of "
             f"{c['batch']} x {c['n']}, filters {','.join(c['filters']) or 'none'}, seed {c['seed']}")
    t = Table(title=title)
    cols = ["selector", "rollouts", f"rollouts / {ref['selector']}", "effective share", "skip rate", "zero-var share",
            "rounds/step", "mean success", "seconds"]
    if out["target"] is not None:
        cols[-1:-1] = [f"rollouts to {out['target']:.3f}"]
    for col in cols:
        t.add_column(col, justify="left" if col == "selector" else "right")
    f3 = lambda x: "-" if x is None else f"{x:.3f}"
    for r in runs:
        ratio = f"{r['rollouts'] / ref['rollouts']:.2f}x" if ref["rollouts"] else "-"
        row = [r["selector"], f"{r['rollouts']:,.0f}", ratio,
               f3(r["effective_share"]), f3(r["skip_frac"]), f3(r["zero_variance_frac"]), f"{r['rounds_per_step']:.2f}",
               f"{r['initial_mean_success']:.3f} -> {r['final_mean_success']:.3f}", f"{r['seconds']:.1f}"]
        if out["target"] is not None:
            reached = r["rollouts_to_target"]
            row[-1:-1] = ["never" if reached is None else f"{reached:,.0f}"]
        t.add_row(*row)
    Console(width=180).print(t)


def main(argv: Sequence[str] | None = None) -> int:
    args, out = run(argv)
    _table(args, out)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(["rollsift simulate", *(sys.argv[1:] if argv is None else argv)])
        path.write_text(json.dumps({"command": cmd, **out}, indent=1,
                                   default=lambda x: x.item() if isinstance(x, np.generic) else str(x)))
        print(f"wrote {path}")
    return 0
