"""One pipeline for every engine: the same seed and history give the same selection decisions under
rollsift's trainer, the verl session and the TRL adapter (its half is in test_integration_trl.py)."""

from __future__ import annotations

from collections import deque

import pytest

from rollsift.config import build_config
from rollsift.integrations.verl.config import VerlRollsiftConfig
from rollsift.integrations.verl.session import Session
from rollsift.ledger import MemoryLedger
from rollsift.pipeline import SEEDS, RolloutPipeline, seed_of
from rollsift.records import Completion, Context, Group
from rollsift.sim.model import synthetic_pool
from rollsift.pipeline.epoch_stream import EpochStream


def history(pool, steps: int = 3) -> MemoryLedger:
    """A ledger where a third of the pool was always right, a third always wrong, the rest mixed."""
    ledger = MemoryLedger()
    for step in range(1, steps + 1):
        groups = []
        for i, p in enumerate(pool):
            k = (8, 0, 4)[i % 3]
            comps = tuple(Completion(p.id, j, (1,), "") for j in range(8))
            groups.append(Group(p, comps, tuple([1.0] * k + [0.0] * (8 - k)), tuple([True] * k + [False] * (8 - k)),
                                step=step, epoch=step - 1))
        ledger.record_groups(groups, Context(step=step, epoch=step - 1))
    return ledger


def decisions(ledger) -> list[tuple]:
    return [(d.prompt_id, d.kept, d.reason, round(d.prob, 12)) for d in ledger.decisions()]


def test_one_seed_table():
    assert SEEDS["selector"] == 5 and seed_of("selector", 7) == 12 and seed_of("stream", 7) == 7


@pytest.mark.parametrize("knobs", [{"type": "greso"}, {"type": "posterior", "tau_start": 0.5},
                                   {"type": "learned", "tau_start": 0.6, "floor": 0.5}],  # untrained: q = 0.5, all below tau
                         ids=lambda k: k["type"])
def test_trainer_and_verl_decide_alike(knobs):
    pool, _ = synthetic_pool(60, seed=1)
    cfg = build_config(overrides=["seed=7", "batch_size=16", *(f"selector.{k}={v}" for k, v in knobs.items())])
    a, b = history(pool), history(pool)
    pipe = RolloutPipeline.from_config(cfg, pool, a)
    session = Session(VerlRollsiftConfig.from_kwargs({"selector": dict(knobs)}), cfg.selector, b, n=8,
                      seed=cfg.seed)
    stream = EpochStream(pool, seed_of("stream", cfg.seed))  # verl's dataloader, in the pipeline's order
    pending: deque = deque()
    for step in (4, 5, 6):
        ctx = Context(step=step, epoch=3, n=8)
        got = pipe.select(16, ctx)
        session.begin(step)
        other = session.select_stream(pending, 16, lambda: stream.draw(8), len(pool))
        assert [c.prompt.id for c in got] == [c.prompt.id for c in other]
    assert decisions(a) == decisions(b) and any(not d[1] for d in decisions(a))
