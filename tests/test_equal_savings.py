"""`rollsift bench equal-savings`: selectors read at GRESO's savings on recorded outcomes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rollsift.cli import main as cli
from rollsift.measure.equal_savings import at_savings, skip_top
from rollsift.measure.trace_import import import_trace


def test_at_savings_interpolates_linearly_in_saved_share():
    pts = [{"saved": 0.1, "lost": 0.02, "ratio": 0.9, "max_lost": 0.05},
           {"saved": 0.3, "lost": 0.10, "ratio": 0.8, "max_lost": 0.2}]
    r = at_savings(pts[::-1], 0.25)  # the order of the sweep does not matter
    assert r["lost"] == pytest.approx(0.08) and r["ratio"] == pytest.approx(0.825)
    assert r["max_lost"] == pytest.approx(0.1625)
    out = at_savings(pts, 0.5)  # outside the swept range: no figure, the range named
    assert out["lost"] is None and out["range"] == [0.1, 0.3]


def test_skip_top_skips_the_highest_predictions_first():
    # row 0: informative groups per prediction bin, row 1: zero-variance groups
    hist = np.array([[4, 2, 0, 0], [0, 2, 2, 4]], np.float64)
    assert skip_top(hist, 6 / 14) == pytest.approx(0.0)          # bins 3 and 2: zero-variance only
    assert skip_top(hist, 8 / 14) == pytest.approx(1 / 6)        # half of bin 1: 1 of 6 informative
    assert skip_top(hist, 1.0) == pytest.approx(1.0)


def test_the_command_judges_selectors_on_an_imported_trace(tmp_path, capsys):
    # 12 prompts over 30 steps: half keep one outcome (always all-correct: zero variance every visit),
    # the other half alternate mixed and all-wrong; selection has something to learn and something to lose
    rows = []
    for step in range(30):
        for i in range(12):
            correct = 8 if i < 6 else (4 if (step + i) % 2 else 0)
            rows.append({"prompt_id": f"p{i}", "step": step, "n": 8, "correct": correct})
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_trace(src, "jsonl", tmp_path / "l.sqlite")
    out = tmp_path / "r.json"
    assert cli(["bench", "equal-savings", str(tmp_path / "l.sqlite"), "--budgets", "0.1,0.3,0.5",
                "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "greso defaults: saved" in printed and "mean over 1 ledger(s)" in printed
    (r,) = json.loads(out.read_text())
    assert r["oracle"]["saved"] == pytest.approx(0.5 + 0.25)  # the always-correct half and the all-wrong visits
    assert r["greso"]["saved"] > 0.0 and [p["max_lost"] for p in r["curves"]["learned"]] == [0.1, 0.3, 0.5]
    assert 0.5 <= r["full_information"]["auc"] <= 1.0
