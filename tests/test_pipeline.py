"""The rollout pipeline on the simulator: refill, carry-over, accounting, selection, replay, state."""

from __future__ import annotations

import copy

import pytest

from rollsift.filters.dynamic import DynamicSamplingConfig, DynamicSamplingFilter
from rollsift.filters.pods import PODSConfig, PODSFilter
from rollsift.ledger import MemoryLedger
from rollsift.pipeline import RolloutPipeline, RoundCapError
from rollsift.records import Context, SamplingParams, TrainBatch
from rollsift.pipeline.replay_buffer import FifoReplayBuffer
from rollsift.select.greso import GresoConfig, GresoSelector
from rollsift.select.uniform import UniformSelector
from rollsift.sim.model import SimGenerator, SimLearner, sim_reward, synthetic_pool


def make(size=200, selector=None, filters=(), batch=16, n=8, seed=0, replay=None, frac=0.0, easy=0.3, hard=0.3):
    pool, model = synthetic_pool(size, seed=seed, easy=easy, hard=hard)
    ledger = MemoryLedger()
    ledger.register_pool([p.id for p in pool])
    gen = SimGenerator(model, seed=seed)
    pipe = RolloutPipeline(
        pool, selector or UniformSelector(), gen, lambda p, cs: [sim_reward(p, c) for c in cs], ledger,
        batch_size=batch, n=n, sampling=SamplingParams(), filters=list(filters), replay=replay,
        replay_fraction=frac, seed=seed,
    )
    return pipe, ledger, model


def step(pipe, learner, s):
    ctx = Context(step=s, epoch=pipe.stream.epoch, policy_version=learner.policy_version, n=pipe.n)
    col = pipe.collect(ctx)
    learner.update(TrainBatch(tuple(col.groups), tuple((0.0,) * g.n for g in col.groups), tuple(col.off_policy)), ctx)
    pipe.observe(col, ctx)
    return col


def test_plain_grpo_is_one_round_of_batch_size_prompts_all_recorded():
    pipe, ledger, model = make()
    learner = SimLearner(model)
    col = step(pipe, learner, 1)
    assert len(col.groups) == 16 and col.metrics["cost/rounds"] == 1
    assert col.metrics["cost/rollouts"] == 16 * 8
    assert len(list(ledger.groups())) == 16
    informative = sum(g.n for g in col.generated if not g.is_zero_variance)
    assert col.metrics["cost/informative_rollouts"] == informative


def test_dynamic_sampling_refills_until_the_batch_is_informative():
    dyn = DynamicSamplingFilter(DynamicSamplingConfig(max_rounds=20))
    pipe, ledger, model = make(filters=[dyn], easy=0.4, hard=0.4)
    learner = SimLearner(model)
    col = step(pipe, learner, 1)
    assert len(col.groups) == 16
    assert all(not g.is_zero_variance for g in col.groups)
    assert col.metrics["cost/rounds"] >= 2  # 80% of prompts start zero-variance
    # every generated group is in the ledger before filtering, and filter decisions too
    assert len(list(ledger.groups())) == len(col.generated)
    assert col.metrics["cost/rollouts"] == 8 * len(col.generated)


def test_round_cap_trains_short_or_errors():
    pipe, _, model = make(filters=[DynamicSamplingFilter(DynamicSamplingConfig(max_rounds=1, round_size="fixed"))],
                          easy=0.45, hard=0.45)
    col = step(pipe, SimLearner(model), 1)
    assert len(col.groups) < 16 and col.metrics["cost/short_batch"] == 1.0
    pipe, _, model = make(filters=[DynamicSamplingFilter(DynamicSamplingConfig(max_rounds=1, at_cap="error",
                                                                               round_size="fixed"))],
                          easy=0.45, hard=0.45)
    with pytest.raises(RoundCapError, match="dynamic.max_rounds=1"):
        step(pipe, SimLearner(model), 1)


def test_surplus_is_carried_one_step_and_used_first():
    dyn = DynamicSamplingFilter(DynamicSamplingConfig(round_size="fixed", max_round_factor=4, min_round=64))
    pipe, _, model = make(filters=[dyn], easy=0.05, hard=0.05)
    pipe.refill.next_round_size = lambda missing, zv, bs: 64  # always over-generate
    learner = SimLearner(model)
    col1 = step(pipe, learner, 1)
    carried = list(pipe.carry)
    assert col1.metrics["cost/surplus_groups"] == len(carried) > 0
    col2 = step(pipe, learner, 2)
    assert [g.prompt_id for g in col2.groups[: len(carried)]] == [g.prompt_id for g in carried][:16]
    assert col2.off_policy[0] and col2.metrics["batch/carried_groups"] == min(len(carried), 16)


