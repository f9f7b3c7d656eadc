"""``rollsift ledger show RUN [--json]``: what a run did with its prompts.

Prompt states, skips, groups by purpose, and the two observations GRESO is founded on, measured on
this run's training groups (definitions in docs/ledger.md, "ledger show"):

(a) persistence: P(zero-variance in epoch e+1 | zero-variance in epoch e), each prompt's epoch
    represented by its last training group of that epoch; also conditioned on all-correct (easy)
    and on all-wrong (hard);
(b) revival: the share of prompts that had a zero-variance training group and later had an
    informative (mixed) one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..ledger import LedgerBase
from ..records import PURPOSES

EASY, HARD, MIXED = "easy", "hard", "mixed"


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def _kind(n: int, k: int) -> str:
    return EASY if n > 0 and k == n else HARD if k == 0 else MIXED


def summarize(ledger_or_path: LedgerBase | str | Path) -> dict[str, Any]:
    """Everything ``ledger show`` prints, as a JSON-ready dict (None where a share has no denominator)."""
    if not isinstance(ledger_or_path, LedgerBase):
        from ..rundir import RunDir

        with RunDir(ledger_or_path).open_ledger() as ledger:
            return summarize(ledger)
    ledger = ledger_or_path
    st = ledger.state
    out: dict[str, Any] = {"attempts": len(ledger.attempts()), "rollbacks": [a for _, a in ledger.attempts()[1:]]}
    steps = ledger.steps()
    out["steps"] = {"recorded": len(steps), "last": max((s.step for s in steps), default=None)}
    out["prompts"] = _prompt_states(st)

    # one pass over every group event: counts by purpose, rolled-back counts, per-epoch kinds
    by_purpose = {p: Counter() for p in PURPOSES}
    hidden = Counter()
    last_in_epoch: dict[str, dict[int, str]] = defaultdict(dict)
    kinds_in_order: dict[str, list[str]] = defaultdict(list)
    for g in ledger.groups(include_rolled_back=True):
        if not g.live:
            hidden["groups"] += 1
            continue
        c = by_purpose.setdefault(g.purpose, Counter())
        kind = _kind(g.n, g.n_correct)
        c["groups"] += 1
        c["rollouts"] += g.n
        c["pruned"] += g.pruned
        c[kind] += 1
        c["accuracy_sum"] += g.accuracy
        if g.purpose == "train":
            last_in_epoch[g.prompt_id][g.epoch] = kind
            kinds_in_order[g.prompt_id].append(kind)
    out["groups"] = {
        p: {"groups": c["groups"], "rollouts": c["rollouts"], "pruned_rollouts": c["pruned"],
            "all_correct": c[EASY], "all_wrong": c[HARD], "mixed": c[MIXED],
            "zero_variance_frac": _share(c[EASY] + c[HARD], c["groups"]),
            "mean_accuracy": _share(c["accuracy_sum"], c["groups"])}
        for p, c in by_purpose.items()
    }

    decisions, skips_by_reason = 0, Counter()
    for d in ledger.decisions(include_rolled_back=True):
        if not d.live:
            hidden["selections"] += 1
            continue
        decisions += 1
        if not d.kept:
            skips_by_reason[d.reason] += 1
    skips = st.column("skips")
    out["skips"] = {"decisions": decisions, "skip_decisions": int(skips.sum()),
                    "prompts_ever_skipped": int((skips > 0).sum()), "by_reason": dict(skips_by_reason.most_common())}
    hidden["filters"] = sum(not f.live for f in ledger.filters(include_rolled_back=True))
    hidden["steps"] = sum(not s.live for s in ledger.steps(include_rolled_back=True))
    out["rolled_back_events"] = {k: hidden[k] for k in ("groups", "selections", "filters", "steps")}
    out["greso"] = {"persistence": _persistence(last_in_epoch), "revival": _revival(kinds_in_order)}
    out["uses"] = _uses(ledger)
    return out


def staleness_by_kind(ledger: LedgerBase) -> dict[str, Counter]:
    """Live use events counted by kind (``UseRow.kind``) and staleness; shared with the report's histogram."""
    stale: dict[str, Counter] = {"fresh": Counter(), "carried": Counter(), "replayed": Counter()}
    for u in ledger.uses():
        stale[u.kind][u.staleness] += 1
    return stale


