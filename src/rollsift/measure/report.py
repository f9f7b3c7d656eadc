"""``rollsift report RUN... --out DIR``: a static, offline HTML report of training runs.

Figures (matplotlib, Agg, embedded as base64 PNGs drawn at twice their displayed size, so the page
is one self-contained file, sharp on high-DPI screens; legends sit under the plots, never over the
data): accuracy against rollouts, generated tokens and training wall time; the zero-variance share of
groups per step; GRESO's p_easy / p_hard and skip rate; the learned selector's tau, lost share, AUC and reliability plot; the DOTS predictor's Pearson correlation;
pruning (head AUC, pruned fraction, rollouts and tokens saved); one prompt-by-epoch outcome heat
map per run from its ledger; the realism card of every run with a ledger (``measure.card``). A run
keeps one colour in every figure. A figure or panel whose metrics no run has is left out.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


# outcome codes of the heat map
NOT_SEEN, SKIPPED, ALL_WRONG, MIXED, ALL_CORRECT = 0, 1, 2, 3, 4
_OUTCOME_NAMES = ("not seen", "skipped", "all wrong", "mixed", "all correct")
_OUTCOME_COLORS = ("#ffffff", "#bdbdbd", "#d7301f", "#fdae61", "#1a9850")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift report",
                                description="Render DIR/report.html (embedded figures, opens offline) for runs.",
                                epilog="Contents: docs/measure.md")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (holding metrics.jsonl, ledger.sqlite)")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/report.html")
    p.add_argument("--summary", default=None, metavar="JSON", help="a compare summary.json for the headline table")
    p.add_argument("--heatmap-prompts", type=int, default=200, help="prompts shown in each heat map (default 200)")
    return p


def labels(runs: Sequence[str | Path]) -> list[str]:
    """Short, unique names: the directory name, with as many parents as it takes to tell runs apart."""
    parts = [Path(r).resolve().parts for r in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(r) for r in runs]


DPI = 90  # CSS pixels per inch of a figure on the page
SCALE = 2  # PNG pixels per CSS pixel: sharp on high-DPI (2x) screens


def _image(fig: Any) -> str:
    """The figure as an <img> of a PNG drawn at SCALE x the displayed size (sharp on high-DPI screens)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SCALE, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    width = int.from_bytes(data[16:20], "big") // SCALE  # the PNG header's width, in CSS pixels
    return f"width='{width}' src='data:image/png;base64,{base64.b64encode(data).decode()}'"


