"""Asynchronous rollouts (rollsift.async_train): eta = 0 is the synchronous loop, staleness never
exceeds eta whatever the speeds, lagged groups train with the decoupled loss, and a kill of either
process then --resume loses and duplicates nothing."""

from __future__ import annotations


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rollsift.trainer.async_train import may_start
from rollsift.config import build_config
from rollsift.ledger import open_ledger
from rollsift.metrics_file import read_metrics
from conftest import assert_same_run, overrides, strip_times, train_cli, weights

SHIFTED = ("select/", "prune/", "replay/", "async/", "time/")  # told one batch later, or timings


def _train(model, out, steps, extra=(), resume=False):
    from rollsift.trainer.train import train

    torch.set_num_threads(1)
    return train(build_config(overrides=overrides(model, out, steps, list(extra))), resume=resume)


# ------------------------------------------------------------------------------ the admission rule
@settings(max_examples=200, deadline=None)
@given(eta=st.integers(0, 4), produce=st.lists(st.floats(0.1, 5.0), min_size=12, max_size=12),
       update=st.lists(st.floats(0.1, 5.0), min_size=12, max_size=12))
def test_staleness_never_exceeds_eta_whatever_the_speeds(eta, produce, update):
    """A discrete-event run of the rollout process and the trainer with random durations, the
    producer starting each batch by ``may_start`` with the newest weights: every batch's weights are
    at most eta versions behind the trainer that uses it, and eta = 0 leaves no overlap."""
    steps = len(produce)
    published = [0.0]  # published[v]: when weights version v became available
    trainer_free, prod_free = 0.0, 0.0
    ready = []
    for i in range(1, steps + 1):
        # the producer waits (in time) until the trainer has done step i - 1 - eta
        need = i - 1 - eta
        start = max(prod_free, published[need] if need >= 0 else 0.0)
        assert may_start(i, max(need, 0), eta) and (need < 1 or not may_start(i, need - 1, eta))
        version = max(v for v, t in enumerate(published) if t <= start)
        prod_free = start + produce[i - 1]
        ready.append((prod_free, version))
        # the trainer takes batch i once it is ready and step i - 1 is done
        t_start = max(trainer_free, prod_free)
        trainer_version = i - 1
        assert trainer_version - version <= eta
        if eta == 0:
            assert version == trainer_version
        trainer_free = t_start + update[i - 1]
        published.append(trainer_free)


# ------------------------------------------------------------------------------ real runs
@pytest.mark.slow
def test_eta_0_is_the_synchronous_loop(tiny_model, tmp_path):
    _train(tiny_model, tmp_path / "sync", 6)
    _train(tiny_model, tmp_path / "async", 6, ["async.enabled=true", "async.max_staleness=0"])
    wa, wb = weights(tmp_path / "sync"), weights(tmp_path / "async")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    drop = lambda rows: [{k: v for k, v in r.items() if not k.startswith(SHIFTED)} for r in rows]  # noqa: E731
    assert drop(strip_times(read_metrics(tmp_path / "sync"))) == drop(strip_times(read_metrics(tmp_path / "async")))
    la, lb = open_ledger(tmp_path / "sync" / "ledger.sqlite"), open_ledger(tmp_path / "async" / "ledger.sqlite")
    assert [(g.step, g.prompt_id, g.n_correct, g.policy_version) for g in la.groups()] == \
           [(g.step, g.prompt_id, g.n_correct, g.policy_version) for g in lb.groups()]
    assert [(d.prompt_id, d.kept) for d in la.decisions()] == [(d.prompt_id, d.kept) for d in lb.decisions()]
    assert all(u.trainer_version == u.group_version for u in lb.uses() if u.group_step == u.step)


@pytest.mark.slow
@pytest.mark.parametrize("eta,jitter", [(1, "1:80"), (2, "2:80")])
def test_random_speeds_keep_staleness_bounded_and_lagged_groups_decoupled(tiny_model, tmp_path, monkeypatch,
                                                                            eta, jitter):
    monkeypatch.setenv("ROLLSIFT_JITTER", jitter)  # both processes sleep random times between their steps
    out = tmp_path / "r"
    _train(tiny_model, out, 8, ["async.enabled=true", f"async.max_staleness={eta}"])
    led = open_ledger(out / "ledger.sqlite")
    fresh = [u for u in led.uses() if u.group_step == u.step]
    assert fresh and all(0 <= u.trainer_version - u.group_version <= eta for u in fresh)
    rows = {r["step"]: r for r in read_metrics(out)}
    for s, r in rows.items():
        if s and r.get("async/lagged_frac"):
            assert r["train/off_policy_frac"] >= r["async/lagged_frac"] - 1e-9  # every lagged group is off-policy
    assert any(u.trainer_version > u.group_version for u in fresh) or eta == 0


def _cli(model, out, steps, extra, kill=None, resume=False) -> int:
    return train_cli(model, out, steps, extra, kill=kill, resume=resume).returncode


def _nothing_lost_or_doubled(run) -> None:
    led = open_ledger(run / "ledger.sqlite")
    groups = [(g.step, g.prompt_id) for g in led.groups("train")]
    assert len(groups) == len(set(groups))  # no group recorded twice
    fresh = [(u.group_step, u.prompt_id) for u in led.uses() if not u.replayed and u.group_step == u.step]
    assert len(fresh) == len(set(fresh))  # no fresh group trained twice
    assert set(fresh) <= set(groups)  # every trained group is in the ledger
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == list(range(steps[-1] + 1))


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["ledger.groups:7", "checkpoint.state:1", "step:4"],
                         ids=["rollout-process", "trainer-in-checkpoint", "trainer-after-step"])
def test_kill_either_process_then_resume(tiny_model, tmp_path, kill):
    extra = ["async.enabled=true", "async.max_staleness=1", "checkpoint_every=3"]
    out = tmp_path / "r"
    assert _cli(tiny_model, out, 8, extra, kill=kill) != 0  # the trainer dies, or fails when its producer does
    assert _cli(tiny_model, out, 8, extra, resume=True) == 0
    _nothing_lost_or_doubled(out)


@pytest.mark.slow
def test_eta_0_resumes_to_the_uninterrupted_run(tiny_model, tmp_path):
    extra = ["async.enabled=true", "async.max_staleness=0", "checkpoint_every=3"]
    _train(tiny_model, tmp_path / "straight", 6, extra)
    assert _cli(tiny_model, tmp_path / "killed", 6, extra, kill="ledger.groups:9") != 0
    assert _cli(tiny_model, tmp_path / "killed", 6, extra, resume=True) == 0
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


def test_the_trainer_gives_the_callers_cores_back(tiny_model, tmp_path):
    """train() pins the trainer to one core while the rollout process has the other; a library caller (a
    notebook, this test session) must not stay pinned afterwards."""
    import os

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    before = os.sched_getaffinity(0)
    _train(tiny_model, tmp_path / "run", 2, ["async.enabled=true"])
    assert os.sched_getaffinity(0) == before
