"""Kill a small run anywhere, twice, then resume: weights, metrics and the live ledger must equal an
uninterrupted run's, bit for bit, with no group lost or doubled.

The kills are SIGKILLs the run sends itself at named points (``rollsift.faults``): before the first
checkpoint, between a step's writes, and inside every stage of a checkpoint write. Fixed cases
cover each point; seeded random cases pick others.
"""

from __future__ import annotations

import random

import pytest

from rollsift.faults import POINTS
from rollsift.ledger import open_ledger
from conftest import assert_same_run, overrides, train_cli

STEPS = 8
EXTRA = ["checkpoint_every=3"]  # checkpoints at 3, 6 and 8: steps 1-2 have none to resume from

FIXED = [
    [("step", 1), ("checkpoint.weights", 1)],  # before the first checkpoint, then inside its write
    [("ledger.groups", 3), ("checkpoint.state", 1)],
    [("checkpoint.rename", 1), ("metrics", 2)],
    [("checkpoint.pointer", 2), ("ledger.step", 2)],
]


def _random_case(seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    points = [rng.choice(POINTS) for _ in range(2)]  # a point is passed 3 (checkpoints) to 8+ times a run
    return [(p, rng.randint(1, 3 if p.startswith("checkpoint") else 7)) for p in points]


CASES = FIXED + [_random_case(s) for s in range(3)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    from rollsift.config import build_config
    from rollsift.testbed import base_checkpoint
    from rollsift.trainer.train import train

    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("straight") / "run"
    model = str(base_checkpoint())
    train(build_config(overrides=overrides(model, out, STEPS, EXTRA)))
    return model, out


def _cli(model, out, kill: str | None, resume: bool) -> int:
    done = train_cli(model, out, STEPS, EXTRA, kill=kill, resume=resume, timeout=300)
    assert done.returncode in (0, -9), done.stderr[-2000:]
    return done.returncode


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=["+".join(f"{p}:{c}" for p, c in case) for case in CASES])
def test_kill_twice_anywhere_then_resume(case, straight, tmp_path):
    model, ref = straight
    out = tmp_path / "run"
    codes = [_cli(model, out, f"{case[0][0]}:{case[0][1]}", resume=False)]
    if (out / "metrics.jsonl").exists() or (out / "ledger.sqlite").exists():
        codes.append(_cli(model, out, f"{case[1][0]}:{case[1][1]}", resume=True))
        codes.append(_cli(model, out, None, resume=True))
    else:  # killed before anything was written: nothing to resume, start again
        codes.append(_cli(model, out, None, resume=False))
    assert codes[0] == -9 and codes[-1] == 0
    assert_same_run(ref, out)
    a, b = open_ledger(ref / "ledger.sqlite"), open_ledger(out / "ledger.sqlite")
    da = [(d.step, d.round, d.prompt_id, d.kept, d.reason) for d in a.decisions()]
    db = [(d.step, d.round, d.prompt_id, d.kept, d.reason) for d in b.decisions()]
    assert da == db
    ga = [(g.step, g.prompt_id, g.rewards) for g in a.groups(detail=True)]
    gb = [(g.step, g.prompt_id, g.rewards) for g in b.groups(detail=True)]
    assert ga == gb and len(set(gb)) == len(gb)  # 0 lost, 0 doubled
