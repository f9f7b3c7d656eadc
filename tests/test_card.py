"""The realism card (rollsift ledger card): its statistics on a hand-built ledger with known visits."""

from __future__ import annotations

import json

import pytest

from rollsift.ledger import MemoryLedger, open_ledger
from rollsift.measure.card import card, main
from rollsift.records import Completion, Context, Group, Prompt

# prompt -> outcome per visit (step 1, 2, 3): C all correct, W all wrong, M mixed
VISITS = {"a": "CCM", "b": "WWW", "c": "MCM", "d": "C"}


def build(ledger) -> None:
    ledger.register_pool(["a", "b", "c", "d", "e"])
    for step in (1, 2, 3):
        groups = []
        for pid, seq in VISITS.items():
            if step > len(seq):
                continue
            k = {"C": 4, "W": 0, "M": 2}[seq[step - 1]]
            p = Prompt(id=pid, text=pid, answer="1")
            groups.append(Group(p, tuple(Completion(pid, i, (1,), "") for i in range(4)),
                                tuple([1.0] * k + [0.0] * (4 - k)), tuple([True] * k + [False] * (4 - k)), step=step))
        ledger.record_groups(groups, Context(step=step))
        probe = Group(Prompt(id="a", text="a", answer="1"), tuple(Completion("a", i, (1,), "") for i in range(4)),
                      (0.0,) * 4, (False,) * 4, step=step)
        ledger.record_groups([probe], Context(step=step, purpose="probe"))  # never counted
        ledger.record_step(step, {"time/generate": 3.0, "time/train_wall": 4.0 * step})


def test_card_on_known_visits():
    led = MemoryLedger()
    build(led)
    c = card(led)
    assert c["groups"] == 10 and c["prompts"] == 4 and c["steps"] == 3
    t = c["transition_counts"]
    assert t["all_correct"] == {"all_wrong": 0, "mixed": 2, "all_correct": 1}  # a: C->C, C->M; c: C->M
    assert t["all_wrong"] == {"all_wrong": 2, "mixed": 0, "all_correct": 0}
    assert t["mixed"] == {"all_wrong": 0, "mixed": 0, "all_correct": 1}
    assert c["transitions"]["all_correct"]["mixed"] == pytest.approx(2 / 3)
    # zero-variance groups with an earlier visit: a@2 (yes), b@2 (yes), b@3 (yes), c@2 (its earlier visit was mixed)
    assert c["earlier_zero_variance"] == pytest.approx(3 / 4) and c["zero_variance_revisited"] == 4
    # once zero-variance: a, b, c, d; informative later: a, c; visited again after it: a, b, c
    assert c["regained"] == pytest.approx(2 / 4) and c["regained_of_visited_again"] == pytest.approx(2 / 3)
    assert c["visits_per_prompt"] == pytest.approx(10 / 4) and c["pool_passes"] == pytest.approx(10 / 5)
    assert c["zero_variance_share"]["per_step"] == pytest.approx({1: 3 / 4, 2: 1.0, 3: 1 / 3})
    assert c["generation_share"] == pytest.approx(3 / 4)
    assert c["published"]["earlier_zero_variance"]["value"] == 0.90


def test_card_cli_reads_any_ledger(tmp_path, capsys):
    with open_ledger(tmp_path / "ledger.sqlite") as led:
        build(led)
    assert main([str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["earlier_zero_variance"] == pytest.approx(0.75)
    assert main([str(tmp_path / "ledger.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "earlier zero-variance" in out and "over 90%" in out and "about 20%" in out


def _ledger_of(visits: dict[str, str]) -> MemoryLedger:
    """A ledger whose prompts have the given outcomes (C/W/M) on visits 1, 2, ... (one step each)."""
    led = MemoryLedger()
    for step in range(1, max(map(len, visits.values())) + 1):
        groups = []
        for pid, seq in visits.items():
            if step <= len(seq):
                k = {"C": 4, "W": 0, "M": 2}[seq[step - 1]]
                groups.append(Group(Prompt(id=pid, text=pid, answer="1"), tuple(Completion(pid, i, (1,), "") for i in range(4)),
                                    tuple([1.0] * k + [0.0] * (4 - k)), tuple([True] * k + [False] * (4 - k)), step=step))
        led.record_groups(groups, Context(step=step))
    return led


def test_the_reference_is_read_at_the_runs_horizon():
    # the reference's transitions differ before and after its third visit: read over 3 visits per prompt
    # (the run's), only the first two transitions of each prompt count
    ref = _ledger_of({"r1": "WWMCCCW", "r2": "MMCWWWW", "r3": "CCMMMMM", "r4": "WMWMWMW"})
    run = _ledger_of({"a": "WWM", "b": "CCC", "c": "MMW", "d": "MCM"})
    c = card(run, reference=ref)
    r = c["reference"]
    assert r["horizon"] == 3 and r["groups"] == 12 and r["visits_per_prompt"] == 3
    assert r["transition_counts"] == {"all_wrong": {"all_wrong": 1, "mixed": 2, "all_correct": 0},   # r1 W->W->M, r4 W->M
                                      "mixed": {"all_wrong": 1, "mixed": 1, "all_correct": 1},       # r2 M->M->C, r4 M->W
                                      "all_correct": {"all_wrong": 0, "mixed": 1, "all_correct": 1}}  # r3 C->C->M
    assert r["transitions"]["all_wrong"]["mixed"] == pytest.approx(2 / 3)
    assert r["zero_variance_group_share"] == pytest.approx(7 / 12)
    assert r["regained"] == pytest.approx(3 / 4) and r["reference_visits_per_prompt"] == 7
    # read over all 7 visits the same reference says otherwise: the horizon matters
    assert card(run, reference=None)["reference"]["source"] is None
    whole = card(_ledger_of({p: "WWMCCCW" for p in "abcdefg"}), reference=ref)["reference"]
    assert whole["groups"] == 28 and whole["transition_counts"]["all_wrong"]["all_wrong"] == 1 + 3


def test_the_run_counts_of_visits_are_matched_not_only_their_mean():
    from rollsift.measure.card import at_horizon

    ref = {f"r{i}": ["mixed"] * (10 + i) for i in range(4)}
    cut = at_horizon(ref, [1, 1, 3, 5])
    assert sorted(map(len, cut.values())) == [1, 1, 3, 5]
    assert [len(cut[f"r{i}"]) for i in range(4)] == [1, 1, 3, 5]   # the most visited reference prompts keep most


def test_published_figures_of_unknown_horizon_are_not_compared(monkeypatch, tmp_path):
    from rollsift.measure.card import rows

    monkeypatch.setenv("ROLLSIFT_REFERENCE_TRACE", str(tmp_path / "absent.json"))
    c = card(_ledger_of({"a": "WWM"}))
    assert c["reference"]["source"] is None and "not beside this installation" in c["reference"]["note"]
    table = {r[0]: r for r in rows(c)}
    assert table["earlier zero-variance"][3] == "not compared (horizon unknown)"
    assert table["generation share of time"][3] == "78% / 88% / 91%"
