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

The reference column: the same figures on a real run (by default the shipped half trace of a GRPO
run of Qwen2.5-Math-1.5B, ``trace_import.shipped_trace``; ``--reference LEDGER`` for any other, e.g.
one written by ``rollsift trace import``), read at this run's horizon: the transitions, shares and
"regained" figures all grow or drift with the number of visits, so each reference prompt keeps
only its first visits, as many as a prompt of this run had (``at_horizon``: the run's distribution
of visits per prompt, whose mean is the H in the column's title). A published figure is
set beside ours only where its definition and horizon match: GRESO's "over 90%" and "about 20%"
do not say over how many visits they were read, so they are listed in the notes, not compared.
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
    "earlier_zero_variance": (0.90, "over 90%", "GRESO blog, Qwen2.5-Math-7B; horizon not reported"),
    "regained": (0.20, "about 20%", "GRESO blog, Qwen2.5-Math-7B; horizon not reported"),
    "generation_share": (0.88, "78% / 88% / 91%", "GRESO Table 2, dynamic sampling: Qwen2.5-Math-1.5B / 7B / "
                                                  "R1-Distill-1.5B"),
    "visits_per_prompt": (38.0, "about 38 (derived)", "GRESO Table 1: 7.6M rollouts / 8 per group / ~25k DM "
                                                      "prompts, dynamic sampling, Qwen2.5-Math-1.5B"),
}
# figures that depend on the number of visits, whose published value says not at how many: not compared
HORIZON_UNKNOWN = ("earlier_zero_variance", "regained")


def _kind(n: int, k: int) -> str:
    return "all_correct" if n > 0 and k == n else "all_wrong" if k == 0 else "mixed"


