"""The ledger: derived state against brute force, rollback semantics, persistence, ``ledger show``."""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollsift.ledger import MemoryLedger, SqliteLedger, open_ledger
from rollsift.measure.ledger_show import main, summarize
from rollsift.protocols import Ledger, LedgerView
from rollsift.records import Completion, Context, Decision, FilterResult, Group, Prompt, PromptStats


def group(pid: str, n: int, k: int, epoch: int = 0, lengths=None, pruned: int = 0) -> Group:
    """n completions, the first k correct (rewards 1/0)."""
    lengths = lengths or [3] * n
    comps = tuple(Completion(pid, i, (7,) * lengths[i], "", status="pruned" if i < pruned else "stop")
                  for i in range(n))
    correct = tuple(i < k for i in range(n))
    return Group(Prompt(pid, "1", text="q"), comps, tuple(float(c) for c in correct), correct, epoch=epoch)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request, tmp_path):
    led = MemoryLedger() if request.param == "memory" else SqliteLedger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


# ---------------------------------------------------------------------- brute force
def brute_force(events: list[tuple]) -> tuple[dict[str, PromptStats], list[tuple]]:
    """Per-prompt stats from the raw event list, straight from the definitions.

    An event is live unless a later rollback marker has after_step < its step.
    """
    live = [e for i, e in enumerate(events) if e[0] in ("group", "select")
            and not any(r[0] == "rollback" and r[1] < e[1] for r in events[i + 1:])]
    stats: dict[str, dict] = {}
    for e in live:
        s = stats.setdefault(e[2], dict(rollouts=0, skips=0, last_accuracy=None, last_step=-1, last_epoch=-1,
                                        trailing_all_correct=0, trailing_all_wrong=0, ever_informative=False))
        if e[0] == "select":
            s["skips"] += not e[3]
            continue
        _, step, _, n, k, epoch, _ = e
        s["rollouts"] += 1
        s["last_accuracy"] = k / n
        s["last_step"], s["last_epoch"] = step, epoch
        s["trailing_all_correct"] = s["trailing_all_correct"] + 1 if k == n else 0
        s["trailing_all_wrong"] = s["trailing_all_wrong"] + 1 if k == 0 else 0
        s["ever_informative"] |= 0 < k < n
    return {pid: PromptStats(pid, **s) for pid, s in stats.items()}, [e for e in live if e[0] == "group"]


def assert_matches(led, expected: dict[str, PromptStats], pids: list[str]) -> None:
    for pid in pids:
        assert led.get(pid) == expected.get(pid, PromptStats(pid)), pid
    arr = led.lookup(pids)
    for f in ("rollouts", "skips", "last_step", "trailing_all_correct", "trailing_all_wrong"):
        want = [getattr(expected.get(p, PromptStats(p)), f) for p in pids]
        assert list(getattr(arr, f)) == want, f
    want_acc = [expected[p].last_accuracy if p in expected and expected[p].last_accuracy is not None else math.nan
                for p in pids]
    np.testing.assert_array_equal(arr.last_accuracy, want_acc)


PIDS = ["a", "b", "c", "d"]
KINDS = {"all": lambda n: n, "none": lambda n: 0, "some": lambda n: 1}  # correct completions of n (>= 2)
OPS = st.lists(st.one_of(
    st.tuples(st.just("groups"), st.lists(st.tuples(st.sampled_from(PIDS), st.integers(2, 4),
                                                    st.sampled_from(list(KINDS)), st.integers(0, 3),
                                                    st.sampled_from(["train", "probe"])), max_size=5)),
    st.tuples(st.just("select"), st.lists(st.tuples(st.sampled_from(PIDS), st.booleans()), max_size=4)),
    st.tuples(st.just("next")),
    st.tuples(st.just("next")),
    st.tuples(st.just("rollback"), st.integers(-1, 3)),  # back by this many steps (-1: past the current one)
    st.tuples(st.just("check")),
), max_size=40)


def replay(led, ops) -> list[tuple]:
    """Apply ops to a ledger as a trainer would; returns the raw event list. Checks along the way."""
    events: list[tuple] = []
    step = 1
    for op in ops:
        if op[0] == "groups":
            gs = [group(pid, n, KINDS[kind](n), epoch) for pid, n, kind, epoch, _ in op[1]]
            for purpose in ("train", "probe"):
                sub = [g for g, o in zip(gs, op[1]) if o[4] == purpose]
                led.record_groups(sub, Context(step=step), purpose=purpose)
                events += [("group", step, g.prompt_id, g.n, sum(g.correct), g.epoch, purpose) for g in sub]
        elif op[0] == "select":
            led.record_selection([Decision(pid, kept, "r") for pid, kept in op[1]], Context(step=step))
            events += [("select", step, pid, kept) for pid, kept in op[1]]
        elif op[0] == "next":
            led.record_step(step, {"step": step})
            events.append(("stepmark", step, None))
            step += 1
        elif op[0] == "rollback":
            after = max(step - op[1], 0)
            led.rollback(after_step=after)
            events.append(("rollback", after))
            step = after + 1
        else:  # a read in the middle: the state is built here and updated incrementally afterwards
            assert_matches(led, brute_force(events)[0], PIDS + ["zz"])
    return events


