"""The epoch stream: shuffled passes over the prompt pool, resumable from (epoch, position)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..records import Candidate, Prompt


class EpochStream:
    """Yields the pool in a fresh random order each epoch.

    The order of epoch ``e`` is a pure function of ``(seed, e)``, so the state is two integers.
    ``draw(k)`` hands out the next candidates, tagged with their epoch; the prompt walk keeps
    what it drew and did not examine (``rollsift.selection``).
    """

    def __init__(self, pool: Sequence[Prompt], seed: int = 0) -> None:
        if not pool:
            raise ValueError("the prompt pool is empty: give at least one training prompt")
        self.pool = list(pool)
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.pool))

    def chunk(self, k: int) -> list[Prompt]:
        """Up to ``k`` next prompts of the current epoch (a new epoch starts when it is used up)."""
        if self.pos >= len(self.pool):
            self.epoch += 1
            self.pos = 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.pos : self.pos + k]
        return [self.pool[i] for i in idx]

    def consume(self, count: int) -> None:
        self.pos += count

    def draw(self, k: int) -> list[Candidate]:
        """The next ``k`` (or fewer, at the end of an epoch) prompts as candidates of their epoch."""
        got = self.chunk(k)
        self.consume(len(got))
        return [Candidate(p, self.epoch) for p in got]

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.pos / len(self.pool)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self._order = self._permutation(self.epoch)