def _uses(ledger: LedgerBase) -> dict[str, Any]:
    """Groups trained on, by kind (fresh: generated for the step that used it; carried: kept from an
    earlier step by dynamic sampling; replayed), with their staleness (trainer version - group version)."""
    stale = staleness_by_kind(ledger)
    return {k: {"groups": sum(c.values()), "mean_staleness": _share(sum(v * n for v, n in c.items()), sum(c.values())),
                "max_staleness": max(c, default=None), "histogram": {str(v): n for v, n in sorted(c.items())}}
            for k, c in stale.items()}


def _prompt_states(st) -> dict[str, Any]:
    """Registered prompts by state (every prompt seen, when no pool was registered)."""
    ids = st.ids[1:]
    rollouts, registered = st.column("rollouts"), st.column("registered")
    scope = registered if registered.any() else np.ones(len(ids), bool)
    state = np.full(len(ids), MIXED, dtype=object)
    state[rollouts == 0] = "never_rolled_out"
    state[(rollouts > 0) & (st.column("all_correct") == rollouts)] = "always_solved"
    state[(rollouts > 0) & (st.column("all_wrong") == rollouts)] = "never_solved"
    names = ("never_rolled_out", "always_solved", "never_solved", MIXED)
    counts = Counter(state[scope])
    res: dict[str, Any] = {"scope": "registered" if registered.any() else "seen", "total": int(scope.sum()),
                           "unregistered_seen": int((~registered & (rollouts > 0)).sum()) if registered.any() else 0}
    res.update({k: counts.get(k, 0) for k in names})
    if st.labels:
        by_label: dict[str, Counter] = defaultdict(Counter)
        for pid, s in zip(np.array(ids, dtype=object)[scope], state[scope]):
            by_label[str(st.labels.get(pid))][s] += 1
        res["by_label"] = {lab: {k: c.get(k, 0) for k in names} for lab, c in sorted(by_label.items())}
    return res


def _persistence(last_in_epoch: dict[str, dict[int, str]]) -> dict[str, Any]:
    pairs = 0
    cond = {k: Counter() for k in ("zero_variance", EASY, HARD)}
    by_epoch: dict[int, Counter] = defaultdict(Counter)
    for epochs in last_in_epoch.values():
        for e, now in epochs.items():
            nxt = epochs.get(e + 1)
            if nxt is None:
                continue
            pairs += 1
            zv_next = nxt != MIXED
            by_epoch[e]["pairs"] += 1
            if now != MIXED:
                for key in ("zero_variance", now):
                    cond[key]["pairs"] += 1
                    cond[key]["next_zero_variance"] += zv_next
                cond[now]["next_same"] += nxt == now
                by_epoch[e]["zero_variance_pairs"] += 1
                by_epoch[e]["next_zero_variance"] += zv_next
    res: dict[str, Any] = {"pairs": pairs}
    for key, c in cond.items():
        res[key] = {"pairs": c["pairs"], "next_zero_variance": c["next_zero_variance"],
                    "p_next_zero_variance": _share(c["next_zero_variance"], c["pairs"])}
        if key != "zero_variance":
            res[key]["next_same"] = c["next_same"]
            res[key]["p_next_same"] = _share(c["next_same"], c["pairs"])
    res["by_epoch"] = [{"epoch": e, "pairs": c["pairs"], "zero_variance_pairs": c["zero_variance_pairs"],
                        "p_next_zero_variance": _share(c["next_zero_variance"], c["zero_variance_pairs"])}
                       for e, c in sorted(by_epoch.items())]
    return res


def _revival(kinds_in_order: dict[str, list[str]]) -> dict[str, Any]:
    res = {}
    for key, hit in (("zero_variance", (EASY, HARD)), (EASY, (EASY,)), (HARD, (HARD,))):
        prompts = again = revived = 0
        for kinds in kinds_in_order.values():
            first = next((i for i, k in enumerate(kinds) if k in hit), None)
            if first is None:
                continue
            prompts += 1
            later = kinds[first + 1:]
            again += bool(later)
            revived += MIXED in later
        res[key] = {"prompts": prompts, "rolled_out_again": again, "revived": revived,
                    "share": _share(revived, prompts), "share_of_rolled_out_again": _share(revived, again)}
    return res