def check_history(led, events) -> None:
    expected, live_groups = brute_force(events)
    assert_matches(led, expected, PIDS + ["zz"])
    assert [(g.step, g.prompt_id, g.n, g.n_correct, g.epoch, g.purpose) for g in led.groups()] == \
        [e[1:] for e in live_groups]
    assert len(list(led.groups(include_rolled_back=True))) == sum(e[0] == "group" for e in events)
    assert all(g.live for g in led.groups())
    n_live_decisions = sum(1 for i, e in enumerate(events) if e[0] == "select"
                           and not any(r[0] == "rollback" and r[1] < e[1] for r in events[i + 1:]))
    assert len(list(led.decisions())) == n_live_decisions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_memory_state_equals_brute_force(ops):
    led = MemoryLedger()
    check_history(led, replay(led, ops))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_sqlite_state_equals_brute_force_and_survives_reopen(ops):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ledger.sqlite"
        with SqliteLedger(path) as led:
            events = replay(led, ops)
            check_history(led, events)
        with SqliteLedger(path) as led:  # rebuilt from the file alone
            check_history(led, events)
            assert led.integrity_check() == "ok"


# ---------------------------------------------------------------------- state and records
def test_implements_the_protocol(ledger):
    assert isinstance(ledger, Ledger) and isinstance(ledger, LedgerView)


def test_unknown_ids_get_defaults(ledger):
    ledger.register_pool(["a", "b"])
    ledger.record_groups([group("a", 4, 4)], Context(step=1))
    assert ledger.get("nope") == PromptStats("nope")
    assert ledger.get("b") == PromptStats("b")  # registered, never rolled out
    arr = ledger.lookup(["nope", "a", "b", "nope"])
    assert list(arr.rollouts) == [0, 1, 0, 0]
    assert list(arr.trailing_all_correct) == [0, 1, 0, 0]
    assert list(arr.last_step) == [-1, 1, -1, -1]
    assert np.isnan(arr.last_accuracy[[0, 2, 3]]).all() and arr.last_accuracy[1] == 1.0
    assert len(ledger.lookup([]).rollouts) == 0


def test_trailing_counts_and_growth(ledger):
    ledger.lookup(["x"])  # build the state first: the rest is incremental
    pids = [f"p{i}" for i in range(3000)]  # forces the arrays to grow past their first capacity
    ledger.record_groups([group(p, 4, 4) for p in pids], Context(step=1))
    for step, k in enumerate([4, 2, 4, 4, 0, 0], start=2):
        ledger.record_groups([group("p7", 4, k, epoch=step)], Context(step=step))
    s = ledger.get("p7")
    assert (s.rollouts, s.trailing_all_correct, s.trailing_all_wrong, s.last_accuracy) == (7, 0, 2, 0.0)
    assert (s.last_step, s.last_epoch, s.ever_informative) == (7, 7, True)
    assert ledger.get("p2999") == PromptStats("p2999", rollouts=1, last_accuracy=1.0, last_step=1, last_epoch=0,
                                              trailing_all_correct=1)


def test_group_detail_roundtrip(ledger):
    g = group("a", 3, 2, epoch=2, lengths=[5, 1, 9], pruned=1)
    ledger.record_groups([g], Context(step=3, round=1), purpose="probe")
    (row,) = ledger.groups(detail=True)
    assert (row.step, row.round, row.epoch, row.purpose) == (3, 1, 2, "probe")
    assert (row.n, row.n_correct, row.pruned) == (3, 2, 1)
    assert row.rewards == (1.0, 1.0, 0.0) and row.correct == (True, True, False) and row.lengths == (5, 1, 9)
    assert row.mean == pytest.approx(g.mean) and row.std == pytest.approx(g.std)
    assert list(ledger.groups(purpose="train")) == []


