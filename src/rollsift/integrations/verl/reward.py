"""A verl reward function backed by ``rollsift.rewards.MathReward``.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`` in
its reward-loop workers (a thread of a Ray actor, on any node). This one returns
``{"score": reward, "acc": 1.0 | 0.0}``: verl trains on ``score``, its DAPO filter can read ``acc``
(``algorithm.filter_groups.metric=acc``), and the rollsift sampler reads ``acc`` as correctness.
Select it with::

    reward.custom_reward_function.path=pkg://rollsift.integrations.verl.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.format_reward=0.1   # optional MathReward knobs

Each process keeps one ``MathReward`` per distinct set of knobs: a scorer with a verifier
subprocess, not training state (the ledger never lives here).

verl's reward loop scores a batch one sample per call, many calls at once (threads of its
executor), so no call sees the batch. The batch bound is kept by time instead: calls that overlap
share one deadline, ``batch_timeout`` seconds after the first of them started (a ``_Window``); a
call that starts when the window has passed opens the next. So a batch of pathological answers
costs about ``batch_timeout`` per wave of concurrent calls, not ``timeout_s`` per answer; what the
deadline cut scores as wrong (``wrong_reward``, ``acc`` 0, counted in ``MathReward.metrics()``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ...records import Completion, Prompt
from ...rewards import MathReward

KNOBS = ("correct_reward", "wrong_reward", "format_reward", "timeout_s", "batch_timeout", "timeout_mode",
         "fast_path", "bare_answers")
_rewards: dict[tuple, tuple[MathReward, "_Window"]] = {}
_lock = threading.Lock()


class _Window:
    """One deadline shared by the calls that overlap in time (see the module docstring)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds, self.end, self.active = seconds, 0.0, 0
        self._lock = threading.Lock()

    def enter(self) -> float:
        with self._lock:
            now = time.monotonic()
            if self.seconds is None:
                self.active += 1
                return float("inf")
            if self.active == 0 or now >= self.end:
                self.end = now + self.seconds
            self.active += 1
            return self.end

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def _reward(knobs: dict[str, Any]) -> tuple[MathReward, _Window]:
    key = tuple(sorted(knobs.items()))
    with _lock:
        if key not in _rewards:
            reward = MathReward(**knobs)
            _rewards[key] = (reward, _Window(reward.batch_timeout))
        return _rewards[key]


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's reward-function signature; ``kwargs`` may carry MathReward knobs (``reward_kwargs``)."""
    reward, window = _reward({k: kwargs[k] for k in KNOBS if k in kwargs})
    if isinstance(ground_truth, (list, tuple)):  # some verl datasets keep several acceptable answers
        ground_truth = ground_truth[0] if ground_truth else ""
    pair = (Prompt(id="", answer=str(ground_truth), text=""), Completion("", 0, (), solution_str or ""))
    deadline = window.enter()
    try:
        r = reward.score([pair], deadline=deadline)[0]
    finally:
        window.leave()
    return {"score": float(r.reward), "acc": float(r.correct)}
