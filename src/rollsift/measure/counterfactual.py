"""``rollsift replay-ledger RUN --selector S``: what selector S would have done on a recorded run.

The run's selection decisions are replayed in the order they were written, one generation round
at a time: S is asked about the same candidates (the prompts the run examined, kept or skipped),
with the history S would itself have gathered. A prompt S keeps and the run rolled out gets the
recorded group in S's history (and S's ``tell`` sees it at the end of the step); a prompt S skips
gets nothing, as in a real run of S. Reported, per epoch and in total: what S skipped among the
recorded groups, the rollouts and tokens that saves, the informative (mixed) groups among them,
which S would have lost, and the prompts S would have rolled out that the run skipped (their
outcome is unknown). A ledger without selection events (written by a host that records groups
only) is replayed group by group.

The approximation (docs/bench.md): outcomes are the recorded ones, so the policy is the recorded
run's. A real run of S would have trained on other batches, reached other policies and met the
prompts in another order. With S the run's own selector, knobs and seed the replay reproduces
every recorded decision (the tests check it); any other S is exact for its first decisions and an
estimate after that. ``projected_cost_ratio`` turns the counts into the figure a dynamic-sampling
run cares about: rollouts per informative group under S over the recorded rollouts per
informative group. Only stream selectors (``uniform``, ``greso``, ``posterior``, ``learned``) can be replayed: DOTS ranks the
whole pool with a predictor trained on reference rollouts the recorded run does not have.

Every result carries the limit: the oracle, which knows each recorded outcome and skips exactly the
zero-variance groups (it saves their rollouts and loses no informative group), over the same
groups; and, per epoch and in total, ``oracle_saving_reached``: the rollouts S saved on
zero-variance groups over the oracle's saving, read beside the informative groups S lost for it.
``--sweep`` adds the oracle as a point of its own (and uniform selection, which saves nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..configlib import ConfigError, apply_override

KEYS = ("decisions", "groups", "rollouts", "gen_tokens", "informative_groups", "skipped_groups", "saved_rollouts",
        "saved_gen_tokens", "lost_informative_groups", "skipped_all_correct", "skipped_all_wrong",
        "recorded_skips", "extra_groups", "agree", "saved_zero_variance_rollouts")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift replay-ledger", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (holding ledger.sqlite) or ledger files")
    p.add_argument("--selector", default="greso",
                   help="stream selector to replay: greso, posterior, learned or uniform (default greso)")
    p.add_argument("--sweep", action="store_true",
                   help="replay GRESO, the posterior and the learned selectors over a grid of knobs on every RUN: rollouts saved "
                        "against informative groups lost (a Pareto table; --out writes it with a plot)")
    p.add_argument("--out", default=None, metavar="DIR", help="with --sweep: write DIR/pareto.json and DIR/pareto.png")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="selector knob, e.g. selector.p_easy=0.3 (on top of the run's own knobs for its own selector)")
    p.add_argument("--seed", type=int, default=None,
                   help="run seed; the selector draws from seed + 5 as in rollsift train "
                        "(default: the run's config.toml, else 0; with --sweep, for every RUN)")
    p.add_argument("--steps", type=int, default=None, help="replay only the run's first STEPS training steps")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the result, with every skipped prompt, as JSON")
    return p


def _blocks(ledger: Any, last_step: float) -> tuple[str, Iterator[tuple[int, int, list]]]:
    """("selections" | "groups", blocks of (step, round, [(prompt_id, epoch, recorded kept)]) in write order)."""
    decisions = [d for d in ledger.decisions() if d.step <= last_step]
    if decisions:
        rows = [(d.step, d.round, d.prompt_id, d.epoch, d.kept) for d in decisions]
        source = "selections"
    else:
        rows = [(g.step, g.round, g.prompt_id, g.epoch, True) for g in ledger.groups("train") if g.step <= last_step]
        source = "groups"

    def gen() -> Iterator[tuple[int, int, list]]:
        block: list = []
        key = None
        for step, rnd, pid, epoch, kept in rows:
            if (step, rnd) != key and block:
                yield key[0], key[1], block
                block = []
            key = (step, rnd)
            block.append((pid, epoch, kept))
        if block:
            yield key[0], key[1], block

    return source, gen()


def replay(ledger: Any, selector: str = "greso", knobs: dict | None = None, seed: int = 0,
           steps: int | None = None) -> dict[str, Any]:
    """Counterfactual decisions of ``selector`` (seeded ``seed + 5``, as ``rollsift train`` seeds it)
    over the live events of ``ledger`` (of its first ``steps`` steps); see the module docstring."""
    from ..config import make_strategy
    from ..ledger import MemoryLedger
    from ..pipeline.rollout_pipeline import seed_of
    from ..records import Completion, Context, Group, Prompt

    sel = make_strategy("selector", {"type": selector, **(knobs or {})}, seed_of("selector", seed))
    if getattr(sel, "scope", "stream") != "stream":
        raise ConfigError(f"--selector {selector}: only stream selectors (greso, posterior, learned, uniform) can be replayed on a "
                          f"recorded run; {selector} needs rollouts the run does not have")
    recorded_steps = [s.step for s in ledger.steps()]
    last_step = max(recorded_steps) if recorded_steps else float("inf")  # later events: an unfinished step
    if steps is not None:
        last_step = min(last_step, steps)
    recorded = {(g.step, g.prompt_id): g for g in ledger.groups("train", detail=True) if g.step <= last_step}
    version: dict[int, int] = {}  # the policy version a step's groups were sampled with (the step's context)
    for g in recorded.values():
        version[g.step] = max(version.get(g.step, 0), g.policy_version)
    sizes = [g.n for g in recorded.values()]
    n_mode = max(set(sizes), key=sizes.count) if sizes else 0  # the run's group size
    source, blocks = _blocks(ledger, last_step)
    mem = MemoryLedger()
    per_epoch: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KEYS, 0))
    oracle_epochs: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KEYS, 0))
    skips: list[list] = []
    prompts: dict[str, Prompt] = {}
    step_groups: list[Group] = []
    step, tell_epoch, epoch_now = None, 0, 0
    token = (0,)

    def end_step() -> None:
        if step is not None:  # the pipeline's rule: the latest epoch among the step's groups
            epoch = max([tell_epoch, *(g.epoch for g in step_groups)])
            sel.tell(step_groups, mem, Context(step=step, epoch=epoch, n=n_mode,
                                               policy_version=version.get(step, max(step - 1, 0))))

    for b_step, b_round, block in blocks:
        if b_step != step:
            end_step()
            # the trainer's context epoch is the stream's at the step's start: the last one decided before
            step, tell_epoch, step_groups = b_step, epoch_now, []
        cands = [prompts.setdefault(pid, Prompt(id=pid, text=pid, answer="")) for pid, _, _ in block]
        ctx = Context(step=b_step, epoch=block[0][1], round=b_round, n=n_mode,
                      policy_version=version.get(b_step, max(b_step - 1, 0)))
        decided = sel.ask(cands, len(cands), mem, ctx).decisions  # a prefix of the candidates, in order
        kept_groups = []
        for i, (pid, epoch, was_kept) in enumerate(block):
            e, d = per_epoch[epoch], decided[i] if i < len(decided) else None
            keep = d is not None and d.kept
            g = recorded.get((b_step, pid)) if was_kept else None
            e["decisions"] += 1
            e["agree"] += keep == was_kept
            if not was_kept:  # the run skipped it: if S keeps it, its outcome is unknown
                e["recorded_skips"] += 1
                e["extra_groups"] += keep
                continue
            if g is None:  # kept without a recorded group (not in a finished step): nothing to count
                continue
            mixed = 0 < g.n_correct < g.n
            tokens = sum(g.lengths or ())
            e["groups"] += 1
            e["rollouts"] += g.n
            e["gen_tokens"] += tokens
            e["informative_groups"] += mixed
            _count_oracle(oracle_epochs[epoch], g.n, g.n_correct, tokens)
            if not keep:
                outcome = "mixed" if mixed else "all_correct" if g.n_correct == g.n else "all_wrong"
                e["skipped_groups"] += 1
                e["saved_rollouts"] += g.n
                e["saved_gen_tokens"] += tokens
                e["lost_informative_groups"] += mixed
                e["saved_zero_variance_rollouts"] += 0 if mixed else g.n
                e["skipped_all_correct"] += outcome == "all_correct"
                e["skipped_all_wrong"] += outcome == "all_wrong"
                skips.append([b_step, epoch, pid, d.reason if d is not None else "undecided", outcome])
                continue
            comps = tuple(Completion(pid, j, token, "", (0.0,), policy_version=g.policy_version) for j in range(g.n))
            kept_groups.append(Group(prompts[pid], comps, tuple(g.rewards), tuple(g.correct), step=b_step,
                                     round=g.round, policy_version=g.policy_version, epoch=g.epoch))
        epoch_now = block[-1][1]
        mem.record_groups(kept_groups, ctx)
        step_groups += kept_groups
    end_step()

    epochs = {e: v for e, v in sorted(per_epoch.items())}
    total = {k: sum(v[k] for v in epochs.values()) for k in KEYS}
    for d in (*epochs.values(), total):
        d.update(_shares(d, n_mode))
    oracle = _oracle(oracle_epochs, n_mode)
    for key, d in [*epochs.items(), (None, total)]:
        o = oracle["total"] if key is None else oracle["per_epoch"][str(key)]
        d["oracle_saving_reached"] = _reached(d, o)
    return {"selector": selector, "knobs": knobs or {}, "seed": seed, "selector_seed": seed_of("selector", seed),
            "source": source, "oracle": oracle,
            "steps": len({s for s, _ in recorded}), "n": n_mode, "total": total,
            "per_epoch": {str(e): v for e, v in epochs.items()}, "skips": skips,
            "selector_metrics": sel.metrics(), "calibration": _calibration(sel)}


def _calibration(sel: Any) -> dict[str, Any] | None:
    """A learned selector's out-of-sample record over the replay: AUC and reliability bins (else None)."""
    cal = getattr(sel, "calibration", None)
    if cal is None or not hasattr(cal, "table"):
        return None
    return {"auc": cal.auc(), "bins": cal.table(), "histogram": cal.hist.tolist()}


