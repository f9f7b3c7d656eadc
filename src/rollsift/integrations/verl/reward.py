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
"""

from __future__ import annotations

import threading
from typing import Any

from ...records import Completion, Prompt
from ...rewards import MathReward

KNOBS = ("correct_reward", "wrong_reward", "format_reward", "timeout_s", "timeout_mode", "fast_path", "bare_answers")
_rewards: dict[tuple, MathReward] = {}
_lock = threading.Lock()


def _reward(knobs: dict[str, Any]) -> MathReward:
    key = tuple(sorted(knobs.items()))
    with _lock:
        if key not in _rewards:
            _rewards[key] = MathReward(**knobs)
        return _rewards[key]


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's reward-function signature; ``kwargs`` may carry MathReward knobs (``reward_kwargs``)."""
    reward = _reward({k: kwargs[k] for k in KNOBS if k in kwargs})
    if isinstance(ground_truth, (list, tuple)):  # some verl datasets keep several acceptable answers
        ground_truth = ground_truth[0] if ground_truth else ""
    r = reward(Prompt(id="", answer=str(ground_truth), text=""), Completion("", 0, (), solution_str or ""))
    return {"score": float(r.reward), "acc": float(r.correct)}