def test_filters_steps_and_meta(ledger):
    g1, g2 = group("a", 4, 2), group("b", 4, 4)
    ledger.record_filter("dynamic", FilterResult(kept=(g1.subset([0, 3]),), dropped={"b": "zero_variance"}),
                         Context(step=1))
    ledger.record_step(1, {"loss": np.float32(0.5), "cost/rollouts": 8})
    rows = list(ledger.filters())
    assert [(r.name, r.prompt_id, r.kept, r.reason, r.n) for r in rows] == \
        [("dynamic", "a", True, None, 2), ("dynamic", "b", False, "zero_variance", 0)]
    assert ledger.steps()[0].metrics == {"loss": 0.5, "cost/rollouts": 8}
    ledger.set_meta("config", {"lr": 1e-6})
    assert ledger.get_meta("config") == {"lr": 1e-6} and ledger.get_meta("missing", 3) == 3


def test_bad_arguments_are_rejected(ledger):
    with pytest.raises(ValueError, match="purpose"):
        ledger.record_groups([group("a", 2, 1)], Context(step=1), purpose="training")
    with pytest.raises(ValueError, match="2 prompt ids but 1 labels"):
        ledger.register_pool(["a", "b"], labels=[1])
    with pytest.raises(TypeError, match="after_step"):
        ledger.rollback(after_step=2.5)


def test_register_pool_is_idempotent_and_keeps_labels(ledger):
    ledger.register_pool(["a", "b"], labels=[1, 2])
    ledger.register_pool(["a", "b"], labels=[1, 2])
    ledger.register_pool(["b", "c"])  # no labels: keeps b's
    ledger.register_pool(["c"], labels=["hard"])
    assert ledger.pool() == (["a", "b", "c"], [1, 2, "hard"])
    assert ledger.state.labels == {"a": 1, "b": 2, "c": "hard"}