def _legend_below(fig: Any, axes: Sequence[Any]) -> None:
    """One legend for the whole figure, under the plots (never over the data)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(seen), 4), fontsize=8, frameon=False)


def _series(rows: Sequence[dict], key: str, x: str = "step") -> tuple[list, list]:
    pts = [(r.get(x), r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(ys: Sequence[float]) -> list[float]:
    """Trailing mean over about 2% of the points (per-step shares are noisy at batch sizes of 32)."""
    w = max(1, len(ys) // 50)
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y - (ys[i - w] if i >= w else 0.0)
        out.append(acc / min(i + 1, w))
    return out


class _Style:
    """One colour per run, kept across figures."""

    def __init__(self, names: Sequence[str]) -> None:
        import matplotlib

        cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
        self.color = {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def accuracy_figure(metrics: dict[str, list[dict]], style: _Style) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    if not any(_series(rows, "eval/accuracy")[0] for rows in metrics.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (x, label) in zip(axes, (("cost/rollouts_total", "rollouts"), ("cost/gen_tokens_total", "generated tokens"),
                                     ("time/train_wall", "training wall time (s)"))):
        for name, rows in metrics.items():
            # the step-0 row predates any cost: plot it at zero even if a cumulative key is absent there
            rows = [{**r, x: r.get(x, 0.0)} if r.get("step") == 0 else r for r in rows]
            xs, ys = _series(rows, "eval/accuracy", x)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, color=style.color[name], label=name)
        if x != "time/train_wall":  # 20k rollouts, 3M tokens (the default ticks overlap)
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend_below(fig, axes)
    return _image(fig)


def metric_figure(metrics: dict[str, list[dict]], style: _Style, panels: Sequence[tuple[str, Sequence[str]]],
                  smooth: bool = False) -> str | None:
    """One panel per (title, keys) against the step: colour = run, line style = key.

    ``smooth``: draw the raw series faint and a trailing mean over it.
    """
    import matplotlib.pyplot as plt

    panels = [(t, keys) for t, keys in panels if any(_series(rows, k)[0] for rows in metrics.values() for k in keys)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for name, rows in metrics.items():
            for k, ls in zip(keys, ("-", "--", ":", "-.")):
                xs, ys = _series(rows, k)
                if not xs:
                    continue
                label = f"{name} {k.rsplit('/', 1)[-1]}" if len(keys) > 1 else name
                if smooth and len(xs) > 50:
                    ax.plot(xs, ys, lw=0.5, alpha=0.25, color=style.color[name])
                    ys = _smooth(ys)
                ax.plot(xs, ys, lw=1.2, ls=ls, color=style.color[name], label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _legend_below(fig, axes[0])
    return _image(fig)


def outcome_matrix(run: str | Path, max_prompts: int = 200) -> tuple[list[str], list[int], Any] | None:
    """Prompts x epochs of outcome codes from a run's ledger (training groups and skip decisions).

    As ``rollsift ledger show`` does, a prompt's cell for an epoch is its last live training
    group's outcome in that epoch; else SKIPPED if a selector skipped it then; else NOT_SEEN. Rows
    are the prompts trained on at least once, ordered by mean accuracy (so the bands of
    always-solved and never-solved prompts show), thinned evenly to ``max_prompts``: a sample of the
    whole range, not just the prompts a selector kept choosing. None without a training group.
    """
    import numpy as np

    from ..rundir import RunDir

    rundir = RunDir(run)
    if not rundir.has_ledger():
        return None
    cells: dict[str, dict[int, int]] = {}
    acc: dict[str, list[float]] = {}
    with rundir.open_ledger() as ledger:
        for d in ledger.decisions():
            if not d.kept:
                cells.setdefault(d.prompt_id, {}).setdefault(d.epoch, SKIPPED)
        for g in ledger.groups("train"):
            code = ALL_CORRECT if g.n_correct == g.n else ALL_WRONG if g.n_correct == 0 else MIXED
            cells.setdefault(g.prompt_id, {})[g.epoch] = code
            acc.setdefault(g.prompt_id, []).append(g.accuracy)
    if not acc:
        return None
    epochs = sorted({e for row in cells.values() for e in row})
    ordered = sorted(acc, key=lambda p: (float(np.mean(acc[p])), p))
    pick = np.unique(np.linspace(0, len(ordered) - 1, min(max_prompts, len(ordered))).round().astype(int))
    shown = [ordered[i] for i in pick]
    m = np.full((len(shown), len(epochs)), NOT_SEEN, dtype=np.int8)
    col = {e: j for j, e in enumerate(epochs)}
    for i, p in enumerate(shown):
        for e, code in cells[p].items():
            m[i, col[e]] = code
    return shown, epochs, m


def heatmap_figure(run: str | Path, name: str, max_prompts: int) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    got = outcome_matrix(run, max_prompts)
    if got is None:
        return None
    prompts, epochs, m = got
    fig, ax = plt.subplots(figsize=(min(14, max(4, 0.4 * len(epochs) + 3)), 5))
    ax.imshow(m, aspect="auto", interpolation="nearest", cmap=ListedColormap(_OUTCOME_COLORS), vmin=0, vmax=4)
    step = max(1, len(epochs) // 20)
    ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{len(prompts)} prompts (by mean accuracy)")
    ax.set_title(f"{name}: outcome per prompt and epoch", fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="#777777", label=n) for c, n in zip(_OUTCOME_COLORS, _OUTCOME_NAMES)]
    ax.legend(handles=handles, bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _image(fig)


def staleness_counts(run: str | Path) -> dict[str, dict[int, int]] | None:
    """Groups trained on per staleness (trainer's policy version minus the group's): fresh groups
    (generated for the step that used them), carried groups (generated for an earlier step, kept by
    dynamic sampling) and replayed groups apart; None when the run's ledger has no use events or no
    group was behind (a synchronous run without carry-over or replay has nothing to show)."""
    from ..rundir import RunDir
    from .ledger_show import staleness_by_kind

    rd = RunDir(run)
    if not rd.has_ledger():
        return None
    counts = staleness_by_kind(rd.open_ledger())
    if not any(k > 0 for c in counts.values() for k in c):
        return None
    return {kind: dict(sorted(c.items())) for kind, c in counts.items() if c}


def staleness_figure(runs: Sequence[str | Path], names: Sequence[str], style: _Style) -> str | None:
    """Histogram of the staleness of the groups each run trained on (async runs, replay)."""
    import matplotlib.pyplot as plt

    got = {n: c for n, c in ((n, staleness_counts(r)) for r, n in zip(runs, names)) if c}
    if not got:
        return None
    kinds = [k for k in ("fresh", "carried", "replayed") if any(k in c for c in got.values())]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), squeeze=False)
    width = 0.8 / len(got)
    for ax, kind in zip(axes[0], kinds):
        for i, (name, c) in enumerate(got.items()):
            hist = c.get(kind, {})
            total = sum(hist.values()) or 1
            ax.bar([k - 0.4 + width * (i + 0.5) for k in hist], [v / total for v in hist.values()], width,
                   color=style.color[name], label=name)
        ax.set_title(f"{kind} groups", fontsize=10)
        ax.set_xlabel("staleness (trainer version - group version)")
        ax.set_ylabel("share of groups trained on")
        ax.xaxis.get_major_locator().set_params(integer=True)
    _legend_below(fig, axes[0])
    return _image(fig)


def calibration_rows(rows: Sequence[dict]) -> tuple[list[dict[str, float]], float | None] | None:
    """The learned selector's reliability bins and AUC over the run, from its last metrics row that has
    them (``select/learned/calib/*``: out-of-sample predictions, cumulative), or None."""
    for r in reversed(rows):
        bins = sorted({int(k.rsplit("_", 1)[1]) for k in r if k.startswith("select/learned/calib/groups_")})
        if bins:
            return ([{"bin": j, "groups": r[f"select/learned/calib/groups_{j}"],
                      "predicted": r[f"select/learned/calib/predicted_{j}"],
                      "observed": r[f"select/learned/calib/observed_{j}"]} for j in bins], r.get("select/learned/auc"))
    return None


def calibration_figure(metrics: dict[str, list[dict]], style: _Style) -> str | None:
    """Reliability plot of the learned selector: predicted against observed zero-variance rate of the
    groups it rolled out (each predicted before the outcome), marker area ~ groups; AUC in the legend."""
    import matplotlib.pyplot as plt

    got = {n: c for n, c in ((n, calibration_rows(rows)) for n, rows in metrics.items()) if c}
    if not got:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax, hx = axes
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--")
    for name, (bins, auc) in got.items():
        total = sum(b["groups"] for b in bins) or 1
        label = f"{name} (AUC {auc:.3f})" if auc is not None else name
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], color=style.color[name], lw=1)
        ax.scatter([b["predicted"] for b in bins], [b["observed"] for b in bins], s=[4 + 400 * b["groups"] / total
                   for b in bins], color=style.color[name], label=label, zorder=3)
        hx.bar([b["bin"] / 10 + 0.05 for b in bins], [b["groups"] / total for b in bins], 0.09, alpha=0.5,
               color=style.color[name], label=name)
    ax.set_xlabel("predicted P(zero variance)")
    ax.set_ylabel("observed zero-variance rate")
    ax.set_title("reliability (groups rolled out, predicted before their outcome)", fontsize=10)
    hx.set_xlabel("predicted P(zero variance)")
    hx.set_ylabel("share of groups")
    hx.set_title("where the predictions fall", fontsize=10)
    _legend_below(fig, [ax])
    return _image(fig)


def _table(summary: dict[str, Any] | None, runs: Sequence[str | Path], names: Sequence[str]) -> str:
    from .tables import headline_rows

    if summary:
        head, rows = headline_rows(summary)
    else:
        from ..trainer.summary import summarize_run

        def f(x: Any, fmt: str) -> str:
            return "-" if x is None else fmt.format(x)

        head = ("run", "best acc", "final acc", "rollouts", "gen tokens", "train wall s", "effective share", "steps")
        rows = []
        for run, name in zip(runs, names):
            s = summarize_run(run) if _has_steps(run) else _groups_summary(run)
            rows.append((name, f(s["eval_best"], "{:.3f}"), f(s["eval_final"], "{:.3f}"), f(s["rollouts"], "{:.0f}"),
                         f(s["gen_tokens"], "{:.0f}"), f(s["train_wall_s"], "{:.0f}"),
                         f(s["effective_share"], "{:.2f}"), str(s["steps"])))
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _has_steps(run: str | Path) -> bool:
    from ..rundir import RunDir

    return bool(RunDir(run).read_metrics())


def _groups_summary(run: str | Path) -> dict[str, Any]:
    """The headline of a run whose ledger holds groups only (``rollsift trace import``): costs from its
    train groups; no evaluation, no wall time."""
    from ..rundir import RunDir

    rollouts = informative = 0
    steps = set()
    with RunDir(run).open_ledger() as ledger:
        for g in ledger.groups("train"):
            rollouts += g.n
            informative += g.n if 0 < g.n_correct < g.n else 0
            steps.add(g.step)
    return {"eval_best": None, "eval_final": None, "rollouts": rollouts, "gen_tokens": None, "train_wall_s": None,
            "effective_share": informative / rollouts if rollouts else None, "steps": len(steps)}


def _has(rows: Sequence[dict], prefix: str) -> bool:
    return any(k.startswith(prefix) for r in rows for k in r)


def render(runs: Sequence[str | Path], out: str | Path, summary: dict[str, Any] | None = None,
           heatmap_prompts: int = 200) -> Path:
    """Write ``out/report.html`` for ``runs``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from ..rundir import RunDir

    names = labels(runs)
    named = {n: RunDir(r).read_metrics() for n, r in zip(names, runs)}
    style = _Style(names)
    pruned = {n: rows for n, rows in named.items() if _has(rows, "prune/")}  # runs without a pruner prune nothing
    figures: list[tuple[str, str | None]] = [
        ("Held-out accuracy against cost", accuracy_figure(named, style)),
        ("Zero-variance share of groups per step", metric_figure(named, style, [
            ("zero-variance share (generated)", ["step/zero_variance_frac"]),
            ("zero-variance share (training batch)", ["batch/zero_variance_frac"]),
            ("effective-rollout share (cumulative)", ["cost/effective_share"])], smooth=True)),
        ("GRESO", metric_figure(named, style, [
            ("p_easy (solid) / p_hard (dashed)", ["select/greso/p_easy", "select/greso/p_hard"]),
            ("skip rate", ["select/greso/skip_frac"])], smooth=True)),
        ("Posterior selector", metric_figure(named, style, [
            ("tau (keep threshold on P(informative))", ["select/posterior/tau"]),
            ("expected share of informative groups lost", ["select/posterior/expected_lost"]),
            ("skip rate", ["select/posterior/skip_frac"])], smooth=True)),
        ("Learned selector", metric_figure(named, style, [
            ("tau (keep threshold on predicted P(informative))", ["select/learned/tau"]),
            ("measured share of informative groups lost", ["select/learned/expected_lost"]),
            ("AUC of P(zero variance) over the run so far", ["select/learned/auc"]),
            ("skip rate", ["select/learned/skip_frac"])], smooth=True)),
        ("Learned selector: calibration", calibration_figure(named, style)),
        ("DOTS", metric_figure(named, style, [
            ("predictor Pearson r (held-out references)", ["select/dots/pearson"]),
            ("chosen prompts: informative share", ["select/dots/chosen_informative_frac"])], smooth=True)),
        ("Pruning", metric_figure(pruned, style, [
            ("quality head AUC, unbiased rollouts of the last steps (pooled / within a group)",
             ["prune/quality_head/auc_window", "prune/quality_head/auc_within_window"]),
            ("pruned fraction of started rollouts", ["prune/quality_head/pruned_frac"]),
            ("pruned rollouts (cumulative)", ["cost/pruned_rollouts_total"]),
            ("tokens saved per step", ["prune/quality_head/tokens_saved"])])),
        ("Staleness of the groups trained on", staleness_figure(runs, names, style)),
    ]
    for r, n in zip(runs, names):
        figures.append((f"Outcome heat map: {n}", heatmap_figure(r, n, heatmap_prompts)))
    parts = [f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' {img}/>"
             for t, img in figures if img]
    cards = _cards(runs, names)
    if cards:
        from .card import html_table

        parts.insert(1, "<h2>Realism card</h2><p>This run's dynamics beside what the papers report for real "
                        "RLVR runs (<code>rollsift ledger card RUN</code>; docs/testbed.md says what each figure "
                        f"means for each method).</p>{html_table(cards)}")
    title = f"rollsift report: {summary['preset']}" if summary else "rollsift report"
    intro = ""
    if summary:
        intro = (f"<p>{html.escape(summary['description'])}. "
                 f"Reference run: <b>{html.escape(summary['reference'])}</b>; "
                 f"target = {summary['target_fraction']} x its best held-out accuracy (per seed). "
                 f"'x' columns: the reference's cost to target divided by the run's (2 = half the cost). "
                 f"Command: <code>{html.escape(summary['command'])}</code> ({html.escape(summary['date'])}).</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{intro}{_table(summary, runs, names)}{''.join(parts)}</body></html>")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(page)
    return path


def _cards(runs: Sequence[str | Path], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    from ..rundir import RunDir
    from .card import card

    return {n: card(r) for r, n in zip(runs, names) if RunDir(r).has_ledger()}


def main(argv: Sequence[str] | None = None) -> int:
    from ..rundir import RunDir

    args = _parser().parse_args(argv)
    missing = [r for r in args.runs if not (RunDir(r).metrics_path.is_file() or RunDir(r).has_ledger())]
    if missing:
        print(f"rollsift report: no metrics.jsonl or ledger.sqlite in {', '.join(missing)}; pass run "
              f"directories (or ledger files)", file=sys.stderr)
        return 2
    summary = json.loads(Path(args.summary).read_text()) if args.summary else None
    print(f"wrote {render(args.runs, args.out, summary, args.heatmap_prompts)}")
    return 0