# ---------------------------------------------------------------------- CLI
def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render(s: dict[str, Any], title: str = "ledger") -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    rb = s["rolled_back_events"]
    resumes = (f"resumed {len(s['rollbacks'])} time(s), rolled back to step(s) "
               f"{', '.join(map(str, s['rollbacks']))}; hidden by the rollbacks: {rb['groups']} groups, "
               f"{rb['selections']} decisions" if s["rollbacks"] else "never resumed")
    con.print(f"[bold]{title}[/]: {s['steps']['recorded']} steps recorded (last {_fmt(s['steps']['last'])}), "
              f"{resumes}")

    p = s["prompts"]
    labels = list(p.get("by_label", {}))
    t = Table(title=f"Prompts by state ({p['scope']}: {p['total']})",
              caption=("columns 'label X': prompts whose pool label is X (the testbed labels its difficulty "
                       "tier; for analysis only)") if labels else None)
    for col in ["state", "prompts", "share"] + [f"label {x}" for x in labels]:
        t.add_column(col, justify="left" if col == "state" else "right", no_wrap=True)
    for k in ("never_rolled_out", "always_solved", "never_solved", "mixed"):
        t.add_row(k, str(p[k]), _fmt(_share(p[k], p["total"])),
                  *(str(p["by_label"][x][k]) for x in labels))
    con.print(t)

    sk = s["skips"]
    t = Table(title="Selection")
    t.add_column("")
    t.add_column("count", justify="right")
    t.add_row("decisions", str(sk["decisions"]))
    t.add_row("skips", str(sk["skip_decisions"]))
    t.add_row("prompts ever skipped", str(sk["prompts_ever_skipped"]))
    for reason, n in sk["by_reason"].items():
        t.add_row(f"skips: {reason}", str(n))
    con.print(t)

    t = Table(title="Groups by purpose")
    rows = {"groups": "groups", "rollouts": "rollouts", "pruned_rollouts": "pruned rollouts",
            "all_correct": "all correct", "all_wrong": "all wrong", "mixed": "mixed",
            "zero_variance_frac": "zero-variance share", "mean_accuracy": "mean accuracy"}
    purposes = [x for x, g in s["groups"].items() if g["groups"]] or list(s["groups"])
    t.add_column("")
    for purpose in purposes:
        t.add_column(purpose, justify="right", no_wrap=True)
    for key, name in rows.items():
        t.add_row(name, *(_fmt(s["groups"][x][key]) for x in purposes))
    con.print(t)

    per = s["greso"]["persistence"]
    t = Table(title=f"GRESO (a): a prompt's next epoch ({per['pairs']} epoch pairs)")
    for c in ("this epoch", "pairs", "P(zero-variance next)", "P(same next)"):
        t.add_column(c, justify="left" if c == "this epoch" else "right")
    for key, name in (("zero_variance", "zero-variance"), ("easy", "all correct"), ("hard", "all wrong")):
        r = per[key]
        p_zv = r["p_next_zero_variance"]
        t.add_row(name, str(r["pairs"]), _fmt(p_zv), _fmt(r.get("p_next_same", p_zv)))
    con.print(t)

    uses = s.get("uses", {})
    if any(u["groups"] for u in uses.values()):
        t = Table(title="Groups trained on (staleness = trainer's policy version - the group's)")
        for c in ("kind", "groups", "mean staleness", "max", "histogram"):
            t.add_column(c, justify="left" if c in ("kind", "histogram") else "right")
        for kind, u in uses.items():
            t.add_row(kind, str(u["groups"]), _fmt(u["mean_staleness"]), _fmt(u["max_staleness"]),
                      " ".join(f"{v}:{n}" for v, n in u["histogram"].items()))
        con.print(t)

    rev = s["greso"]["revival"]
    t = Table(title="GRESO (b): mixed again after a zero-variance group")
    for c in ("first", "prompts", "again", "revived", "share", "share of again"):
        t.add_column(c, justify="left" if c == "first" else "right")
    for key, name in (("zero_variance", "zero-variance"), ("easy", "all correct"), ("hard", "all wrong")):
        r = rev[key]
        t.add_row(name, str(r["prompts"]), str(r["rolled_out_again"]), str(r["revived"]), _fmt(r["share"]),
                  _fmt(r["share_of_rolled_out_again"]))
    con.print(t)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rollsift ledger show", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (holding ledger.sqlite) or the ledger file")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    from ..rundir import RunDir

    rundir = RunDir(args.run)
    path = rundir.ledger_path
    if not rundir.has_ledger():
        print(f"rollsift ledger show: no ledger at {str(path)!r}", file=sys.stderr)
        return 2
    s = summarize(path)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        render(s, title=str(path))
    return 0
