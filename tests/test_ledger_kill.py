"""SIGKILL at a random moment, resume from the last checkpoint: no lost, no duplicated event."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rollsift.ledger import SqliteLedger

WORKER = Path(__file__).with_name("ledger_kill_worker.py")
STEPS, PROMPTS, PAUSE = 40, 6, 0.004


def run_worker(ledger: Path, ckpt: Path, start: int, every: int, kill_after: float | None) -> bool:
    """Runs steps start..STEPS; with kill_after, SIGKILLs it that many seconds after it is ready.
    Returns True when the kill landed before the worker finished."""
    args = [sys.executable, str(WORKER), str(ledger), str(ckpt), str(start), str(STEPS), str(every), str(PROMPTS),
            str(PAUSE)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    if kill_after is None:
        assert proc.wait(timeout=60) == 0
        return False
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    return proc.returncode == -signal.SIGKILL


def checkpoint(ckpt: Path) -> int:
    return int(ckpt.read_text()) if ckpt.exists() else 0


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("trial", range(4))
def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path, trial):
    rng = random.Random(trial)
    ledger, ckpt = tmp_path / "ledger.sqlite", tmp_path / "checkpoint"
    every = (1, 3)[trial % 2]  # checkpoint every step, or every third (more events past it)
    start, kills = 1, 0
    for _ in range(2):  # killed twice, then runs to the end
        kills += run_worker(ledger, ckpt, start, every, kill_after=rng.uniform(0.0, 0.15))
        assert integrity(ledger) == "ok"
        c = checkpoint(ckpt)
        with SqliteLedger(ledger) as led:
            led.rollback(after_step=c)  # what Run.restore does
        start = c + 1
    run_worker(ledger, ckpt, start, every, kill_after=None)
    assert kills >= 1, "no kill landed mid-run: lower PAUSE or the kill delays"

    with SqliteLedger(ledger) as led:
        assert led.integrity_check() == "ok"
        want = Counter((s, f"p{i}") for s in range(1, STEPS + 1) for i in range(PROMPTS))
        live = list(led.groups(detail=True))
        assert Counter((g.step, g.prompt_id) for g in live) == want  # one per (step, prompt): no gap, no duplicate
        assert all(g.policy_version == g.step for g in live)
        assert Counter((d.step, d.prompt_id) for d in led.decisions()) == want
        assert [s.step for s in led.steps()] == list(range(1, STEPS + 1))
        for i in range(PROMPTS):
            s = led.get(f"p{i}")
            assert (s.rollouts, s.last_step) == (STEPS, STEPS)
        everything = list(led.groups(include_rolled_back=True))  # what earlier attempts wrote stays stored
        assert sum(g.live for g in everything) == len(live)
        assert all(g.step > c for g in everything if not g.live for c in [dict(led.attempts())[g.attempt + 1]])
