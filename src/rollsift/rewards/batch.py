"""The checks of one ``MathReward.score(pairs)`` call under one deadline (``batch_timeout``).

Split from ``rewards.math`` so that file keeps the reward's rules; this one is only scheduling:
which checks run where, and when the batch gives up on them.
"""

from __future__ import annotations

import time
from typing import Any

from .verifier import Deadline, WorkerPool, shippable


class Batch:
    """The checks of one ``MathReward.score`` call: submitted to the worker pool as they are found
    (one thread per worker), all bounded by the batch's deadline. A lone check on the main thread
    runs in-process under SIGALRM instead (no worker needed); so does everything that may not leave
    the process (``timeout_mode="none"``, a verifier the worker cannot import)."""

    def __init__(self, reward: Any, deadline: float | None) -> None:  # a MathReward (math.py imports this module)
        self.r = reward
        self.extend = deadline is None  # our own deadline: a worker's first start-up is not counted
        if deadline is None:
            bt = reward.batch_timeout
            deadline = time.monotonic() + bt if bt is not None else float("inf")
        self.deadline = deadline
        self.keys: list[tuple[str, str]] = []
        self.futures: dict[tuple[str, str], object] = {}
        self.cut: set[tuple[str, str]] = set()
        self.pool_ok = reward.timeout_mode != "none" and shippable(reward.verifier)
        self.ex = None
        self.pool: WorkerPool | None = None

    def add(self, key: tuple[str, str]) -> None:
        self.keys.append(key)
        if not self.pool_ok or (len(self.keys) == 1 and self.r._alarm_ok()):
            return  # maybe the only check: decided in finish()
        for k in self.keys:
            if k not in self.futures:
                self._submit(k)

    def _submit(self, key: tuple[str, str]) -> None:
        if self.ex is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = self.r._workers()
            t0 = time.monotonic()
            self.pool.warm(len(self.keys))  # the workers the batch has asked for so far; more start on demand
            if self.extend:
                self.deadline += time.monotonic() - t0
            self.ex = ThreadPoolExecutor(max_workers=self.r.max_workers, thread_name_prefix="rollsift-reward")
        self.futures[key] = self.ex.submit(self._check, key)

    def _check(self, key: tuple[str, str]) -> object:
        r, pool, deadline = self.r, self.pool, self.deadline
        try:
            w = pool.take(deadline)
        except Deadline as e:
            self.cut.add(key)
            return e
        try:
            w.ensure_ready(within=deadline - time.monotonic())
            own = time.monotonic() + r.timeout_s
            if deadline <= time.monotonic():  # nothing sent: the worker stays alive
                raise Deadline()
            try:
                return r._checked(key, w.call(key[0], key[1], max(min(own, deadline) - time.monotonic(), 0.0)))
            except Deadline as e:
                r._timed_out(key, own <= deadline, self.cut)
                return e
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - a worker error is this check's "error"
            if isinstance(e, Deadline):
                self.cut.add(key)
            return e
        finally:
            pool.give(w)

    def finish(self) -> tuple[dict[tuple[str, str], object], set[tuple[str, str]]]:
        """Verdicts (an outcome, or the exception) of every key, and the keys the deadline cut.
        Only a check that ran its own ``timeout_s`` is cached as a timeout: one the batch cut short
        may be fine, and is checked again next time."""
        verdicts: dict[tuple[str, str], object] = {}
        for key in self.keys:
            if key in self.futures:
                verdicts[key] = self.futures[key].result()  # type: ignore[attr-defined]
                continue
            now = time.monotonic()
            own = now + self.r.timeout_s
            try:
                if now >= self.deadline:
                    raise Deadline()
                verdicts[key] = self.r._checked(key, self.r._verify(key[0], key[1], min(own, self.deadline)))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001
                verdicts[key] = e
                if isinstance(e, Deadline):
                    self.r._timed_out(key, own <= self.deadline, self.cut)
        return verdicts, self.cut

    def close(self) -> None:
        if self.ex is not None:
            self.ex.shutdown(wait=True)
