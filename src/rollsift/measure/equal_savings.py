"""Selectors compared at equal savings on recorded outcomes: the learned and the posterior selectors
against GRESO, each read at the rollouts GRESO saves, by the counterfactual replay
(``rollsift.measure.counterfactual.replay``). A ranking of rules on recorded outcomes, not a
prediction of accuracy.

    for s in 0 1 2; do rollsift trace import ../shared/data/real_trace/one_shot_rlvr_dsr_even.json \
        --format shipped --seed $s --out runs/real_even_s$s/ledger.sqlite; done
    OMP_NUM_THREADS=1 rollsift bench equal-savings runs/real_even_s*/ledger.sqlite [--json OUT]

Only the EVEN half is shipped and used (the odd half is held out). Per ledger (one reconstruction of
the trace's steps per import seed): GRESO at its defaults (its saved share S and its informative
groups lost), the posterior and the learned selectors over ``max_lost``, each one's informative
groups lost and rollouts per informative group interpolated at S (equal savings), and the oracle
(skip exactly the zero-variance groups); then the mean over the ledgers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def at_savings(points: list[dict], target: float) -> dict:
    """Lost share and cost ratio interpolated (linearly in saved share) at ``target`` saved share."""
    pts = sorted(points, key=lambda p: p["saved"])
    for a, b in zip(pts, pts[1:]):
        if a["saved"] <= target <= b["saved"]:
            t = (target - a["saved"]) / (b["saved"] - a["saved"]) if b["saved"] > a["saved"] else 0.0
            return {k: a[k] + t * (b[k] - a[k]) for k in ("lost", "ratio", "max_lost")}
    return {"lost": None, "ratio": None, "max_lost": None,
            "range": [pts[0]["saved"], pts[-1]["saved"]] if pts else None}


def skip_top(hist: np.ndarray, share: float) -> float:
    """Informative share lost by skipping the ``share`` of groups with the highest predicted P(zero
    variance), from a [2, B] histogram of predictions (a bin cut in proportion)."""
    total, informative = hist.sum(), hist[0].sum()
    left, lost = share * total, 0.0
    for b in range(hist.shape[1] - 1, -1, -1):
        n = hist[:, b].sum()
        take = min(n, left)
        lost += hist[0, b] * (take / n) if n else 0.0
        left -= take
        if left <= 0:
            break
    return lost / informative


def main(argv: list[str] | None = None) -> int:
    from ..ledger import SqliteLedger

    ap = argparse.ArgumentParser(prog="rollsift bench equal-savings", description=__doc__.split("\n\n")[0])
    ap.add_argument("ledgers", nargs="+", help="ledgers (any run's, or written by rollsift trace import)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--budgets", default="0.1,0.15,0.2,0.25,0.3,0.35,0.4")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="learned selector knob")
    args = ap.parse_args(argv)
    knobs = {k: (float(v) if v.replace(".", "", 1).isdigit() else v) for k, v in (s.split("=", 1) for s in args.set)}
    budgets = [float(b) for b in args.budgets.split(",")]
    results = []
    for path in args.ledgers:
        print(f"== {path}")
        with SqliteLedger(path) as ledger:
            results.append(judge(ledger, budgets, knobs))
    print(f"== mean over {len(results)} ledger(s)")
    mean = lambda xs: sum(xs) / len(xs) if xs and None not in xs else None
    g = {k: mean([r["greso"][k] for r in results]) for k in ("saved", "lost", "ratio")}
    print(f"greso defaults: saved {100 * g['saved']:.1f}%, lost {100 * g['lost']:.1f}%, cost/informative "
          f"{g['ratio']:.3f}x; oracle cost/informative {mean([r['oracle']['ratio'] for r in results]):.3f}x")
    for sel in ("posterior", "learned"):
        lost, ratio = mean([r["at_greso"][sel]["lost"] for r in results]), mean([r["at_greso"][sel]["ratio"] for r in results])
        if lost is not None:
            print(f"{sel} at GRESO's savings: lost {100 * lost:.1f}% ({lost / g['lost']:.2f} of GRESO's), "
                  f"cost/informative {ratio:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def judge(ledger, budgets: list[float], knobs: dict) -> dict:
    from .counterfactual import replay

    def point(selector: str, kn: dict) -> dict:
        res = replay(ledger, selector, kn, 0)
        t = res["total"]
        out = {"selector": selector, "knobs": kn, "saved": t["saved_rollout_share"],
               "lost": t["lost_informative_share"], "ratio": t["projected_cost_ratio"],
               "groups": t["groups"], "informative": t["informative_groups"], "max_lost": kn.get("max_lost", 0.0),
               "auc": (res.get("calibration") or {}).get("auc")}
        print(f"{selector:10s} {json.dumps(kn):40s} saved {100 * out['saved']:5.1f}%  lost {100 * out['lost']:5.1f}%  "
              f"cost/informative {out['ratio']:.3f}x" + (f"  AUC {out['auc']:.3f}" if out["auc"] else ""), flush=True)
        return out

    greso = point("greso", {})
    zv = 1 - greso["informative"] / greso["groups"]
    full = replay(ledger, "learned", {**knobs, "floor": 1.0}, 0)  # keeps every group: the model sees every outcome
    bound = skip_top(np.array(full["calibration"]["histogram"], np.float64), greso["saved"])
    print(f"learned with every outcome seen (floor 1): AUC {full['calibration']['auc']:.3f}; skipping its top "
          f"{100 * greso['saved']:.1f}% of predictions would lose {100 * bound:.1f}% of the informative groups")
    result = {"greso": greso, "full_information": {"auc": full["calibration"]["auc"], "lost_at_greso": bound},
              "oracle": {"saved": zv, "lost": 0.0, "ratio": 1 - zv}, "curves": {}, "at_greso": {}}
    for selector, extra in (("posterior", {}), ("learned", knobs)):
        pts = [point(selector, {"max_lost": b, **extra}) for b in budgets]
        result["curves"][selector] = pts
        result["at_greso"][selector] = r = at_savings(pts, greso["saved"])
        if r["lost"] is None:
            print(f"{selector}: GRESO's savings {100 * greso['saved']:.1f}% outside the swept range {r['range']}")
        else:
            print(f"{selector} at GRESO's savings ({100 * greso['saved']:.1f}%): lost {100 * r['lost']:.1f}% "
                  f"({r['lost'] / greso['lost']:.2f} of GRESO's {100 * greso['lost']:.1f}%), cost/informative "
                  f"{r['ratio']:.3f}x (GRESO {greso['ratio']:.3f}x), at max_lost ~{r['max_lost']:.3f}")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
