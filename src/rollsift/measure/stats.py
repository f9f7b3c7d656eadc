"""Intervals over seeds, so that a comparison says "better" only where the seeds support it.

* ``mean_interval(values)``: the mean and the 95% Student-t interval of a figure over seeds
  (``mean +- t(0.975, n-1) * sd / sqrt(n)``); no interval with fewer than two values.
* ``ratio_interval(ref, run)``: a cost ratio against the reference, paired by seed: the geometric
  mean of ``ref_cost / run_cost`` and the 95% t-interval of the mean log ratio, exponentiated
  (ratios multiply, so their logs are what averages). A ratio above 1 means the run is cheaper.
* ``verdict(interval)``: "better" when the interval lies above 1, "worse" below 1, otherwise "no
  difference shown" (or "not measured").
* ``detectable_ratio(sd_log, n)``: the smallest ratio a pair of methods must differ by for an
  n-seed interval to exclude 1, given the seed-to-seed spread of the log ratio.

Stdlib only (the t quantiles are tabulated), so the summary tools need no SciPy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

# t(0.975, df) for df = 1..30; beyond, the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

BETTER, WORSE, SAME, UNMEASURED = "better", "worse", "no difference shown", "not measured"


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def _present(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_interval(values: Sequence[float | None]) -> dict[str, Any]:
    """mean, 95% interval (lo, hi), sample std, min, max over the values present; n counts them."""
    vals = _present(values)
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "std": None, "min": None, "max": None, "n": 0}
    m = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals)) if len(vals) > 1 else None
    return {"mean": m, "lo": None if half is None else m - half, "hi": None if half is None else m + half,
            "std": sd, "min": min(vals), "max": max(vals), "n": len(vals)}


def ratio_interval(ref: Sequence[float | None], run: Sequence[float | None]) -> dict[str, Any]:
    """Paired by position (seed): ``ref[i] / run[i]`` over the seeds where both are positive numbers."""
    logs = [math.log(a / b) for a, b in zip(ref, run) if a and b and a > 0 and b > 0]
    if not logs:
        return {"geo_mean": None, "lo": None, "hi": None, "sd_log": None, "n": 0, "verdict": UNMEASURED}
    m = statistics.fmean(logs)
    out: dict[str, Any] = {"geo_mean": math.exp(m), "lo": None, "hi": None, "sd_log": None, "n": len(logs)}
    if len(logs) > 1:
        sd = statistics.stdev(logs)
        half = t975(len(logs) - 1) * sd / math.sqrt(len(logs))
        out.update(lo=math.exp(m - half), hi=math.exp(m + half), sd_log=sd)
    out["verdict"] = verdict(out)
    return out


def verdict(interval: dict[str, Any]) -> str:
    lo, hi = interval.get("lo"), interval.get("hi")
    if lo is None or hi is None:
        return UNMEASURED
    if lo > 1.0:
        return BETTER
    if hi < 1.0:
        return WORSE
    return SAME


def detectable_ratio(sd_log: float, n: int) -> float:
    """The ratio (>= 1) at which an n-seed interval of the log ratio just excludes 1 (half-width = log ratio)."""
    return math.exp(t975(n - 1) * sd_log / math.sqrt(n))


def seeds_needed(sd_log: float, ratio: float, most: int = 200) -> int | None:
    """Seeds for ``detectable_ratio(sd_log, n) <= ratio`` (None beyond ``most``)."""
    for n in range(2, most + 1):
        if detectable_ratio(sd_log, n) <= ratio:
            return n
    return None


__all__ = ["BETTER", "SAME", "UNMEASURED", "WORSE", "detectable_ratio", "mean_interval", "ratio_interval",
           "seeds_needed", "t975", "verdict"]
