"""Rollout replay: a FIFO buffer of recent informative groups, bounded by size and staleness.

As in DOTS's rollout replay (ASTRAL-Group/data-efficient-llm-rl): only groups with non-zero
variance enter, the newest group of a prompt replaces an older one (dedup by prompt), the oldest
leave first once ``capacity`` is reached, and a step samples uniformly without replacement.
Beyond the authors, who bound age only through the FIFO size, a group sampled more than
``max_staleness`` policy versions ago is never returned (AReaL bounds staleness the same way);
the learner corrects what remains with the decoupled PPO loss and its capped importance weight
(``rollsift.grpo``), using the behaviour log-probs stored with each completion.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..records import Group


class FifoReplayBuffer:
    def __init__(self, capacity: int = 256, max_staleness: int = 4, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        if max_staleness < 1:
            raise ValueError(f"replay max_staleness must be >= 1, got {max_staleness}")
        self.capacity, self.max_staleness = capacity, max_staleness
        self._groups: OrderedDict[str, Group] = OrderedDict()  # prompt id -> newest group, oldest first
        self._rng = np.random.default_rng(seed)
        self._last: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, groups: Sequence[Group], policy_version: int) -> None:
        for g in groups:
            if g.is_zero_variance:
                continue
            self._groups.pop(g.prompt_id, None)
            self._groups[g.prompt_id] = g
        while len(self._groups) > self.capacity:
            self._groups.popitem(last=False)

    def _fresh_enough(self, policy_version: int) -> list[Group]:
        self._evict_stale(policy_version)
        return list(self._groups.values())

    def _evict_stale(self, policy_version: int) -> None:
        for pid in [p for p, g in self._groups.items() if policy_version - g.policy_version > self.max_staleness]:
            del self._groups[pid]

    def available(self, policy_version: int) -> int:
        return len(self._fresh_enough(policy_version))

    def sample(self, k: int, policy_version: int, exclude: Iterable[str] = ()) -> list[Group]:
        skip = set(exclude)
        pool = [g for g in self._fresh_enough(policy_version) if g.prompt_id not in skip]
        if k <= 0 or not pool:
            return []
        idx = self._rng.choice(len(pool), size=min(k, len(pool)), replace=False)
        out = [pool[i] for i in sorted(idx)]
        ages = [policy_version - g.policy_version for g in out]
        self._last = {
            "replay/size": float(len(self._groups)),
            "replay/sampled": float(len(out)),
            "replay/mean_age": float(np.mean(ages)),
            "replay/max_age": float(max(ages)),
        }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"groups": list(self._groups.values()), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._groups = OrderedDict((g.prompt_id, g) for g in state["groups"])
        self._rng.bit_generator.state = state["rng"]

    def metrics(self) -> dict[str, float]:
        return dict(self._last) or {"replay/size": float(len(self._groups))}
