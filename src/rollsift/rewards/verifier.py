"""The math-verify verdict and the machinery that bounds its time: SIGALRM on the main thread, a
pool of persistent worker processes elsewhere.

``math_verify_outcome(gold, pred)`` is the default verifier (math-verify, gold first, both wrapped in
``\\boxed{}`` as verl does, math-verify's own signal timeouts off). ``run_with_alarm`` bounds a
call on the main thread. ``WorkerPool`` runs calls in worker processes started with ``python -c``
(never multiprocessing's spawn, so the caller's script is not re-imported), one call per worker at
a time; the pool grows with the number of concurrent callers up to ``max_workers``. An overrunning
worker is killed and restarted. A worker's start-up (importing math-verify, 3-4 s) happens before
its first call's deadline starts, and ``warm_in_process`` does the same for the main-thread path.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

class _MathVerifyNoise(logging.Filter):
    """Drops math-verify's once-per-process "Timeout is disabled" warning: we enforce our own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


_NOISE = _MathVerifyNoise()


@functools.lru_cache(maxsize=1)
def _math_verify():
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_NOISE)
    return math_verify


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    mv = _math_verify()
    return tuple(mv.parse(f"\\boxed{{{gold}}}", parsing_timeout=None))


def math_verify_outcome(gold: str, pred: str) -> str:
    """The default verifier: "correct", "wrong", "parse_error" or "gold_error".

    Runs math-verify with its own timeouts disabled; the caller bounds the time.
    """
    mv = _math_verify()
    g = _parse_gold(gold)
    if not g:
        return "gold_error"
    p = mv.parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if p and mv.verify(list(g), p, timeout_seconds=None):
        return "correct"
    # parse() falls back to the raw string when sympy cannot read it: that is a parse error
    # (the verdict above still let an exact string match count).
    return "wrong" if any(not isinstance(x, str) for x in p) else "parse_error"


Verifier = Callable[[str, str], "str | bool"]
OUTCOMES = ("correct", "wrong", "parse_error", "gold_error")


class Deadline(BaseException):
    """Raised by our SIGALRM handler; a BaseException so sympy's ``except Exception`` lets it by."""


class WorkerError(Exception):
    pass


def run_with_alarm(fn: Verifier, gold: str, pred: str, seconds: float) -> str:
    def on_alarm(signum, frame):
        raise Deadline()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(gold, pred)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def shippable(fn: Verifier) -> bool:
    """Can the worker process import ``fn``? (pickled by reference; ``__main__`` is not shared)"""
    if getattr(fn, "__module__", None) == "__main__":
        return False
    try:
        pickle.dumps(fn)
    except Exception:
        return False
    return True


class Worker:
    """One persistent verifier process, spoken to over a socket pair, one call at a time.

    Started with ``python -c`` (not multiprocessing's spawn) so the caller's script is never
    re-imported; it gets the caller's ``sys.path`` so an injected verifier's module imports.
    """

    STARTUP_S = 120.0

    def __init__(self, verifier: Verifier):
        self._blob = pickle.dumps(verifier)
        self._warm = verifier is math_verify_outcome
        self.proc: subprocess.Popen | None = None
        self.conn = None
        self.ready = False
        self.pid = -1  # the parent's pid at start: a forked copy must not share the socket
        self.restarts = 0

    def start(self) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        paths = [p or os.getcwd() for p in sys.path]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        code = "import sys; from rollsift.rewards.verifier import _worker_main; _worker_main(int(sys.argv[1]))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send_bytes(pickle.dumps((self._blob, self._warm)))
        self.ready, self.pid = False, os.getpid()

    def stop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.proc, self.conn, self.ready = None, None, False

    def ensure_ready(self, within: float | None = None) -> None:
        """Start the worker if needed and wait until it is ready. ``within`` (seconds): raise
        ``Deadline`` after that long, leaving the worker to finish starting for a later call."""
        if self.proc is None or self.pid != os.getpid() or self.proc.poll() is not None:
            if self.pid == os.getpid():
                self.stop()
            self.proc = None  # in a forked child, forget (never kill) the parent's worker
            self.start()
        if not self.ready:
            wait = self.STARTUP_S if within is None else min(max(within, 0.0), self.STARTUP_S)
            if not self.conn.poll(wait):
                if within is not None and wait < self.STARTUP_S:
                    raise Deadline()
                self.stop()
                raise WorkerError(f"verifier worker did not start within {self.STARTUP_S:.0f} s")
            self.conn.recv()
            self.ready = True

    def call(self, gold: str, pred: str, seconds: float) -> str:
        try:
            self.ensure_ready()
            self.conn.send((gold, pred))
            if not self.conn.poll(seconds):
                self.restart()
                raise Deadline()
            kind, value = self.conn.recv()
        except (EOFError, OSError) as e:
            self.restart()
            raise WorkerError(f"verifier worker died: {e!r}") from None
        if kind == "ok":
            return value
        if kind == "timeout":
            raise Deadline()
        raise WorkerError(value)

    def restart(self) -> None:
        """Kill an overrunning worker and start the next one now, so it warms up meanwhile."""
        self.stop()
        self.restarts += 1
        self.start()


