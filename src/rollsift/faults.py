"""Named crash points and random delays, for the tests that kill a run anywhere and resume it, and
that vary the speeds of the asynchronous rollout process and trainer.

``ROLLSIFT_KILL_AT="checkpoint.state:2"`` makes the process SIGKILL itself the 2nd time it passes
the point ``checkpoint.state`` (several points: comma-separated). Unset, a point costs one dict
look-up. The points are where a real crash hurts most: between the writes of a step and inside a
checkpoint (``tests/test_kill_anywhere.py`` walks them). ``ROLLSIFT_JITTER="seed:max_ms"`` makes
``delay(name)`` sleep a random 0..max_ms milliseconds (drawn per process and name from the seed).
"""

from __future__ import annotations

import os
import signal
from typing import Any

POINTS = ("ledger.groups", "ledger.step", "metrics", "checkpoint.weights", "checkpoint.state",
          "checkpoint.rename", "checkpoint.pointer", "step")
_plan: dict[str, int] | None = None
_seen: dict[str, int] = {}


def _load() -> dict[str, int]:
    plan = {}
    for item in filter(None, os.environ.get("ROLLSIFT_KILL_AT", "").split(",")):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"ROLLSIFT_KILL_AT: unknown point {name!r}; choose from {POINTS}")
        plan[name] = int(count or 1)
    return plan


def point(name: str) -> None:
    global _plan
    if _plan is None:
        _plan = _load()
    if name in _plan:
        _seen[name] = _seen.get(name, 0) + 1
        if _seen[name] == _plan[name]:
            os.kill(os.getpid(), signal.SIGKILL)


_jitter: Any = None


def delay(name: str) -> None:
    """Sleep a random time when ``ROLLSIFT_JITTER`` is set (tests of asynchronous timing)."""
    global _jitter
    if _jitter is None:
        spec = os.environ.get("ROLLSIFT_JITTER", "")
        if not spec:
            _jitter = False
            return
        import random

        seed, _, most = spec.partition(":")
        _jitter = (random.Random(f"{seed}/{os.getpid()}/{name}"), float(most or 50) / 1000.0)
    if _jitter:
        import time

        rng, most = _jitter
        time.sleep(rng.random() * most)
