"""``rollsift ledger card RUN [--json]``: how far a run's dynamics are from a real RLVR run.

Read from the ledger alone, so a rollsift, TRL or verl run gets the same card. Each figure stands
beside the published one where a paper gives it (GRESO, arXiv 2506.02177, and its blog; the notes
in shared/research/greso_dapo.md section 1c), so a reader can tell whether a method's result on
this run says anything about a real one. Training groups only (probes excluded), live events only.

* transitions: P(next visit's outcome | this visit's outcome) over consecutive training groups
  of a prompt, outcomes all-wrong / mixed / all-correct;
* earlier zero-variance: of the zero-variance groups whose prompt had an earlier visit, the share
  whose prompt was zero-variance at some earlier visit (GRESO: over 90%, Qwen2.5-Math-7B);
* regained: of the prompts that had a zero-variance group, the share with an informative (mixed)
  group later (GRESO: about 20%), also over those visited again;
* zero-variance share of the groups, per step (mean, first and last tenth of the steps);
* visits per prompt (training groups per prompt seen) and passes over the registered pool;
* generation share of step time: ``time/generate`` over the step's wall time, from the step
  records (GRESO Table 2, dynamic sampling: 78% Qwen2.5-Math-1.5B, 88% 7B, 91% R1-Distill-1.5B).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KINDS = ("all_wrong", "mixed", "all_correct")
# what the papers report, beside which the card prints a run's figure
PUBLISHED = {
    "earlier_zero_variance": (0.90, "over 90%", "GRESO blog, Qwen2.5-Math-7B"),
    "regained": (0.20, "about 20%", "GRESO blog, Qwen2.5-Math-7B"),
    "generation_share": (0.88, "78% / 88% / 91%", "GRESO Table 2, dynamic sampling: Qwen2.5-Math-1.5B / 7B / "
                                                  "R1-Distill-1.5B"),
    "visits_per_prompt": (38.0, "about 38 (derived)", "GRESO Table 1: 7.6M rollouts / 8 per group / ~25k DM "
                                                      "prompts, dynamic sampling, Qwen2.5-Math-1.5B"),
}


def _kind(n: int, k: int) -> str:
    return "all_correct" if n > 0 and k == n else "all_wrong" if k == 0 else "mixed"


def card(ledger_or_run: Any) -> dict[str, Any]:
    """The card of a run (a LedgerBase, a run directory or a ledger file) as a JSON-ready dict."""
    from ..ledger.state import LedgerBase

    if not isinstance(ledger_or_run, LedgerBase):
        from ..rundir import RunDir

        with RunDir(ledger_or_run).open_ledger() as ledger:
            return card(ledger)
    ledger = ledger_or_run
    visits: dict[str, list[str]] = defaultdict(list)
    by_step: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # step -> [groups, zero-variance]
    for g in ledger.groups("train"):
        kind = _kind(g.n, g.n_correct)
        visits[g.prompt_id].append(kind)
        by_step[g.step][0] += 1
        by_step[g.step][1] += kind != "mixed"
    counts = {a: dict.fromkeys(KINDS, 0) for a in KINDS}
    zv_revisited = zv_seen_before = 0
    once_zv = regained = once_zv_again = 0
    for kinds in visits.values():
        for a, b in zip(kinds, kinds[1:]):
            counts[a][b] += 1
        zero_before = False
        for i, k in enumerate(kinds):
            if k != "mixed" and i > 0:
                zv_revisited += 1
                zv_seen_before += zero_before
            zero_before = zero_before or k != "mixed"
        first = next((i for i, k in enumerate(kinds) if k != "mixed"), None)
        if first is not None:
            once_zv += 1
            later = kinds[first + 1:]
            once_zv_again += bool(later)
            regained += "mixed" in later
    transitions = {a: {b: (c / sum(row.values()) if sum(row.values()) else None) for b, c in row.items()}
                   for a, row in counts.items()}
    steps = sorted(by_step)
    share = [by_step[s][1] / by_step[s][0] for s in steps]
    tenth = max(1, len(share) // 10)
    pool, _ = ledger.pool()
    groups = sum(len(k) for k in visits.values())
    out: dict[str, Any] = {
        "groups": groups, "prompts": len(visits), "steps": len(steps),
        "transitions": transitions, "transition_counts": counts,
        "earlier_zero_variance": _share(zv_seen_before, zv_revisited), "zero_variance_revisited": zv_revisited,
        "regained": _share(regained, once_zv), "regained_of_visited_again": _share(regained, once_zv_again),
        "once_zero_variance_prompts": once_zv,
        "zero_variance_share": {"mean": _mean(share), "first_tenth": _mean(share[:tenth]),
                                "last_tenth": _mean(share[-tenth:]), "per_step": dict(zip(steps, share))},
        "visits_per_prompt": groups / len(visits) if visits else None,
        "pool_passes": groups / len(pool) if pool else None,
        "generation_share": _generation_share(ledger),
    }
    out["published"] = {k: {"value": v, "text": t, "source": s} for k, (v, t, s) in PUBLISHED.items()}
    return out


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _generation_share(ledger: Any) -> float | None:
    """Generation time over the steps' wall time, from the step records that carry both (rollsift's
    trainer writes them; a host engine's records may not: then None)."""
    gen = wall = 0.0
    last = None
    for s in ledger.steps():
        m = s.metrics
        if "time/generate" not in m:
            continue
        if "time/train_wall" in m:  # cumulative: the step's own wall is the difference
            step_wall = m["time/train_wall"] - (last if last is not None else 0.0)
            last = m["time/train_wall"]
        else:
            step_wall = sum(v for k, v in m.items() if k.startswith("time/") and k.count("/") == 1
                            and k not in ("time/eval", "time/wall", "time/train_wall"))
        gen += m["time/generate"]
        wall += max(step_wall, 0.0)
    return gen / wall if wall > 0 else None