def card(ledger_or_run: Any, reference: Any = "shipped") -> dict[str, Any]:
    """The card of a run (a LedgerBase, a run directory or a ledger file) as a JSON-ready dict.

    ``reference``: "shipped" (the shipped real trace where it is found, else no reference), None
    (none), or a real run to read at this run's horizon (a LedgerBase, run directory or ledger file)."""
    from ..ledger import LedgerBase

    if not isinstance(ledger_or_run, LedgerBase):
        from ..rundir import RunDir

        with RunDir(ledger_or_run).open_ledger() as ledger:
            return card(ledger, reference)
    ledger = ledger_or_run
    visits: dict[str, list[str]] = defaultdict(list)
    by_step: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # step -> [groups, zero-variance]
    for g in ledger.groups("train"):
        kind = _kind(g.n, g.n_correct)
        visits[g.prompt_id].append(kind)
        by_step[g.step][0] += 1
        by_step[g.step][1] += kind != "mixed"
    steps = sorted(by_step)
    share = [by_step[s][1] / by_step[s][0] for s in steps]
    tenth = max(1, len(share) // 10)
    pool, _ = ledger.pool()
    out: dict[str, Any] = dynamics(visits)
    out.update({
        "steps": len(steps),
        "zero_variance_share": {"mean": _mean(share), "first_tenth": _mean(share[:tenth]),
                                "last_tenth": _mean(share[-tenth:]), "per_step": dict(zip(steps, share))},
        "pool_passes": out["groups"] / len(pool) if pool else None,
        "generation_share": _generation_share(ledger),
    })
    out["published"] = {k: {"value": v, "text": t, "source": s, "compared": k not in HORIZON_UNKNOWN}
                        for k, (v, t, s) in PUBLISHED.items()}
    out["reference"] = _reference(reference, [len(k) for k in visits.values()])
    return out


def _reference(reference: Any, run_counts: list[int]) -> dict[str, Any]:
    """The reference run's figures at this run's horizon (``run_counts``: visits of each of this run's
    prompts), or why there are none."""
    if reference is None:
        return {"source": None, "note": "no reference run asked for"}
    if reference == "shipped":
        from .trace_import import SHIPPED_N, read_shipped, shipped_trace

        path = shipped_trace()
        if path is None:
            return {"source": None, "note": "the shipped real trace is not beside this installation "
                                            "(../shared/data/real_trace/ next to a source checkout, or "
                                            "$ROLLSIFT_REFERENCE_TRACE); pass --reference LEDGER"}
        visits: dict[str, list[str]] = defaultdict(list)
        for g in read_shipped(path, SHIPPED_N):  # visit order per prompt is the file's; the seed does not matter
            visits[g.prompt_id].append(_kind(g.n, g.n_correct))
        source = str(path)
    else:
        from ..ledger import LedgerBase

        if not isinstance(reference, LedgerBase):
            from ..rundir import RunDir

            with RunDir(reference).open_ledger() as led:
                return {**_reference(led, run_counts), "source": str(reference)}
        visits = defaultdict(list)
        for g in reference.groups("train"):
            visits[g.prompt_id].append(_kind(g.n, g.n_correct))
        source = "ledger"
    full = dynamics(visits)
    if not run_counts or not full["groups"]:
        return {**full, "source": source, "horizon": None, "note": "nothing to compare (no train groups)"}
    horizon = sum(run_counts) / len(run_counts)
    out = dynamics(at_horizon(visits, run_counts))
    note = (f"the first visits of each reference prompt, as many as a prompt of this run had ({horizon:.1f} on "
            f"average)")
    if horizon > full["visits_per_prompt"] + 0.5:
        note += (f"; the reference has only {full['visits_per_prompt']:.1f} visits per prompt, so the horizons "
                 f"differ")
    out.update(source=source, horizon=round(horizon, 1), reference_visits_per_prompt=full["visits_per_prompt"],
               note=note)
    return out


def at_horizon(visits: dict[str, list[str]], run_counts: Sequence[int]) -> dict[str, list[str]]:
    """The reference's visits cut to the run's horizon: its prompts, ranked by their own number of
    visits (ties in a fixed order unrelated to outcomes, the sha1 of the id), take the run's visit
    counts at the same quantile, so the cut reference has the run's distribution of visits per prompt
    (not only its mean), and a run read against itself is not cut at all; each prompt keeps its first
    visits, all of them where it has fewer."""
    import hashlib

    counts = sorted(run_counts)
    ids = sorted(visits, key=lambda p: (len(visits[p]), hashlib.sha1(p.encode()).hexdigest()))
    return {p: visits[p][:counts[i * len(counts) // len(ids)]] for i, p in enumerate(ids)}


def dynamics(visits: dict[str, list[str]]) -> dict[str, Any]:
    """The per-prompt figures of a run from each prompt's outcomes in visit order (``KINDS``)."""
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
    groups = sum(len(k) for k in visits.values())
    zero = sum(k != "mixed" for ks in visits.values() for k in ks)
    return {
        "groups": groups, "prompts": len(visits),
        "transitions": transitions, "transition_counts": counts,
        "earlier_zero_variance": _share(zv_seen_before, zv_revisited), "zero_variance_revisited": zv_revisited,
        "regained": _share(regained, once_zv), "regained_of_visited_again": _share(regained, once_zv_again),
        "once_zero_variance_prompts": once_zv,
        "zero_variance_group_share": _share(zero, groups),
        "visits_per_prompt": groups / len(visits) if visits else None,
    }


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
    ("zero_variance_group_share", "zero-variance share of groups", "all-correct or all-wrong groups over all groups"),
    ("zero_variance_share", "zero-var share (mean/first/last)",
     "zero-variance share of a step's groups: over all steps, the first and the last tenth"),
    ("all_wrong", "after all-wrong (W/M/C)", "next visit's outcome: all wrong / mixed / all correct"),
    ("mixed", "after mixed (W/M/C)", "the same after a mixed group"),
    ("all_correct", "after all-correct (W/M/C)", "the same after an all-correct group"),
)


def rows(c: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, this run, reference run at this run's horizon, published) rows, shared by the console
    and report.html; "-" where a figure has no counterpart."""
    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    num = lambda x, f="{:.1f}": "-" if x is None else f.format(x)  # noqa: E731

    def value(d: dict[str, Any] | None, key: str) -> str:
        if not d or (key not in KINDS and key not in d):
            return "-"
        if key in KINDS:
            return " / ".join(num(d["transitions"][key][b], "{:.2f}") for b in KINDS)
        if key == "zero_variance_share":
            return " / ".join(pct(d[key][k]) for k in ("mean", "first_tenth", "last_tenth"))
        return num(d[key]) if key in ("visits_per_prompt", "pool_passes") else pct(d[key])

    ref = c.get("reference") or {}
    ref = ref if "transitions" in ref else None
    out = []
    for key, label, _ in LABELS:
        pub = c["published"].get(key)
        shown = pub["text"] if pub and pub.get("compared", True) else "not compared (horizon unknown)" if pub else "-"
        out.append((label, value(c, key), value(ref, key), shown))
    return out


def notes(c: dict[str, Any]) -> list[str]:
    """What each row means, which reference run and horizon, and where each published figure comes from."""
    lines = [f"{label}: {text}" for _, label, text in LABELS]
    ref = c.get("reference") or {}
    lines.append(f"reference: {ref['source']}, {ref['note']}" if ref.get("source") else f"reference: none ({ref.get('note')})")
    lines += [f"published {key.replace('_', ' ')}: {p['text']}, {p['source']}" for key, p in c["published"].items()]
    return lines


def render(c: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Realism card: {title} ({c['groups']:,} training groups, {c['prompts']:,} prompts, "
                      f"{c['steps']} steps)")
    horizon = (c.get("reference") or {}).get("horizon")
    ref_col = f"real run @ {horizon} visits" if horizon else "real run"
    for col in ("figure", "this run", ref_col, "published"):
        tab.add_column(col, justify="left" if col in ("figure", "published") else "right", no_wrap=col != "published")
    for r in rows(c):
        tab.add_row(*r)
    con = Console(width=140)
    con.print(tab)
    for line in notes(c):
        con.print(f"  {line}", highlight=False)


def html_table(cards: dict[str, dict[str, Any]]) -> str:
    """One table for the report: a column per run, the published figures beside them."""
    import html

    names = list(cards)
    per = {n: rows(c) for n, c in cards.items()}
    first = per[names[0]]
    # the reference is read at each run's horizon, so each run gets its own reference column
    refs = [n for n in names if (cards[n].get("reference") or {}).get("horizon")]
    heads = [x for n in names for x in ([n] + ([f"real run @ {cards[n]['reference']['horizon']} visits"]
                                              if n in refs else []))]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in ["figure", *heads, "published"])
    trs = []
    for i, (label, _, _, published) in enumerate(first):
        cells = [label, *(x for n in names for x in ([per[n][i][1]] + ([per[n][i][2]] if n in refs else []))),
                 published]
        trs.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    foot = "".join(f"<li>{html.escape(x)}</li>" for x in notes(cards[names[0]]))
    return f"<table><tr>{th}</tr>{''.join(trs)}</table><ul style='font-size:small'>{foot}</ul>"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rollsift ledger card", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (holding ledger.sqlite) or the ledger file; any engine")
    ap.add_argument("--json", action="store_true", help="print the card as JSON")
    ap.add_argument("--reference", default="shipped", metavar="LEDGER",
                    help="the real run to read beside this one, at its horizon: a ledger (e.g. from rollsift trace "
                         "import), 'shipped' (default: the shipped half trace, when found) or 'none'")
    args = ap.parse_args(argv)
    from ..rundir import RunDir

    reference = None if args.reference == "none" else args.reference
    if reference not in (None, "shipped") and not RunDir(reference).has_ledger():
        from ..configlib import ConfigError

        raise ConfigError(f"--reference {reference}: no ledger there; pass a ledger file or run directory (rollsift "
                          f"trace import writes one), 'shipped' or 'none'")
    c = card(RunDir(args.run).ledger_path if Path(args.run).is_dir() else args.run, reference)
    if args.json:
        print(json.dumps(c, indent=2))
    else:
        render(c, str(args.run))
    return 0


__all__ = ["LABELS", "PUBLISHED", "card", "dynamics", "html_table", "main", "notes", "render", "rows"]
