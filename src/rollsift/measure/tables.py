"""Tables shared by the console and report.html (kept apart so that ``compare`` and ``report`` do not
import each other)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

COSTS = ("rollouts", "gen_tokens", "train_wall_s")


def headline_rows(summary: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The headline table (means over seeds, "+-std" with several), shared by the console and report.html."""
    many = len(summary["seeds"]) > 1

    def f(st: dict[str, Any] | None, fmt: str) -> str:  # None: a key an older summary.json lacks
        if not st or st["mean"] is None:
            return "-"
        return fmt.format(st["mean"]) + (f" +-{fmt.format(st['std'])}" if many and st["n"] > 1 else "")

    head = ("run", "best acc", "final acc", "rollouts", "gen tokens", "train wall s", "effective share",
            "rollouts to target", "tokens to target", "wall to target", "rollouts x", "tokens x", "wall x")
    rows = []
    for e in summary["runs"]:
        m = defaultdict(lambda: None, e["mean"])
        name = e["name"] + (" (ref)" if e["name"] == summary["reference"] else "")
        rows.append((name, f(m["eval_best"], "{:.3f}"), f(m["eval_final"], "{:.3f}"), f(m["rollouts"], "{:.0f}"),
                     f(m["gen_tokens"], "{:.0f}"), f(m["train_wall_s"], "{:.0f}"), f(m["effective_share"], "{:.2f}"),
                     *(f(m[f"to_target_{k}"], "{:.0f}") for k in COSTS),
                     *(f(m[f"vs_reference_{k}"], "{:.2f}") for k in COSTS)))
    return head, rows