def _worker_main(fd: int) -> None:
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; we exit on EOF
    os.dup2(2, 1)  # stray prints must not reach the parent as protocol bytes
    conn = Connection(fd)
    blob, warm = pickle.loads(conn.recv_bytes())
    verifier = pickle.loads(blob)
    timeout_types: tuple = (Deadline,)
    try:
        from math_verify.errors import TimeoutException

        timeout_types = (Deadline, TimeoutException)
    except ImportError:
        pass
    if warm:
        math_verify_outcome("1", "x+1")
    conn.send(("ready", os.getpid()))  # only now does the caller's deadline start
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", verifier(*msg)))
        except timeout_types as e:
            conn.send(("timeout", repr(e)))
        except BaseException as e:  # noqa: BLE001 - anything else is reported, never fatal
            conn.send(("error", f"{type(e).__name__}: {str(e)[:200]}"))


@functools.lru_cache(maxsize=1)
def warm_in_process() -> None:
    """Import math-verify and run one check now, outside any deadline (the import alone takes 3-4 s)."""
    math_verify_outcome("1", "x+1")


class WorkerPool:
    """Worker processes for one verifier, one call each at a time, started as concurrency asks.

    ``call`` bounds the whole call by ``deadline`` (``time.monotonic()``): waiting for a free worker
    counts, a worker's start-up does not.
    """

    def __init__(self, verifier: Verifier, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.verifier, self.max_workers = verifier, int(max_workers)
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._cond = threading.Condition()

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    def take(self, deadline: float) -> Worker:
        """A worker for the caller alone (give it back with ``give``); ``Deadline`` if none frees in time."""
        return self._take(deadline)

    def give(self, w: Worker) -> None:
        self._give(w)

    def warm(self, k: int) -> None:
        """Have at least ``k`` workers (at most ``max_workers``) and wait for those started now, all
        starting at once: the start-ups (3-4 s each) overlap instead of queueing."""
        fresh: list[Worker] = []
        with self._cond:
            while len(self.workers) < min(k, self.max_workers):
                w = Worker(self.verifier)
                self.workers.append(w)
                fresh.append(w)
        try:
            for w in fresh:
                w.start()
            for w in fresh:
                w.ensure_ready()
        finally:
            for w in fresh:
                self._give(w)

    def _take(self, deadline: float) -> Worker:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if len(self.workers) < self.max_workers:
                    w = Worker(self.verifier)
                    self.workers.append(w)
                    return w
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Deadline()
                self._cond.wait(remaining)

    def _give(self, w: Worker) -> None:
        with self._cond:
            self._idle.append(w)
            self._cond.notify()

    def call(self, gold: str, pred: str, deadline: float) -> str:
        w = self._take(deadline)
        try:
            t0 = time.monotonic()
            w.ensure_ready()
            deadline += time.monotonic() - t0  # start-up is not the call's time
            return w.call(gold, pred, max(deadline - time.monotonic(), 0.0))
        finally:
            self._give(w)

    def warmup(self) -> None:
        w = self._take(time.monotonic() + Worker.STARTUP_S)
        try:
            w.ensure_ready()
        finally:
            self._give(w)

    def stop(self) -> None:
        with self._cond:
            for w in self.workers:
                w.stop()
            self.workers, self._idle = [], []
