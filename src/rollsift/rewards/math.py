"""Verifiable math reward: extract the final answer, compare it with the gold answer.

Rules (docs/data_and_rewards.md has the long form):

* The answer is the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), else the last
  "#### X" (GSM8K), else the last "final answer is X" / "The answer is X" / "Answer: X".
* Plain numbers on both sides (integers, decimals, ``a/b``, ``\\frac{a}{b}``, ``1,234``) are
  compared in-process with exact fractions, the way math-verify would decide them; only a decimal
  within 1e-6 of the gold (where math-verify's 6-digit rounding matters) goes on to math-verify.
* Everything else goes to math-verify, gold first: ``verify(parse(gold), parse(pred))``, both
  wrapped in ``\\boxed{}`` as verl does. Its own signal timeouts are off; rollsift enforces one
  deadline per completion that works in any thread: SIGALRM on the main thread, a persistent
  worker process elsewhere (killed and restarted when it overruns).
* A reward never raises (except KeyboardInterrupt / SystemExit): failures become
  ``RewardResult(wrong_reward, False, reason)`` with reason "no_answer", "parse_error",
  "gold_error", "timeout" or "error"; a wrong but extracted answer gets "wrong".
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
from fractions import Fraction
from typing import Callable

from ..records import Completion, Prompt, RewardResult

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(boxed|fbox)\s*\{")
# GSM8K's "#### 72"; a markdown heading ("#### Step 2") starts with a letter and is not an answer.
_HASH_RE = re.compile(r"(?<!#)####(?!#)[ \t]*([^\n\sA-Za-z][^\n]*)")
# Anchors only: the answer is the rest of the line after the last anchor. Matching anchors (not
# whole lines) lets "Final Answer: The final answer is $5$." resolve to the later anchor.
_PHRASES = (
    ("final_answer", re.compile(r"(?i)\bfinal\s+answer\s*(?:is\b|:)\s*:?")),
    ("answer_is", re.compile(r"(?i)\bthe\s+answer\s+is\b\s*:?")),
    ("answer_colon", re.compile(r"(?i)\banswer\s*:")),
)
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _last_boxed(text: str) -> tuple[str, str] | None:
    """Content of the last ``\\boxed{..}``/``\\fbox{..}``; None if absent, unclosed or empty."""
    last = None
    for m in _BOX_RE.finditer(text):
        last = m
    if last is None:
        return None
    depth, i, start = 1, last.end(), last.end()
    while i < len(text):
        c = text[i]
        if c == "\\":  # \{ and \} are literal braces, not grouping
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                inner = text[start:i].strip()
                return (inner, last.group(1)) if inner else None
        i += 1
    return None  # truncated mid-box: the model never finished its answer


def _clean_phrase(rest: str) -> str | None:
    """The answer in the rest of a line after an anchor: math delimiters, bold, a final period."""
    s = rest.strip().lstrip("*").strip()
    for left, right in _MATH_DELIMS:
        if s.startswith(left):
            end = s.find(right, len(left))
            if end > 0:
                return s[len(left) : end].strip() or None
    s = re.split(r"\.\s", s, maxsplit=1)[0]
    s = s.strip().strip("*").strip().rstrip(".,;!").strip()
    return s or None


def extract_answer(text: str, *, bare: bool = False) -> tuple[str | None, str]:
    """The final answer in ``text`` and how it was found.

    ``how`` is "boxed" / "fbox", "gsm8k" (``#### X``), "final_answer", "answer_is",
    "answer_colon", "bare" (only with ``bare=True``: the whole text is one plain number, for
    direct-answer testbeds) or "none" (answer None). Pure and linear in ``len(text)``.
    """
    if not isinstance(text, str) or not text:
        return None, "none"
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = None
    for m in _HASH_RE.finditer(text):
        hashes = m
    if hashes is not None:
        ans = hashes.group(1).strip().rstrip(".").strip()
        if ans:
            return ans, "gsm8k"
    best: tuple[int, str, str] | None = None
    for how, rx in _PHRASES:
        for m in rx.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), how, text[m.end() :].split("\n", 1)[0])
    if best is not None:
        ans = _clean_phrase(best[2])
        if ans:
            return ans, best[1]
    if bare:
        s = text.strip().strip("$").strip()
        if _number(s) is not None:
            return s, "bare"
    return None, "none"


# ----------------------------------------------------------------------------- fast numeric path

_DEC_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_FRAC_RE = re.compile(r"([+-]?)(?:(\d+)/(\d+)|\\[dt]?frac\{(\d+)\}\{(\d+)\})")
_MAX_DECIMAL_DIGITS = 15  # beyond this sympy's Float precision, not the string, decides


def _number(s: str) -> tuple[Fraction, bool] | None:
    """``(value, is_decimal)`` for a plain number string, else None."""
    s = s.strip()
    if _DEC_RE.fullmatch(s):
        digits = s.replace(",", "")
        decimal = "." in digits
        if decimal and sum(ch.isdigit() for ch in digits) > _MAX_DECIMAL_DIGITS:
            return None
        return Fraction(digits), decimal
    m = _FRAC_RE.fullmatch(s)
    if m:
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return (-value if m.group(1) == "-" else value), False
    return None


def fast_equal(gold: str, pred: str) -> bool | None:
    """Decide plain-number answers without sympy; None when math-verify must decide.

    Agrees with math-verify (pinned by tests): exact comparison of integers and fractions; when
    either side is a decimal math-verify rounds both to 6 places, so values 1e-6 or more apart
    differ, equal values agree, and the band in between is left to math-verify.
    """
    g, p = _number(gold), _number(pred)
    if g is None or p is None:
        return None
    if g[0] == p[0]:
        return True
    if not (g[1] or p[1]) or abs(g[0] - p[0]) >= Fraction(1, 10**6):
        return False
    return None


# ------------------------------------------------------------------------------ math-verify path


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


class _Deadline(BaseException):
    """Raised by our SIGALRM handler; a BaseException so sympy's ``except Exception`` lets it by."""


class _WorkerError(Exception):
    pass


def _run_with_alarm(fn: Verifier, gold: str, pred: str, seconds: float) -> str:
    def on_alarm(signum, frame):
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(gold, pred)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _shippable(fn: Verifier) -> bool:
    """Can the worker process import ``fn``? (pickled by reference; ``__main__`` is not shared)"""
    if getattr(fn, "__module__", None) == "__main__":
        return False
    try:
        pickle.dumps(fn)
    except Exception:
        return False
    return True


class _Worker:
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
        code = "import sys; from rollsift.rewards.math import _worker_main; _worker_main(int(sys.argv[1]))"
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

    def ensure_ready(self) -> None:
        if self.proc is None or self.pid != os.getpid() or self.proc.poll() is not None:
            if self.pid == os.getpid():
                self.stop()
            self.proc = None  # in a forked child, forget (never kill) the parent's worker
            self.start()
        if not self.ready:
            if not self.conn.poll(self.STARTUP_S):
                self.stop()
                raise _WorkerError(f"verifier worker did not start within {self.STARTUP_S:.0f} s")
            self.conn.recv()
            self.ready = True

    def call(self, gold: str, pred: str, seconds: float) -> str:
        try:
            self.ensure_ready()
            self.conn.send((gold, pred))
            if not self.conn.poll(seconds):
                self.restart()
                raise _Deadline()
            kind, value = self.conn.recv()
        except (EOFError, OSError) as e:
            self.restart()
            raise _WorkerError(f"verifier worker died: {e!r}") from None
        if kind == "ok":
            return value
        if kind == "timeout":
            raise _Deadline()
        raise _WorkerError(value)

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
    timeout_types: tuple = (_Deadline,)
    try:
        from math_verify.errors import TimeoutException

        timeout_types = (_Deadline, TimeoutException)
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


# ---------------------------------------------------------------------------------- the reward

TIMEOUT_MODES = ("auto", "process", "none")


class MathReward:
    """``(Prompt, Completion) -> RewardResult`` for math answers; gold is ``prompt.answer``.

    correct_reward / wrong_reward: rewards of right and of wrong or unscorable completions.
    format_reward: reward of a wrong answer that was extracted and parsed (reason "wrong"); None
        means wrong_reward. GRESO's code used 0.1. ``correct`` stays the binary truth either way.
    timeout_s: wall-clock bound on one math-verify check (the fast path needs none).
    timeout_mode: "auto" (SIGALRM on the main thread when no other timer is armed, the worker
        process elsewhere), "process" (always the worker) or "none" (in-process, unbounded).
    fast_path: decide plain-number pairs without sympy (same verdicts, 60-100x cheaper).
    bare_answers: accept a completion that is just a number (direct-answer tasks).
    verifier: ``(gold, pred) -> "correct"|"wrong"|"parse_error"|"gold_error"`` (or a bool); must be
        importable by reference (not defined in ``__main__``) to run in the worker process.
    """

    def __init__(
        self,
        *,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        format_reward: float | None = None,
        timeout_s: float = 5.0,
        timeout_mode: str = "auto",
        fast_path: bool = True,
        bare_answers: bool = False,
        verifier: Verifier = math_verify_outcome,
    ):
        if timeout_mode not in TIMEOUT_MODES:
            raise ValueError(f"timeout_mode must be one of {TIMEOUT_MODES}, got {timeout_mode!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not callable(verifier):
            raise ValueError(f"verifier must be callable (gold, pred) -> outcome, got {verifier!r}")
        if timeout_mode == "process" and not _shippable(verifier):
            raise ValueError(
                f"timeout_mode='process' needs a verifier the worker can import; {verifier!r} is "
                "defined in __main__ or cannot be pickled: move it into a module"
            )
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.format_reward = None if format_reward is None else float(format_reward)
        self.timeout_s = float(timeout_s)
        self.timeout_mode = timeout_mode
        self.fast_path = bool(fast_path)
        self.bare_answers = bool(bare_answers)
        self.verifier = verifier
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()  # counters
        self._worker_lock = threading.Lock()  # one call at a time in the worker
        self._worker: _Worker | None = None
        self._counts = {"calls": 0, "fast_path": 0, "verifier": 0, "timeouts": 0, "errors": 0}
        self._warned: set[str] = set()

    # Picklable for frameworks that ship reward functions to other processes (Ray, DataLoader).
    def __getstate__(self) -> dict:
        keep = ("_lock", "_worker_lock", "_worker", "_counts", "_warned")
        return {k: v for k, v in self.__dict__.items() if k not in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __call__(self, prompt: Prompt, completion: Completion) -> RewardResult:
        try:
            result, path = self._score(prompt.answer, completion.text)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - includes math_verify's TimeoutException
            timeout = isinstance(e, _Deadline) or type(e).__name__ == "TimeoutException"
            path = "timeouts" if timeout else "errors"
            if not timeout:
                self._warn_once(type(e).__name__, f"reward check failed ({e!r}); scored as wrong")
            result = RewardResult(self.wrong_reward, False, "timeout" if timeout else "error")
        with self._lock:
            self._counts["calls"] += 1
            if path:
                self._counts[path] += 1
        return result

    def score(self, pairs) -> list[RewardResult]:
        """Score ``(prompt, completion)`` pairs in order."""
        return [self(p, c) for p, c in pairs]

    def _score(self, gold_raw: str, text: str) -> tuple[RewardResult, str | None]:
        pred, _how = extract_answer(text, bare=self.bare_answers)
        if pred is None:
            return RewardResult(self.wrong_reward, False, "no_answer"), None
        gold = gold_raw if isinstance(gold_raw, str) else str(gold_raw)
        if "\\boxed" in gold or "\\fbox" in gold:
            gold = extract_answer(gold)[0] or gold
        gold = gold.strip()
        if not gold:
            return RewardResult(self.wrong_reward, False, "gold_error"), None
        if self.fast_path:
            verdict = fast_equal(gold, pred)
            if verdict is not None:
                return self._result("correct" if verdict else "wrong"), "fast_path"
        return self._result(self._verify(gold, pred)), "verifier"

    def _result(self, outcome: str | bool) -> RewardResult:
        if isinstance(outcome, bool):  # a plain predicate is a fine verifier too
            outcome = "correct" if outcome else "wrong"
        if outcome == "correct":
            return RewardResult(self.correct_reward, True, None)
        if outcome == "wrong":
            r = self.wrong_reward if self.format_reward is None else self.format_reward
            return RewardResult(r, False, "wrong")
        if outcome not in OUTCOMES:
            raise _WorkerError(f"verifier returned {outcome!r}; expected one of {OUTCOMES}")
        return RewardResult(self.wrong_reward, False, outcome)

    def _verify(self, gold: str, pred: str) -> str:
        if self.timeout_mode == "none":
            return self.verifier(gold, pred)
        if (
            self.timeout_mode == "auto"
            and threading.current_thread() is threading.main_thread()
            and hasattr(signal, "setitimer")
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
        ):
            return _run_with_alarm(self.verifier, gold, pred, self.timeout_s)
        if not _shippable(self.verifier):
            self._warn_once("unshippable", "verifier cannot run in a worker; no timeout off the main thread")
            return self.verifier(gold, pred)
        with self._worker_lock:
            if self._worker is None:
                self._worker = _Worker(self.verifier)
            return self._worker.call(gold, pred, self.timeout_s)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("MathReward: %s", message)

    def metrics(self) -> dict[str, float]:
        """Cumulative counters: calls, fast-path and math-verify checks, timeouts, worker restarts."""
        with self._lock:
            out = {f"reward/math/{k}": float(v) for k, v in self._counts.items()}
        out["reward/math/worker_restarts"] = float(self._worker.restarts if self._worker else 0)
        return out

    def warmup(self) -> None:
        """Start the worker process now (it is otherwise started by the first call that needs it)."""
        with self._worker_lock:
            if self._worker is None:
                self._worker = _Worker(self.verifier)
            self._worker.ensure_ready()

    def close(self) -> None:
        """Stop the worker process, if any (also done when the interpreter exits)."""
        with self._worker_lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def __enter__(self) -> "MathReward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"MathReward(correct_reward={self.correct_reward}, wrong_reward={self.wrong_reward}, "
            f"format_reward={self.format_reward}, timeout_s={self.timeout_s}, "
            f"timeout_mode={self.timeout_mode!r}, fast_path={self.fast_path})"
        )
