"""Tables shared by the console and report.html (kept apart so that ``compare`` and ``report`` do not
import each other)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

COSTS = ("rollouts", "gen_tokens", "train_wall_s")


def title_line(summary: dict[str, Any]) -> str:
    if summary.get("target_mode", "per-seed") == "shared" and summary.get("target") is not None:
        bar = f"{summary['target']:.3f} (shared by all seeds)"
    else:
        bar = ", ".join(f"seed {k}: {'-' if v is None else f'{v:.3f}'}" for k, v in summary["targets"].items())
    seeds = len(summary["seeds"])
    return (f"{summary['preset']}, {seeds} seed{'s' if seeds > 1 else ''}: target = {summary['target_fraction']} x "
            f"best of '{summary['reference']}' = {bar}; 'x' = times cheaper than the reference (geometric mean "
            f"over seeds [95% interval]); a verdict only where the interval excludes 1")


def headline_rows(summary: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The headline table, shared by the console and report.html: means over seeds with their 95%
    interval when there are several, seeds that reached the target, and each cost ratio against the
    reference with its interval and verdict."""
    many = len(summary["seeds"]) > 1

    def f(st: dict[str, Any] | None, fmt: str) -> str:  # None: a key an older summary.json lacks
        if not st or st["mean"] is None:
            return "-"
        text = fmt.format(st["mean"])
        if many and st.get("lo") is not None:
            text += f" [{fmt.format(st['lo'])}, {fmt.format(st['hi'])}]"
        elif many and st.get("n", 0) > 1:
            text += f" +-{fmt.format(st['std'])}"
        return text

    def ratio(e: dict[str, Any], k: str) -> str:
        r = (e.get("ratios") or {}).get(k)
        if r is None:  # an older summary.json
            return f(e["mean"].get(f"vs_reference_{k}"), "{:.2f}")
        if r["geo_mean"] is None:
            return "never" if r.get("seeds_not_reached") else "-"
        text = f"{r['geo_mean']:.2f}"
        if r["lo"] is not None:
            text += f" [{r['lo']:.2f}, {r['hi']:.2f}]"
        if r["verdict"] in ("better", "worse"):
            text += f" {r['verdict']}"
        if r.get("seeds_not_reached"):
            text += f" ({r['seeds_not_reached']} never)"
        return text

    def per_step(e: dict[str, Any]) -> str:  # the reference's update time per step / the run's
        r = (e.get("per_step") or {}).get("train_s_per_step")
        if not r or r["geo_mean"] is None:
            return "-"
        text = f"{r['geo_mean']:.2f}" + (f" [{r['lo']:.2f}, {r['hi']:.2f}]" if r["lo"] is not None else "")
        return text + (f" {r['verdict']}" if r["verdict"] in ("better", "worse") else "")

    head = ("run", "best acc", "final acc", "rollouts", "train wall s", "effective share", "reached",
            "rollouts to target", "wall to target", "rollouts x", "tokens x", "wall x", "update/step x")
    rows = []
    n = len(summary["seeds"])
    for e in summary["runs"]:
        m = defaultdict(lambda: None, e["mean"])
        name = e["name"] + (" (ref)" if e["name"] == summary["reference"] else "")
        rows.append((name, f(m["eval_best"], "{:.3f}"), f(m["eval_final"], "{:.3f}"), f(m["rollouts"], "{:.0f}"),
                     f(m["train_wall_s"], "{:.0f}"), f(m["effective_share"], "{:.2f}"),
                     f"{e.get('reached_target', '-')}/{n}", f(m["to_target_rollouts"], "{:.0f}"),
                     f(m["to_target_train_wall_s"], "{:.0f}"), *(ratio(e, k) for k in COSTS), per_step(e)))
    return head, rows