def _count_oracle(o: dict[str, int], n: int, k: int, tokens: int) -> None:
    """The oracle's decision on one recorded group: skip it exactly when it is zero-variance."""
    o["groups"] += 1
    o["rollouts"] += n
    o["gen_tokens"] += tokens
    mixed = 0 < k < n
    o["informative_groups"] += mixed
    if not mixed:
        o["skipped_groups"] += 1
        o["saved_rollouts"] += n
        o["saved_gen_tokens"] += tokens
        o["saved_zero_variance_rollouts"] += n
        o["skipped_all_correct"] += k == n
        o["skipped_all_wrong"] += k == 0


def _oracle(per_epoch: dict[int, dict[str, int]], n: int) -> dict[str, Any]:
    """The limit of pre-rollout selection on the recorded groups: an oracle that knows each outcome and
    skips exactly the zero-variance groups (saves their rollouts, loses no informative group)."""
    epochs = {e: v for e, v in sorted(per_epoch.items())}
    total = {k: sum(v[k] for v in epochs.values()) for k in KEYS}
    for d in (*epochs.values(), total):
        d.update(_shares(d, n))
        d["agreement"] = None  # the oracle is not asked the run's candidates
    return {"total": total, "per_epoch": {str(e): v for e, v in epochs.items()}}


