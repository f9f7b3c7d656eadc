"""A run's headline figures, read back from its metrics.jsonl."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..rundir import RunDir

SPLIT = ("time/select", "time/generate", "time/score", "time/ledger", "time/filter", "time/train", "time/eval")


def summarize_run(out: str | Path, target: float | None = None, interpolate: bool = False) -> dict[str, Any]:
    """Initial/best/final held-out accuracy, costs and the time split of the run in ``out``.

    With ``target`` (an accuracy), also the rollouts, generated tokens and training wall time
    spent when held-out accuracy first reached it (None when it never did; ``cost_to_reach``).
    """
    rows = RunDir(out).read_metrics()
    if not rows:
        raise ValueError(f"{out}: no step recorded (metrics.jsonl or the ledger); did the run take a step?")
    evals = [r for r in rows if r.get("eval/accuracy") is not None]
    last = rows[-1]
    acc = [r["eval/accuracy"] for r in evals]
    out_: dict[str, Any] = {
        "run": str(out),
        "steps": int(last["step"]),
        "eval_initial": acc[0] if acc else None,
        "eval_final": acc[-1] if acc else None,
        "eval_best": max(acc) if acc else None,
        "greedy_final": evals[-1].get("eval/greedy_accuracy") if evals else None,
        "rollouts": last.get("cost/rollouts_total", 0.0),
        "gen_tokens": last.get("cost/gen_tokens_total", 0.0),
        "informative_rollouts": last.get("cost/informative_rollouts_total", 0.0),
        "effective_share": last.get("cost/effective_share", 0.0),
        "train_wall_s": last.get("time/train_wall", 0.0),
        "wall_s": last.get("time/wall", 0.0),
        "time_split_s": {k.split("/")[1]: last.get(k + "_total", 0.0) for k in SPLIT},
        # per training step: the update alone, and the wall clock without evaluation
        "train_s_per_step": last.get("time/train_total", 0.0) / max(int(last["step"]), 1),
        "step_wall_s": last.get("time/train_wall", 0.0) / max(int(last["step"]), 1),
        "curve": [
            {"step": r["step"], "accuracy": r["eval/accuracy"], "rollouts": r.get("cost/rollouts_total", 0.0),
             "gen_tokens": r.get("cost/gen_tokens_total", 0.0), "train_wall_s": r.get("time/train_wall", 0.0)}
            for r in evals
        ],
    }
    if target is not None:
        out_["to_target"] = cost_to_reach(out_["curve"], target, interpolate)
    return out_


def cost_to_reach(curve: Sequence[dict], target: float, interpolate: bool = False) -> dict[str, float | None]:
    """Cost at the first evaluation whose accuracy is >= target (all None if never).

    ``interpolate``: the costs are read on the straight line between that evaluation and the one
    before it, where the line crosses the target (``step`` stays the evaluation's): evaluations every
    20 steps would otherwise quantise a cost to target by up to 20 steps' worth of rollouts.
    """
    keys = ("rollouts", "gen_tokens", "train_wall_s")
    prev = None
    for point in curve:
        if point["accuracy"] >= target - 1e-12:
            out = {"step": point["step"], **{k: point[k] for k in keys}}
            if interpolate and prev is not None and point["accuracy"] > prev["accuracy"]:
                f = (target - prev["accuracy"]) / (point["accuracy"] - prev["accuracy"])
                out.update({k: prev[k] + f * (point[k] - prev[k]) for k in keys})
            return out
        prev = point
    return {"step": None, "rollouts": None, "gen_tokens": None, "train_wall_s": None}


def format_summary(s: dict[str, Any]) -> str:
    def pct(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    split = ", ".join(f"{k} {v:.0f}s" for k, v in s["time_split_s"].items() if v)
    start = s.get("resumed_from")
    steps = f"{s['steps']} steps" + (f" ({s['steps'] - start} in this attempt, resumed from step {start})" if start else "")
    return (
        f"held-out accuracy {pct(s['eval_initial'])} -> {pct(s['eval_final'])} (best {pct(s['eval_best'])}, "
        f"greedy {pct(s['greedy_final'])}) in {steps}\n"
        f"rollouts {int(s['rollouts'])}, generated tokens {int(s['gen_tokens'])}, "
        f"effective share {s['effective_share']:.2f}, train wall {s['train_wall_s']:.0f}s ({split})"
    )