def test_stale_carry_is_dropped():
    dyn = DynamicSamplingFilter(DynamicSamplingConfig(max_staleness=1))
    pipe, _, model = make(filters=[dyn])
    pipe.carry.extend(g for g in step(pipe, SimLearner(model), 1).groups)
    before = len(pipe.carry)
    ctx = Context(step=5, policy_version=4)
    col = pipe.collect(ctx)
    assert col.metrics["cost/stale_dropped_groups"] == before >= 16
    assert all(g.step == 5 for g in col.groups)


def test_greso_round_size_formula():
    f = DynamicSamplingFilter(DynamicSamplingConfig(min_round=8, max_round_factor=3.0))
    assert f.next_round_size(16, 0.5, 32) == 40  # 16 / 0.5 * 1.25
    assert f.next_round_size(1, 0.0, 32) == 8  # clamped below
    assert f.next_round_size(32, 0.9, 32) == 96  # clamped above at 3 * 32
    assert f.next_round_size(32, 1.0, 32) == 96


def test_greso_skips_once_history_exists():
    sel = GresoSelector(GresoConfig(), seed=0)
    pipe, ledger, model = make(size=64, selector=sel, batch=16, easy=0.5, hard=0.3)
    learner = SimLearner(model, lr=0.0)
    for s in range(1, 13):  # three epochs of a 64-prompt pool
        step(pipe, learner, s)
    skipped = [d for d in list(ledger.decisions()) if not d.kept]
    assert skipped and {d.reason for d in skipped} <= {"easy", "hard"}
    assert sel.metrics()["select/greso/skip_frac"] > 0


def test_pods_keeps_m_per_group():
    pipe, _, model = make(filters=[PODSFilter(PODSConfig(m=4))], n=16)
    col = step(pipe, SimLearner(model), 1)
    assert all(g.n == 4 for g in col.groups)
    assert col.metrics["cost/rollouts"] == 16 * 16


def test_replay_mixes_in_after_warmup():
    buf = FifoReplayBuffer(capacity=64, max_staleness=4)
    dyn = DynamicSamplingFilter(DynamicSamplingConfig())
    pipe, _, model = make(filters=[dyn], replay=buf, frac=0.5)
    learner = SimLearner(model)
    first = step(pipe, learner, 1)
    assert first.metrics["batch/replayed_groups"] == 0
    later = [step(pipe, learner, s) for s in range(2, 5)]
    assert any(c.metrics["batch/replayed_groups"] == 8 for c in later)
    for c in later:
        fresh_ids = {g.prompt_id for g, off in zip(c.groups, c.off_policy) if not off}
        assert len(c.groups) == 16
        replayed = c.groups[len(c.groups) - int(c.metrics["batch/replayed_groups"]):]
        assert not fresh_ids & {g.prompt_id for g in replayed}


def test_state_dict_resume_gives_the_same_selections():
    sel = GresoSelector(GresoConfig(), seed=3)
    dyn = DynamicSamplingFilter(DynamicSamplingConfig())
    pipe, ledger, model = make(size=48, selector=sel, filters=[dyn])
    learner = SimLearner(model)
    for s in range(1, 5):
        step(pipe, learner, s)
    state = copy.deepcopy(pipe.state_dict())
    gen_state = copy.deepcopy(pipe.generator.state_dict())
    a = [step(pipe, learner, s) for s in (5, 6)]
    # a fresh pipeline over the same ledger history, restored from the state
    pipe2, _, model2 = make(size=48, selector=GresoSelector(GresoConfig(), seed=99), filters=[dyn])
    pipe2.ledger = ledger
    ledger.rollback(after_step=4)
    pipe2.load_state_dict(state)
    pipe2.generator.load_state_dict(gen_state)
    learner2 = SimLearner(model2)
    learner2.policy_version = 4
    b = [step(pipe2, learner2, s) for s in (5, 6)]
    for x, y in zip(a, b):
        assert [g.prompt_id for g in x.groups] == [g.prompt_id for g in y.groups]
        assert [g.correct for g in x.groups] == [g.correct for g in y.groups]