# ---------------------------------------------------------------------- rollback and files
def test_rollback_hides_later_events_but_keeps_them(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with open_ledger(path) as led:
        for step in range(1, 6):
            led.record_selection([Decision("a", True, "no_history")], Context(step=step))
            led.record_groups([group("a", 4, 4)], Context(step=step))
            led.record_step(step, {"step": step})
        # killed after step 5; the checkpoint is from step 3
    with open_ledger(path) as led:
        assert led.rollback(after_step=3) == 1
        assert led.get("a").rollouts == 3 and led.get("a").trailing_all_correct == 3
        for step in (4, 5):
            led.record_groups([group("a", 4, 0)], Context(step=step))
            led.record_step(step, {"step": step})
        assert [s.step for s in led.steps()] == [1, 2, 3, 4, 5]
        assert [(g.step, g.attempt, g.live) for g in led.groups(include_rolled_back=True)] == [
            (1, 0, True), (2, 0, True), (3, 0, True), (4, 0, False), (5, 0, False), (4, 1, True), (5, 1, True)]
        assert led.get("a").trailing_all_wrong == 2 and led.get("a").rollouts == 5
        assert len(list(led.decisions())) == 3 and len(list(led.decisions(include_rolled_back=True))) == 5
    raw = sqlite3.connect(path)  # everything is still in the file; the views apply the rule
    assert raw.execute("SELECT COUNT(*) FROM group_events").fetchone()[0] == 7
    assert raw.execute("SELECT COUNT(*) FROM live_groups").fetchone()[0] == 5
    assert raw.execute("SELECT step FROM live_steps ORDER BY id").fetchall() == [(s,) for s in range(1, 6)]
    raw.close()


def test_rollback_to_an_older_checkpoint_hides_later_attempts_too():
    led = MemoryLedger()
    for step in range(1, 8):
        led.record_groups([group("a", 2, 1)], Context(step=step))
    led.rollback(after_step=5)
    for step in range(6, 10):
        led.record_groups([group("a", 2, 1)], Context(step=step))
    led.rollback(after_step=2)  # e.g. the newest checkpoints were lost
    assert [g.step for g in led.groups()] == [1, 2]
    assert led.attempts() == [(0, None), (1, 5), (2, 2)]


def test_open_ledger_and_readonly(tmp_path):
    assert isinstance(open_ledger(None), MemoryLedger)
    with open_ledger(tmp_path) as led:  # a run directory
        assert led.path == tmp_path / "ledger.sqlite"
        led.record_groups([group("a", 2, 1)], Context(step=1))
        with SqliteLedger(led.path, readonly=True) as ro:  # a reader while the writer is open
            assert ro.get("a").rollouts == 1
            with pytest.raises(sqlite3.OperationalError):
                ro.record_groups([group("a", 2, 1)], Context(step=2))
    with pytest.raises(FileNotFoundError):
        SqliteLedger(tmp_path / "missing.sqlite", readonly=True)


# ---------------------------------------------------------------------- ledger show
def hand_made(led) -> None:
    """Steps 1-2 are epoch 0, 3-4 epoch 1, 5 epoch 2; step 9 is rolled back."""
    led.register_pool(["a", "b", "c", "d", "e"], labels=["easy", "hard", "hard", "easy", None])
    ctx = lambda s: Context(step=s)  # noqa: E731
    led.record_selection([Decision(p, True, "no_history") for p in "abcd"] + [Decision("e", False, "hard")], ctx(1))
    led.record_groups([group("a", 4, 4, 0), group("b", 4, 0, 0), group("c", 4, 0, 0), group("d", 4, 2, 0)], ctx(1))
    led.record_groups([group("d", 4, 4, 0)], ctx(2))
    led.record_groups([group("a", 4, 4, 1), group("b", 4, 1, 1), group("c", 4, 0, 1)], ctx(3))
    led.record_groups([group("a", 4, 4, 1)], ctx(3), purpose="probe")
    led.record_selection([Decision("a", False, "easy"), Decision("e", False, "hard")], ctx(4))
    led.record_groups([group("d", 4, 0, 1)], ctx(4))
    led.record_groups([group("a", 4, 4, 2), group("b", 4, 0, 2)], ctx(5))
    for s in range(1, 6):
        led.record_step(s, {"step": s})
    led.record_groups([group("c", 4, 2, 2)], ctx(9))
    led.record_step(9, {"step": 9})
    led.rollback(after_step=8)


def test_summarize_hand_made_history(ledger):
    hand_made(ledger)
    s = summarize(ledger)
    assert s["attempts"] == 2 and s["rollbacks"] == [8] and s["steps"] == {"recorded": 5, "last": 5}
    p = s["prompts"]
    assert (p["total"], p["never_rolled_out"], p["always_solved"], p["never_solved"], p["mixed"]) == (5, 1, 1, 1, 2)
    assert p["by_label"]["easy"] == {"never_rolled_out": 0, "always_solved": 1, "never_solved": 0, "mixed": 1}
    assert s["skips"] == {"decisions": 7, "skip_decisions": 3, "prompts_ever_skipped": 2,
                          "by_reason": {"hard": 2, "easy": 1}}
    assert s["groups"]["train"]["groups"] == 11 and s["groups"]["probe"]["groups"] == 1
    assert s["groups"]["train"]["rollouts"] == 44
    assert (s["groups"]["train"]["all_correct"], s["groups"]["train"]["all_wrong"]) == (4, 5)  # a x3, d; b x2, c x2, d
    assert s["rolled_back_events"] == {"groups": 1, "selections": 0, "filters": 0, "steps": 1}
    per = s["greso"]["persistence"]
    assert per["pairs"] == 6
    assert per["zero_variance"] == {"pairs": 5, "next_zero_variance": 4, "p_next_zero_variance": 0.8}
    assert per["easy"] == {"pairs": 3, "next_zero_variance": 3, "p_next_zero_variance": 1.0,
                           "next_same": 2, "p_next_same": 2 / 3}
    assert per["hard"] == {"pairs": 2, "next_zero_variance": 1, "p_next_zero_variance": 0.5,
                           "next_same": 1, "p_next_same": 0.5}
    assert per["by_epoch"] == [
        {"epoch": 0, "pairs": 4, "zero_variance_pairs": 4, "p_next_zero_variance": 0.75},
        {"epoch": 1, "pairs": 2, "zero_variance_pairs": 1, "p_next_zero_variance": 1.0}]
    rev = s["greso"]["revival"]
    assert rev["zero_variance"] == {"prompts": 4, "rolled_out_again": 4, "revived": 1, "share": 0.25,
                                    "share_of_rolled_out_again": 0.25}
    assert rev["easy"] == {"prompts": 2, "rolled_out_again": 2, "revived": 0, "share": 0.0,
                           "share_of_rolled_out_again": 0.0}
    assert rev["hard"] == {"prompts": 3, "rolled_out_again": 2, "revived": 1, "share": 1 / 3,
                           "share_of_rolled_out_again": 0.5}


def test_show_cli_json_and_tables(tmp_path, capsys):
    with SqliteLedger(tmp_path / "ledger.sqlite") as led:
        hand_made(led)
    assert main([str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompts"]["mixed"] == 2 and out["greso"]["persistence"]["pairs"] == 6
    assert main([str(tmp_path / "ledger.sqlite")]) == 0  # rich tables
    text = capsys.readouterr().out
    assert "never_rolled_out" in text and "GRESO (a)" in text
    assert main([str(tmp_path / "nothing")]) == 2