# ---------------------------------------------------------------------- rendering
# (key, short label, definition) of every row, in order
LABELS = (
    ("earlier_zero_variance", "earlier zero-variance",
     "of the zero-variance groups whose prompt had an earlier visit, the share whose prompt was zero-variance "
     "at an earlier visit"),
    ("regained", "regained later", "of the prompts that had a zero-variance group, the share informative later"),
    ("regained_of_visited_again", "regained, of revisited", "the same over those prompts that were visited again"),
    ("generation_share", "generation share of time", "time/generate over the steps' training wall time"),
    ("visits_per_prompt", "visits per prompt", "training groups per prompt seen"),
    ("pool_passes", "passes over the pool", "training groups over the registered pool"),
    ("zero_variance_share", "zero-var share (mean/first/last)",
     "zero-variance share of a step's groups: over all steps, the first and the last tenth"),
    ("all_wrong", "after all-wrong (W/M/C)", "next visit's outcome: all wrong / mixed / all correct"),
    ("mixed", "after mixed (W/M/C)", "the same after a mixed group"),
    ("all_correct", "after all-correct (W/M/C)", "the same after an all-correct group"),
)


def rows(c: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, this run, published) rows, shared by the console and report.html."""
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    num = lambda x, f="{:.1f}": "-" if x is None else f.format(x)  # noqa: E731
    out = []
    for key, label, _ in LABELS:
        if key in KINDS:
            value = " / ".join(num(c["transitions"][key][b], "{:.2f}") for b in KINDS)
        elif key == "zero_variance_share":
            value = " / ".join(pct(c[key][k]) for k in ("mean", "first_tenth", "last_tenth"))
        elif key in ("visits_per_prompt", "pool_passes"):
            value = num(c[key])
        else:
            value = pct(c[key])
        out.append((label, value, c["published"][key]["text"] if key in c["published"] else "-"))
    return out


def notes(c: dict[str, Any]) -> list[str]:
    """What each row means, and where each published figure comes from."""
    lines = [f"{label}: {text}" for _, label, text in LABELS]
    lines += [f"published {key.replace('_', ' ')}: {p['source']}" for key, p in c["published"].items()]
    return lines


def render(c: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Realism card: {title} ({c['groups']:,} training groups, {c['prompts']:,} prompts, "
                      f"{c['steps']} steps)")
    for col in ("figure", "this run", "published"):
        tab.add_column(col, justify="right" if col == "this run" else "left", no_wrap=col != "published")
    for r in rows(c):
        tab.add_row(*r)
    con = Console()
    con.print(tab)
    for line in notes(c):
        con.print(f"  {line}", highlight=False)


def html_table(cards: dict[str, dict[str, Any]]) -> str:
    """One table for the report: a column per run, the published figures beside them."""
    import html

    names = list(cards)
    per = {n: rows(c) for n, c in cards.items()}
    first = per[names[0]]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in ["figure", *names, "published"])
    trs = []
    for i, (label, _, published) in enumerate(first):
        cells = [label, *(per[n][i][1] for n in names), published]
        trs.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    foot = "".join(f"<li>{html.escape(x)}</li>" for x in notes(cards[names[0]]))
    return f"<table><tr>{th}</tr>{''.join(trs)}</table><ul style='font-size:small'>{foot}</ul>"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rollsift ledger card", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (holding ledger.sqlite) or the ledger file; any engine")
    ap.add_argument("--json", action="store_true", help="print the card as JSON")
    args = ap.parse_args(argv)
    from ..rundir import RunDir

    c = card(RunDir(args.run).ledger_path if Path(args.run).is_dir() else args.run)
    if args.json:
        print(json.dumps(c, indent=2))
    else:
        render(c, str(args.run))
    return 0


__all__ = ["LABELS", "PUBLISHED", "card", "html_table", "main", "notes", "render", "rows"]
