"""Verifiable math reward: extract the final answer, compare it with the gold answer.

Rules (docs/data_and_rewards.md has the long form):

* The answer is the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), else the last
  "#### X" (GSM8K), else the last "final answer is X" / "The answer is X" / "Answer: X".
* Plain numbers on both sides (integers, decimals, ``a/b``, ``\\frac{a}{b}``, ``1,234``) are
  compared in-process with exact fractions, the way math-verify would decide them; only a decimal
  within 1e-6 of the gold (where math-verify's 6-digit rounding matters) goes on to math-verify.
* Everything else goes to math-verify, gold first: ``verify(parse(gold), parse(pred))``, both
  wrapped in ``\\boxed{}`` as verl does. Its own signal timeouts are off; rollsift enforces one
  deadline per completion, for the whole call, that works in any thread: SIGALRM on the main
  thread, a pool of worker processes elsewhere (``rollsift.rewards.verifier``), one per concurrent
  caller up to ``max_workers``, killed and restarted when one overruns. Importing math-verify
  happens before any deadline starts. Verdicts are cached per (gold, extracted answer), timeouts
  included, so the n completions of a prompt that give one answer cost one check.
* ``score(pairs)`` bounds a whole batch by ``batch_timeout`` (``rewards.batch``): its distinct checks run
  in parallel on the worker pool as soon as their answers are extracted, and what the deadline
  cuts is a "timeout" (not cached: it may be fine when checked alone). 200 pathological
  completions took about 1,000 s as single calls; as one batch they take ``batch_timeout``.
* A reward never raises (except KeyboardInterrupt / SystemExit): failures become
  ``RewardResult(wrong_reward, False, reason)`` with reason "no_answer", "parse_error",
  "gold_error", "timeout" or "error"; a wrong but extracted answer gets "wrong".
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections import OrderedDict
from fractions import Fraction

from ..records import Completion, Prompt, RewardResult
from .batch import Batch
from .verifier import (
    OUTCOMES,
    Deadline,
    Verifier,
    WorkerError,
    WorkerPool,
    math_verify_outcome,
    run_with_alarm,
    shippable,
    warm_in_process,
)

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
    best: tuple[int, int, str] | None = None  # (start, end, how) of the last anchor
    for how, rx in _PHRASES:
        m = None
        for m in rx.finditer(text):  # keep only positions: slicing per match made this quadratic
            pass
        if m is not None and (best is None or m.start() > best[0]):
            best = (m.start(), m.end(), how)
    if best is not None:
        eol = text.find("\n", best[1])
        ans = _clean_phrase(text[best[1] : eol if eol >= 0 else len(text)])
        if ans:
            return ans, best[2]
    if bare:
        s = text.strip().strip("$").strip()
        if _number(s) is not None:
            return s, "bare"
    return None, "none"


# ----------------------------------------------------------------------------- fast numeric path

_DEC_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_FRAC_RE = re.compile(r"([+-]?)(?:(\d+)/(\d+)|\\[dt]?frac\{(\d+)\}\{(\d+)\})")
_MAX_DECIMAL_DIGITS = 15  # beyond this sympy's Float precision, not the string, decides


_MAX_INT_DIGITS = 4000  # Python refuses int(str) past 4,300 digits; longer integers compare as strings


def _canonical_int(s: str) -> str | None:
    """A plain integer as a canonical digit string ("-12", "0"), or None if ``s`` is not one."""
    s = s.strip()
    if "." in s or not _DEC_RE.fullmatch(s):
        return None
    sign = "-" if s.startswith("-") else ""
    digits = s.lstrip("+-").replace(",", "").lstrip("0") or "0"
    return digits if digits == "0" else sign + digits


def _number(s: str) -> tuple[Fraction, bool] | None:
    """``(value, is_decimal)`` for a plain number string, else None."""
    s = s.strip()
    if _DEC_RE.fullmatch(s):
        digits = s.replace(",", "")
        if sum(ch.isdigit() for ch in digits) > _MAX_INT_DIGITS:
            return None
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
    gi, pi = _canonical_int(gold), _canonical_int(pred)
    if gi is not None and pi is not None:  # integers of any length, no conversion
        return gi == pi
    g, p = _number(gold), _number(pred)
    if g is None or p is None:
        return None
    if g[0] == p[0]:
        return True
    if not (g[1] or p[1]) or abs(g[0] - p[0]) >= Fraction(1, 10**6):
        return False
    return None


# ---------------------------------------------------------------------------------- the reward

TIMEOUT_MODES = ("auto", "process", "none")
# One score() call (a group, or a whole step's batch) ends within this. Healthy batches take far
# less (256 distinct symbolic answers: 1.3 s on 2 workers, docs/robustness.md), and a step's
# generation on a real model takes tens of seconds or more, so a stalled batch costs at most a
# small multiple of its generation time instead of timeout_s per completion.
DEFAULT_BATCH_TIMEOUT_S = 30.0


class MathReward:
    """``(Prompt, Completion) -> RewardResult`` for math answers; gold is ``prompt.answer``.

    correct_reward / wrong_reward: rewards of right and of wrong or unscorable completions.
    format_reward: reward of a wrong answer that was extracted and parsed (reason "wrong"); None
        means wrong_reward. GRESO's code used 0.1. ``correct`` stays the binary truth either way.
    timeout_s: wall-clock bound on one call (extraction, waiting for a worker and the check; a
        worker's one-time start-up and math-verify's import are not counted).
    batch_timeout: wall-clock bound on one ``score(pairs)`` call, however many completions it holds
        (None: only the per-completion bound). See ``DEFAULT_BATCH_TIMEOUT_S``.
    timeout_mode: "auto" (SIGALRM on the main thread when no other timer is armed, the worker
        pool elsewhere), "process" (always the worker pool) or "none" (in-process, unbounded).
    fast_path: decide plain-number pairs without sympy (same verdicts, 60-100x cheaper).
    bare_answers: accept a completion that is just a number (direct-answer tasks).
    verifier: ``(gold, pred) -> "correct"|"wrong"|"parse_error"|"gold_error"`` (or a bool); must be
        importable by reference (not defined in ``__main__``) to run in the worker processes.
    max_workers: worker processes at most (one per concurrent caller; default: the CPU count).
    cache_size: verdicts remembered per (gold, extracted answer), timeouts included (0: none).
    """

    def __init__(
        self,
        *,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        format_reward: float | None = None,
        timeout_s: float = 5.0,
        batch_timeout: float | None = DEFAULT_BATCH_TIMEOUT_S,
        timeout_mode: str = "auto",
        fast_path: bool = True,
        bare_answers: bool = False,
        verifier: Verifier = math_verify_outcome,
        max_workers: int | None = None,
        cache_size: int = 65536,
    ):
        if timeout_mode not in TIMEOUT_MODES:
            raise ValueError(f"timeout_mode must be one of {TIMEOUT_MODES}, got {timeout_mode!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if batch_timeout is not None and (isinstance(batch_timeout, bool) or not isinstance(batch_timeout, (int, float))
                                          or not batch_timeout > 0):
            raise ValueError(f"batch_timeout must be > 0 seconds, or None for no batch bound; got {batch_timeout!r}")
        if not callable(verifier):
            raise ValueError(f"verifier must be callable (gold, pred) -> outcome, got {verifier!r}")
        if timeout_mode == "process" and not shippable(verifier):
            raise ValueError(
                f"timeout_mode='process' needs a verifier the worker can import; {verifier!r} is "
                "defined in __main__ or cannot be pickled: move it into a module"
            )
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size!r}")
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.format_reward = None if format_reward is None else float(format_reward)
        self.timeout_s = float(timeout_s)
        self.batch_timeout = None if batch_timeout is None else float(batch_timeout)
        self.timeout_mode = timeout_mode
        self.fast_path = bool(fast_path)
        self.bare_answers = bool(bare_answers)
        self.verifier = verifier
        self.max_workers = int(max_workers or os.cpu_count() or 1)
        self.cache_size = int(cache_size)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()  # counters and cache
        self._pool_lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._counts = {"calls": 0, "fast_path": 0, "verifier": 0, "cache_hits": 0, "timeouts": 0, "errors": 0,
                        "batch_timeouts": 0}
        self._warned: set[str] = set()

    @property
    def _worker(self):
        """The first worker process (None before any call needed one)."""
        return self._pool.workers[0] if self._pool is not None and self._pool.workers else None

    # Picklable for frameworks that ship reward functions to other processes (Ray, DataLoader).
    def __getstate__(self) -> dict:
        keep = ("_lock", "_pool_lock", "_pool", "_cache", "_counts", "_warned")
        return {k: v for k, v in self.__dict__.items() if k not in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __call__(self, prompt: Prompt, completion: Completion) -> RewardResult:
        deadline = time.monotonic() + self.timeout_s
        try:
            result, path = self._score(prompt.answer, completion.text, deadline)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - includes math_verify's TimeoutException
            result, path = self._failure(e)
        with self._lock:
            self._counts["calls"] += 1
            if path:
                self._counts[path] += 1
        return result

    def score(self, pairs, *, deadline: float | None = None) -> list[RewardResult]:
        """Score ``(prompt, completion)`` pairs (``out[i]`` scores ``pairs[i]``) under one deadline.

        The batch ends by ``deadline`` (a ``time.monotonic()`` instant; default: now plus
        ``batch_timeout``, a worker's first start-up not counted), whatever its completions hold:
        answers are extracted shortest completion first, each distinct (gold, answer) pair is
        checked once, on the worker pool as soon as it is found, in parallel (each check still
        bounded by ``timeout_s``), and what is unfinished at the deadline is wrong with reason
        "timeout"; the workers it ran on are killed and restarted. ``reward/math/batch_timeouts``
        counts the completions the deadline cut.
        """
        pairs = list(pairs)
        batch = Batch(self, deadline)
        out: list[RewardResult | None] = [None] * len(pairs)
        paths: list[str | None] = [None] * len(pairs)
        waiting: dict[tuple[str, str], list[int]] = {}
        cut = 0
        try:
            # Shortest first: a 1 MB completion costs ~0.1 s to read; it must not crowd out short ones.
            for i in sorted(range(len(pairs)), key=lambda j: len(getattr(pairs[j][1], "text", "") or "")):
                prompt, completion = pairs[i]
                if time.monotonic() >= batch.deadline:
                    out[i], paths[i], cut = self._timeout_result(), "timeouts", cut + 1
                    continue
                try:
                    decided = self._decide(prompt.answer, completion.text)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # noqa: BLE001 - includes a cached timeout (Deadline)
                    out[i], paths[i] = self._failure(e)
                    continue
                if isinstance(decided[0], RewardResult):
                    out[i], paths[i] = decided
                else:
                    if decided not in waiting:
                        batch.add(decided)  # checked now, while the longer completions are read
                    waiting.setdefault(decided, []).append(i)
            verdicts, cut_keys = batch.finish()
        finally:
            batch.close()
        for key, idx in waiting.items():
            outcome = verdicts[key]
            for n, i in enumerate(idx):
                if isinstance(outcome, BaseException):
                    out[i], paths[i] = self._failure(outcome)
                else:  # one check per distinct (gold, answer); its copies count as cache hits
                    out[i], paths[i] = self._result(outcome), "verifier" if n == 0 else "cache_hits"
            cut += len(idx) if key in cut_keys else 0
        with self._lock:
            self._counts["calls"] += len(pairs)
            self._counts["batch_timeouts"] += cut
            for path in paths:
                if path:
                    self._counts[path] += 1
        return out  # type: ignore[return-value]

    def _timeout_result(self) -> RewardResult:
        return RewardResult(self.wrong_reward, False, "timeout")

    def _failure(self, e: BaseException) -> tuple[RewardResult, str]:
        timeout = isinstance(e, Deadline) or type(e).__name__ == "TimeoutException"
        if not timeout:
            self._warn_once(type(e).__name__, f"reward check failed ({e!r}); scored as wrong")
        return RewardResult(self.wrong_reward, False, "timeout" if timeout else "error"), (
            "timeouts" if timeout else "errors")

    def _checked(self, key: tuple[str, str], outcome: object) -> str:
        if isinstance(outcome, bool):
            outcome = "correct" if outcome else "wrong"
        self._remember(key, outcome)  # type: ignore[arg-type]
        return outcome  # type: ignore[return-value]

    def _timed_out(self, key: tuple[str, str], own: bool, cut: set) -> None:
        if own:
            self._remember(key, "timeout")
        else:
            cut.add(key)

    def _decide(self, gold_raw: object, text: str) -> tuple[RewardResult, str | None] | tuple[str, str]:
        """What needs no verifier: ``(result, path)``; else the ``(gold, answer)`` pair to check.
        A cached timeout raises ``Deadline``."""
        pred, _how = extract_answer(text, bare=self.bare_answers)
        if pred is None:
            return RewardResult(self.wrong_reward, False, "no_answer"), None
        if gold_raw is None:
            return RewardResult(self.wrong_reward, False, "gold_error"), None
        gold = gold_raw if isinstance(gold_raw, str) else str(gold_raw)
        if "\\boxed" in gold or "\\fbox" in gold or "####" in gold:  # a worked solution as the gold
            gold = extract_answer(gold)[0] or gold
        gold = gold.strip()
        if not gold:
            return RewardResult(self.wrong_reward, False, "gold_error"), None
        if self.fast_path:
            verdict = fast_equal(gold, pred)
            if verdict is not None:
                return self._result("correct" if verdict else "wrong"), "fast_path"
        key = (gold, pred)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self._counts["cache_hits"] += 1
        if cached == "timeout":
            raise Deadline()
        if cached is not None:
            return self._result(cached), "verifier"
        return key

    def _score(self, gold_raw: object, text: str, deadline: float) -> tuple[RewardResult, str | None]:
        decided = self._decide(gold_raw, text)
        if isinstance(decided[0], RewardResult):
            return decided  # type: ignore[return-value]
        key = decided
        try:
            outcome = self._verify(key[0], key[1], deadline)
        except Deadline:
            self._remember(key, "timeout")  # type: ignore[arg-type]
            raise
        return self._result(self._checked(key, outcome)), "verifier"  # type: ignore[arg-type]

    def _remember(self, key: tuple[str, str], outcome: str) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            self._cache[key] = outcome
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _result(self, outcome: str | bool) -> RewardResult:
        if isinstance(outcome, bool):  # a plain predicate is a fine verifier too
            outcome = "correct" if outcome else "wrong"
        if outcome == "correct":
            return RewardResult(self.correct_reward, True, None)
        if outcome == "wrong":
            r = self.wrong_reward if self.format_reward is None else self.format_reward
            return RewardResult(r, False, "wrong")
        if outcome not in OUTCOMES:
            raise WorkerError(f"verifier returned {outcome!r}; expected one of {OUTCOMES}")
        return RewardResult(self.wrong_reward, False, outcome)

    def _verify(self, gold: str, pred: str, deadline: float) -> str:
        if self.timeout_mode == "none":
            return self.verifier(gold, pred)
        if self._alarm_ok():
            if self.verifier is math_verify_outcome:
                t0 = time.monotonic()
                warm_in_process()  # the import is not the call's time
                deadline += time.monotonic() - t0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline()
            return run_with_alarm(self.verifier, gold, pred, remaining)
        if not shippable(self.verifier):
            self._warn_once("unshippable", "verifier cannot run in a worker; no timeout off the main thread")
            return self.verifier(gold, pred)
        return self._workers().call(gold, pred, deadline)

    def _alarm_ok(self) -> bool:
        return (
            self.timeout_mode == "auto"
            and threading.current_thread() is threading.main_thread()
            and hasattr(signal, "setitimer")
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
        )

    def _workers(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = WorkerPool(self.verifier, self.max_workers)
            return self._pool

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("MathReward: %s", message)

    def metrics(self) -> dict[str, float]:
        """Cumulative counters: calls, fast-path and math-verify checks, cache hits, timeouts, worker restarts."""
        with self._lock:
            out = {f"reward/math/{k}": float(v) for k, v in self._counts.items()}
        out["reward/math/worker_restarts"] = float(self._pool.restarts if self._pool else 0)
        out["reward/math/workers"] = float(len(self._pool.workers) if self._pool else 0)
        return out

    def warmup(self, workers: int = 1) -> None:
        """Start ``workers`` worker processes now, all at once (otherwise the first calls that need
        them start them)."""
        if workers <= 1:
            self._workers().warmup()
        else:
            self._workers().warm(workers)

    def close(self) -> None:
        """Stop the worker processes, if any (also done when the interpreter exits)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.stop()
                self._pool = None

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
            f"batch_timeout={self.batch_timeout}, "
            f"timeout_mode={self.timeout_mode!r}, fast_path={self.fast_path})"
        )