def _reached(d: dict[str, Any], oracle: dict[str, Any]) -> float | None:
    """The share of the oracle's saving a selector reached, at the loss shown beside it: the rollouts it
    saved on zero-variance groups over the oracle's (all of them). Rollouts saved by skipping
    informative groups are not counted: the oracle never skips one, and their price is the loss."""
    if not oracle["saved_rollouts"]:
        return None
    return d["saved_zero_variance_rollouts"] / oracle["saved_rollouts"]


def _shares(d: dict[str, int], n: int) -> dict[str, float | None]:
    kept_groups = d["groups"] - d["skipped_groups"]
    kept_informative = d["informative_groups"] - d["lost_informative_groups"]
    ratio = None
    if d["informative_groups"] and kept_informative:
        recorded_cost = d["rollouts"] / d["informative_groups"]
        ratio = ((d["rollouts"] - d["saved_rollouts"]) / kept_informative) / recorded_cost
    informative = d["informative_groups"]
    return {
        "saved_rollout_share": d["saved_rollouts"] / d["rollouts"] if d["rollouts"] else None,
        "lost_informative_share": d["lost_informative_groups"] / informative if informative else None,
        "extra_rollouts": d["extra_groups"] * n,
        "agreement": d["agree"] / d["decisions"] if d["decisions"] else None,
        "informative_share_recorded": d["informative_groups"] / d["groups"] if d["groups"] else None,
        "informative_share_kept": kept_informative / kept_groups if kept_groups else None,
        "projected_cost_ratio": ratio,
    }


