"""The learned selector: no look-ahead, calibration on a pool of known rates, the checkpoint round trip,
the shared budget controller, the calibration record and the counterfactual replay."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from rollsift.ledger import MemoryLedger
from rollsift.records import Completion, Context, Group, Prompt
from rollsift.select.learned import FEATURES, LearnedConfig, LearnedSelector
from rollsift.select.learned_model import auc_from_histogram, reliability

N = 8


def group(p: Prompt, k: int, step: int, epoch: int = 0) -> Group:
    comps = tuple(Completion(p.id, i, (1,), "", policy_version=step - 1) for i in range(N))
    correct = tuple([True] * k + [False] * (N - k))
    return Group(p, comps, tuple(float(c) for c in correct), correct, step=step, policy_version=step - 1,
                 epoch=epoch)


def drive(sel, pool, outcome, steps: int, per_step: int = 40, ledger=None, first: int = 1):
    """A stream run: each step the next ``per_step`` prompts of the pool (cyclic) are candidates; the
    kept ones get a group of ``outcome(step, index) -> correct count``. Returns [(step, id, kept)]."""
    ledger = ledger if ledger is not None else MemoryLedger()
    out, pos = [], (first - 1) * per_step
    for step in range(first, first + steps):
        idx = [(pos + j) % len(pool) for j in range(per_step)]
        pos += per_step
        ctx = Context(step=step, epoch=(pos - 1) // len(pool), policy_version=step - 1, n=N)
        sel_out = sel.ask([pool[i] for i in idx], per_step, ledger, ctx)
        ledger.record_selection(sel_out.decisions, ctx)
        out += [(step, d.prompt_id, d.kept) for d in sel_out.decisions]
        kept = {p.id for p in sel_out.chosen}
        groups = [group(pool[i], outcome(step, i), step, ctx.epoch) for i in idx if pool[i].id in kept]
        ledger.record_groups(groups, ctx)
        sel.tell(groups, ledger, ctx)
    return out, ledger


def known_pool(size: int, seed: int):
    """Prompts with fixed success rates: a third solved, a third hopeless, a third in between."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0.93, 1.0, size // 3), rng.uniform(0.0, 0.07, size // 3),
                        rng.uniform(0.2, 0.8, size - 2 * (size // 3))])
    rng.shuffle(p)
    return [Prompt(id=f"q{i}", text=f"q{i}", answer="") for i in range(size)], p


def test_a_decision_at_step_s_uses_only_groups_before_s():
    pool, p = known_pool(120, 0)

    def outcome_a(step, i):
        return int(np.random.default_rng(step * 1000 + i).binomial(N, p[i]))

    def outcome_b(step, i):  # the same past, another future: from step 12 on every group is all wrong
        return outcome_a(step, i) if step < 12 else 0

    a, _ = drive(LearnedSelector(LearnedConfig(max_lost=0.5), seed=3), pool, outcome_a, 20)
    b, _ = drive(LearnedSelector(LearnedConfig(max_lost=0.5), seed=3), pool, outcome_b, 20)
    assert [d for d in a if d[0] <= 12] == [d for d in b if d[0] <= 12]
    assert [d for d in a if d[0] > 12] != [d for d in b if d[0] > 12]  # the test can see a change


def test_predictions_are_calibrated_on_a_pool_of_known_rates():
    """Stationary prompts with known success rates, the selector skipping under its budget: after a
    burn-in of 6 epochs, its out-of-sample predictions match the observed zero-variance rates (the
    expected calibration error over 10 bins, and bin by bin within 0.1; a logistic model of these
    features is not exact on a three-humped pool), and its P(zero variance) of each prompt tracks the
    true p^n + (1 - p)^n without bias (a prompt it mostly skips has few groups: its error is larger)."""
    from rollsift.select.learned_model import Calibration

    pool, p = known_pool(600, 1)
    rng = np.random.default_rng(7)
    draws = {}

    def outcome(step, i):
        return draws.setdefault((step, i), int(rng.binomial(N, p[i])))

    sel = LearnedSelector(LearnedConfig(max_lost=0.2), seed=0)
    _, ledger = drive(sel, pool, outcome, 60, per_step=60)
    sel.calibration = Calibration()  # judge the second half only
    decisions, _ = drive(sel, pool, outcome, 90, per_step=60, ledger=ledger, first=61)
    assert sum(not kept for _, _, kept in decisions) > 0.3 * len(decisions)  # it does skip
    rows = [r for r in reliability(sel.calibration.hist, 10) if r["groups"]]
    total = sum(r["groups"] for r in rows)
    ece = sum(r["groups"] * abs(r["predicted"] - r["observed"]) for r in rows) / total
    assert ece < 0.06, rows
    for r in rows:
        if r["groups"] >= 200:
            assert r["predicted"] == pytest.approx(r["observed"], abs=0.1), r
    assert sel.calibration.auc() > 0.85
    true_zv = p ** N + (1 - p) ** N
    z, seen = sel.predict([q.id for q in pool], 150, 151)
    assert seen.all() and abs((z - true_zv).mean()) < 0.03  # no bias over the pool, skipped prompts included
    assert np.corrcoef(z, true_zv)[0, 1] > 0.85 and np.abs(z - true_zv).mean() < 0.12


def test_the_state_round_trips_through_a_checkpoint():
    pool, p = known_pool(90, 2)

    def outcome(step, i):
        return int(np.random.default_rng(step * 7919 + i).binomial(N, p[i]))

    sel = LearnedSelector(LearnedConfig(max_lost=0.4), seed=5)
    _, ledger = drive(sel, pool, outcome, 15)
    state = json.loads(json.dumps(pickle.loads(pickle.dumps(sel.state_dict()))))  # through pickle and JSON
    other = LearnedSelector(LearnedConfig(max_lost=0.4), seed=99)
    other.load_state_dict(state)
    ids = [q.id for q in pool]
    z0, _ = sel.predict(ids, 15, 16)
    other.sync(ledger)  # the per-prompt cache comes from the ledger
    assert np.allclose(other.predict(ids, 15, 16)[0], z0)
    ctx = Context(step=16, epoch=3, policy_version=15, n=N)
    assert sel.ask(pool[:50], 50, ledger, ctx).decisions == other.ask(pool[:50], 50, ledger, ctx).decisions


def test_the_model_sees_every_feature_and_learns_them():
    pool, p = known_pool(90, 3)
    sel = LearnedSelector(seed=0)
    drive(sel, pool, lambda s, i: int(np.random.default_rng(s * 31 + i).binomial(N, p[i])), 10)
    assert len(sel.model.w) == len(FEATURES) and np.count_nonzero(sel.model.w) == len(FEATURES)
    m = sel.metrics()
    assert 0.0 < m["select/learned/tau"] <= 1.0 and "select/learned/auc" in m
    assert all(k.startswith("select/learned/") for k in m)


def test_auc_and_reliability_from_a_histogram():
    hist = np.zeros((2, 100), np.int64)
    hist[0, 10], hist[1, 90] = 5, 5  # perfectly separated
    assert auc_from_histogram(hist) == 1.0
    hist[0, 90] = 5  # half the negatives tie with every positive
    assert auc_from_histogram(hist) == pytest.approx(0.75)
    rows = reliability(hist, 10)
    assert rows[9]["groups"] == 10 and rows[9]["observed"] == 0.5 and rows[9]["predicted"] == pytest.approx(0.905)
    assert rows[5]["groups"] == 0 and rows[5]["observed"] is None
    assert auc_from_histogram(np.zeros((2, 100))) is None


def test_bad_knobs_are_rejected_by_name():
    from rollsift.configlib import ConfigError

    for knob, value in (("floor", 0.0), ("weighting", "aipw"), ("half_life", -1.0)):
        with pytest.raises(ConfigError, match=knob):
            LearnedConfig(**{knob: value})


def test_the_counterfactual_replay_knows_it():
    from rollsift.measure.counterfactual import SWEEP, replay

    pool, p = known_pool(60, 4)
    _, ledger = drive(LearnedSelector(LearnedConfig(floor=1.0), seed=0), pool,
                      lambda s, i: int(np.random.default_rng(s * 13 + i).binomial(N, p[i])), 12)
    ledger.record_step(12, {})
    out = replay(ledger, "learned", {"max_lost": 0.3}, 0)
    assert out["total"]["groups"] > 0 and out["calibration"]["auc"] is not None
    assert len(out["calibration"]["bins"]) == 10
    assert {k["max_lost"] for s, k in SWEEP if s == "learned"} == {k["max_lost"] for s, k in SWEEP if s == "posterior"}


def test_the_report_draws_its_reliability_plot():
    from rollsift.measure.report import _Style, calibration_figure, calibration_rows

    pool, p = known_pool(60, 5)
    sel = LearnedSelector(seed=0)
    drive(sel, pool, lambda s, i: int(np.random.default_rng(s * 17 + i).binomial(N, p[i])), 10)
    rows = [{"step": 10, **sel.metrics()}]
    bins, auc = calibration_rows(rows)
    assert auc == sel.calibration.auc() and sum(b["groups"] for b in bins) == sel.calibration.hist.sum()
    assert "data:image/png;base64," in calibration_figure({"run": rows}, _Style(["run"]))
    assert calibration_rows([{"step": 1}]) is None