# The grid of --sweep: GRESO at its paper defaults and with a higher floor / min_p / target, and the
# posterior and the learned selectors over their budget of informative groups lost (the same controller).
SWEEP = (
    [("uniform", {}), ("greso", {}), ("greso", {"min_p": 0.2}), ("greso", {"min_p": 0.4}), ("greso", {"floor": 0.05}),
     ("greso", {"floor": 0.2}), ("greso", {"target_zero_variance": 0.5}),
     ("greso", {"min_p": 0.2, "floor": 0.05})]
    + [("posterior", {"max_lost": b}) for b in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)]
    + [("learned", {"max_lost": b}) for b in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)]
)


def _knobs(rundir: Any, selector: str, sets: dict) -> tuple[dict, int]:
    run_cfg = rundir.read_config() or {}
    own = dict(run_cfg.get("selector") or {})
    knobs = {k: v for k, v in own.items() if k != "type"} if own.get("type", "greso") == selector else {}
    knobs.update(sets)
    return knobs, int(run_cfg.get("seed", 0))


def sweep(runs: Sequence[str], steps: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Every (selector, knobs) of ``SWEEP`` replayed on every run: saved and lost shares per run and
    their means (each run's own seed; knobs on top of the selector's defaults, not the run's)."""
    from ..rundir import RunDir
    from .stats import mean_interval

    points = []
    oracles: dict[str, dict] = {}  # run -> the oracle's totals (the same for every selector)
    sources: dict[str, Any] = {}
    keys = ("saved_rollout_share", "lost_informative_share", "projected_cost_ratio", "oracle_saving_reached")
    for selector, knobs in SWEEP:
        per_run = []
        for run in runs:
            rundir = RunDir(run)
            run_seed = int((rundir.read_config() or {}).get("seed", 0)) if seed is None else seed
            with rundir.open_ledger() as ledger:
                out = replay(ledger, selector, dict(knobs), run_seed, steps)
                sources[str(rundir.path)] = ledger.get_meta("trace_import")  # how an imported run was made
            t = out["total"]
            oracles[str(rundir.path)] = out["oracle"]["total"]
            per_run.append({"run": str(rundir.path), **{k: t[k] for k in keys}})
        point = {"selector": selector, "knobs": knobs, "runs": per_run}
        for k in keys:
            point[k] = mean_interval([r[k] for r in per_run])
        points.append(point)
    per_run = [{"run": r, **{k: (o[k] if k != "oracle_saving_reached" else 1.0) for k in keys}}
               for r, o in oracles.items()]
    points.append({"selector": "oracle", "knobs": {}, "runs": per_run,
                   **{k: mean_interval([r[k] for r in per_run]) for k in keys}})
    return {"runs": [str(RunDir(r).path) for r in runs], "steps": steps, "seed": seed, "points": points,
            "trace_import": sources if any(sources.values()) else None}


def pareto_figure(result: dict[str, Any], path: str | Path) -> Path:
    """Rollouts saved (x) against informative groups lost (y), one point per knob setting, per selector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for selector, color, marker in (("greso", "#d95f02", "o"), ("posterior", "#1b9e77", "s"), ("learned", "#7570b3", "^")):
        pts = [p for p in result["points"] if p["selector"] == selector]
        xs = [p["saved_rollout_share"]["mean"] for p in pts]
        ys = [p["lost_informative_share"]["mean"] for p in pts]
        ax.scatter(xs, ys, color=color, marker=marker, label=selector, zorder=3)
        for p, x, y in zip(pts, xs, ys):
            label = ",".join(f"{k}={v}" for k, v in p["knobs"].items()) or "defaults"
            ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            lo, hi = p["lost_informative_share"]["lo"], p["lost_informative_share"]["hi"]
            if lo is not None:
                ax.plot([x, x], [lo, hi], color=color, lw=0.8, alpha=0.5)
    for p in result["points"]:  # the limit (and no selection), where a sweep carries them
        if p["selector"] in ("oracle", "uniform") and p["saved_rollout_share"]["mean"] is not None:
            x, y = p["saved_rollout_share"]["mean"], p["lost_informative_share"]["mean"] or 0.0
            ax.scatter([x], [y], color="black", marker="*" if p["selector"] == "oracle" else "x", s=70, zorder=4,
                       label=p["selector"] + (" (skips exactly the zero-variance groups)"
                                              if p["selector"] == "oracle" else ""))
    ax.set_xlabel("rollouts saved (share of the recorded run's)")
    ax.set_ylabel("informative groups lost (share)")
    ax.set_title(f"counterfactual on {len(result['runs'])} recorded run(s): lower right is better", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=180, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..rundir import RunDir

    for run in args.runs:
        if not RunDir(run).has_ledger():
            raise ConfigError(f"{run}: no ledger.sqlite; pass a run directory or its ledger file")
    data: dict = {}
    for item in args.set:
        apply_override(data, item)
    if set(data) - {"selector"}:
        raise ConfigError(f"--set {sorted(set(data) - {'selector'})[0]}...: only selector.KEY knobs apply here")
    if args.sweep:
        result = sweep(args.runs, args.steps, args.seed)
        result["command"] = "rollsift replay-ledger " + " ".join(argv if argv is not None else sys.argv[2:])
        _print_sweep(result)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "pareto.json").write_text(json.dumps(result, indent=1))
            print(f"wrote {out / 'pareto.json'} and {pareto_figure(result, out / 'pareto.png')}")
        return 0
    for run in args.runs:
        rundir = RunDir(run)
        knobs, seed = _knobs(rundir, args.selector, data.get("selector", {}))
        seed = args.seed if args.seed is not None else seed
        with rundir.open_ledger() as ledger:
            out = replay(ledger, args.selector, knobs, seed, args.steps)
        out["run"] = str(rundir.path)
        _print(out)
        if args.json:
            path = Path(args.json) if len(args.runs) == 1 else Path(args.json).with_name(
                f"{Path(args.json).stem}-{rundir.path.name}{Path(args.json).suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1))
            print(f"wrote {path}")
    return 0


def _print_sweep(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"counterfactual sweep over {len(result['runs'])} run(s): mean [95% interval] over runs")
    for col in ("selector", "knobs", "rollouts saved", "informative lost", "cost per informative group",
                "of the oracle's saving"):
        t.add_column(col, justify="left" if col in ("selector", "knobs") else "right")

    def f(st: dict, pct: bool = True) -> str:
        if st["mean"] is None:
            return "-"
        fmt = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.2f}x")
        return fmt(st["mean"]) + (f" [{fmt(st['lo'])}, {fmt(st['hi'])}]" if st["lo"] is not None else "")

    for p in result["points"]:
        t.add_row(p["selector"], ",".join(f"{k}={v}" for k, v in p["knobs"].items()) or "defaults",
                  f(p["saved_rollout_share"]), f(p["lost_informative_share"]), f(p["projected_cost_ratio"], False),
                  f(p["oracle_saving_reached"]))
    Console(width=160).print(t)


def _print(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{out['selector']} (seed {out['seed']}) replayed on {out['run']}: {out['steps']} steps, "
                    f"from its {out['source']}")
    cols = ("epoch", "groups", "skipped", "all-correct", "all-wrong", "rollouts saved", "share", "informative lost",
            "share lost", "run skipped, S keeps", "cost ratio", "of oracle's saving", "agreement")
    for col in cols:
        t.add_column(col, justify="right")
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    for name, d in [*out["per_epoch"].items(), ("total", out["total"]), ("oracle", out["oracle"]["total"])]:
        ratio = d["projected_cost_ratio"]
        t.add_row(name, f"{d['groups']:,}", f"{d['skipped_groups']:,}", f"{d['skipped_all_correct']:,}",
                  f"{d['skipped_all_wrong']:,}", f"{d['saved_rollouts']:,}", pct(d["saved_rollout_share"]),
                  f"{d['lost_informative_groups']:,}", pct(d["lost_informative_share"]), f"{d['extra_groups']:,}",
                  "-" if ratio is None else f"{ratio:.2f}x", pct(d.get("oracle_saving_reached", 1.0)),
                  pct(d["agreement"]))
    Console(width=180).print(t)
    cal = out.get("calibration")
    if cal:  # the learned selector: its predictions of P(zero variance), each made before the outcome
        c = Table(title=f"{out['selector']}: calibration over the replay (groups it rolled out), AUC "
                        + ("-" if cal["auc"] is None else f"{cal['auc']:.3f}"))
        for col in ("predicted P(zero variance)", "groups", "mean predicted", "observed"):
            c.add_column(col, justify="right")
        for b in cal["bins"]:
            if b["groups"]:
                c.add_row(f"{b['lo']:.1f}-{b['hi']:.1f}", f"{b['groups']:,.0f}", f"{b['predicted']:.3f}",
                          f"{b['observed']:.3f}")
        Console(width=180).print(c)
