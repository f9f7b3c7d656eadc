"""Answer extraction, MathReward verdicts, the fast numeric path, timeouts and threads."""

from __future__ import annotations

import pickle
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollsift.protocols import RewardFn
from rollsift.records import Completion, Prompt, RewardResult
from rollsift.rewards import (
    MathReward,
    RewardStats,
    extract_answer,
    fast_equal,
    math_verify_outcome,
    score,
    score_group,
)


def slow_verifier(gold: str, pred: str) -> str:
    """A verifier that spins on the prediction "slow" (stands in for a pathological sympy case).

    Module-level so the worker process can import it by reference.
    """
    if pred == "slow":
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass
    return "correct" if gold == pred else "wrong"


def raising_verifier(gold: str, pred: str) -> str:
    if pred == "boom":
        raise RuntimeError("verifier bug")
    if pred == "mvtimeout":
        from math_verify.errors import TimeoutException

        raise TimeoutException("Operation timed out!")
    if pred == "interrupt":
        raise KeyboardInterrupt
    if pred == "odd":
        return "maybe"
    if pred == "yes":
        return True
    return "correct" if gold == pred else "wrong"


def P(answer: str) -> Prompt:
    return Prompt(id="p", text="q", answer=answer)


def C(text: str) -> Completion:
    return Completion(prompt_id="p", index=0, token_ids=(), text=text)


# ------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}}", ("\\frac{1}{2}", "boxed")),
        ("\\boxed{\\frac{a}{b^{2}} + \\{1\\}}", ("\\frac{a}{b^{2}} + \\{1\\}", "boxed")),
        ("first \\boxed{3}, then \\boxed{4}.", ("4", "boxed")),
        ("\\boxed{\\boxed{7}}", ("7", "boxed")),
        ("\\fbox{12}", ("12", "fbox")),
        ("\\boxed {  5 }", ("5", "boxed")),
        ("48*3=144\n37+144=181\n181-9=172\n\\boxed{172}", ("172", "boxed")),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", ("72", "gsm8k")),
        ("#### 1,234.", ("1,234", "gsm8k")),
        ("#### Step 1\nadd them\n#### Step 2\nso \\boxed{9}", ("9", "boxed")),
        ("#### Step 1\nadd them: 4+5\n#### 9\n#### Check", ("9", "gsm8k")),
        ("#### Step 1\nadd them", (None, "none")),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", ("\\frac{3}{4}", "final_answer")),
        ("so the answer is 12 apples.", ("12 apples", "answer_is")),
        ("The answer is: \\(x+1\\)", ("x+1", "answer_is")),
        ("**Answer:** 42", ("42", "answer_colon")),
        ("Answer: 3.5. Done", ("3.5", "answer_colon")),
        ("answer: 1\nmore thinking\nAnswer: 2", ("2", "answer_colon")),
        ("The answer is 3 \\boxed{5}", ("5", "boxed")),  # a box beats any phrase
        ("no answer here", (None, "none")),
        ("", (None, "none")),
        ("42", (None, "none")),  # bare numbers only with bare=True
        ("\\boxed{}", (None, "none")),
        ("\\boxed{3} then \\boxed{12", (None, "none")),  # truncated final box: no answer
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_bare_number_only_when_asked():
    assert extract_answer(" 42\n", bare=True) == ("42", "bare")
    assert extract_answer("about 42", bare=True) == (None, "none")


# --------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "gold, text, correct",
    [
        ("1/2", "\\boxed{0.5}", True),
        ("0.5", "\\boxed{\\frac{1}{2}}", True),
        ("\\frac{1}{2}", "The answer is $0.5$.", True),
        ("2x+1", "\\boxed{1+2x}", True),
        ("2x+1", "\\boxed{2*x+1}", True),
        ("2x+1", "\\boxed{2x-1}", False),
        ("3", "\\boxed{x=3}", True),
        ("\\sqrt{2}", "\\boxed{2^{1/2}}", True),
        ("10\\%", "\\boxed{0.1}", True),
        ("\\pi", "\\boxed{3.14159}", False),
        ("1/3", "\\boxed{0.333333}", True),
        ("1/3", "\\boxed{0.33}", False),
        ("\\boxed{172}", "\\boxed{172}", True),  # a boxed gold is unboxed first
    ],
)
@pytest.mark.parametrize("fast_path", [True, False])
def test_math_verify_equivalences(gold, text, correct, fast_path):
    r = MathReward(fast_path=fast_path)(P(gold), C(text))
    assert r.correct is correct
    assert r == (RewardResult(1.0, True, None) if correct else RewardResult(0.0, False, "wrong"))


def test_reward_values_and_reasons():
    reward = MathReward(correct_reward=1.0, wrong_reward=-1.0, format_reward=0.1)
    assert reward(P("5"), C("\\boxed{5}")) == RewardResult(1.0, True, None)
    assert reward(P("5"), C("\\boxed{6}")) == RewardResult(0.1, False, "wrong")
    assert reward(P("5"), C("I don't know")) == RewardResult(-1.0, False, "no_answer")
    assert reward(P("5"), C("\\boxed{\\frac{}{}}")) == RewardResult(-1.0, False, "parse_error")
    assert reward(P("   "), C("\\boxed{5}")) == RewardResult(-1.0, False, "gold_error")
    # format_reward defaults to wrong_reward
    assert MathReward(wrong_reward=-1.0)(P("5"), C("\\boxed{6}")) == RewardResult(-1.0, False, "wrong")


def test_is_a_reward_fn():
    reward: RewardFn = MathReward()
    assert isinstance(reward(P("1"), C("\\boxed{1}")), RewardResult)


def test_constructor_rejects_bad_knobs():
    with pytest.raises(ValueError, match="timeout_mode"):
        MathReward(timeout_mode="signal")
    with pytest.raises(ValueError, match="timeout_s"):
        MathReward(timeout_s=0)
    with pytest.raises(ValueError, match="move it into a module"):
        MathReward(timeout_mode="process", verifier=lambda g, p: "correct")


# ------------------------------------------------------------------------------ fast path


_NUMBER_PAIRS = [
    ("172", "172"), ("172", "172.0"), ("172", "171"), ("-3", "-3"), ("-3", "3"), ("0", "-0"),
    ("1/2", "0.5"), ("1/2", "2/4"), ("\\frac{1}{2}", "0.5"), ("-\\frac{3}{4}", "-0.75"),
    ("\\dfrac{2}{3}", "2/3"), ("1,000", "1000"), ("1,234,567", "1234567"), ("2.50", "2.5"),
    ("0.1", "1/10"), ("1/3", "0.33"), ("1/3", "0.3334"), ("7", "007"), ("+5", "5"), ("3.14", "3.15"),
    ("123456789012345678901234567890", "123456789012345678901234567890"),
    ("123456789012345678901234567890", "123456789012345678901234567891"),
]


@pytest.mark.parametrize("gold, pred", _NUMBER_PAIRS)
def test_fast_path_agrees_with_math_verify(gold, pred):
    fast = fast_equal(gold, pred)
    assert fast is not None, "expected the fast path to decide this pair"
    assert fast == (math_verify_outcome(gold, pred) == "correct")


def _num_str(draw):
    kind = draw(st.sampled_from(["int", "dec", "frac", "latex", "neg"]))
    a = draw(st.integers(0, 2000))
    b = draw(st.integers(1, 60))
    if kind == "int":
        return str(a)
    if kind == "dec":
        return f"{a}.{draw(st.integers(0, 9999)):0{draw(st.integers(1, 4))}d}"
    if kind == "frac":
        return f"{a}/{b}"
    if kind == "latex":
        return f"\\frac{{{a}}}{{{b}}}"
    return f"-{a}"


@st.composite
def number_pairs(draw):
    gold = _num_str(draw)
    pred = gold if draw(st.booleans()) else _num_str(draw)
    return gold, pred


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number_pairs())
def test_fast_path_agrees_with_math_verify_property(pair):
    gold, pred = pair
    fast = fast_equal(gold, pred)
    if fast is not None:
        assert fast == (math_verify_outcome(gold, pred) == "correct"), pair


def test_fast_path_defers_what_it_cannot_decide():
    assert fast_equal("1/3", "0.3333333") is None  # within 1e-6: math-verify's rounding decides
    assert fast_equal("x+1", "1+x") is None
    assert fast_equal("10\\%", "0.1") is None
    assert fast_equal("1/0", "1/0") is None
    assert fast_equal("0.1234567890123456789", "0.1234567890123456789") is None


def test_fast_path_is_counted():
    reward = MathReward()
    reward(P("12"), C("\\boxed{12}"))
    reward(P("x+1"), C("\\boxed{1+x}"))
    m = reward.metrics()
    assert (m["reward/math/fast_path"], m["reward/math/verifier"], m["reward/math/calls"]) == (1, 1, 2)


# ---------------------------------------------------------------------------- never raises

_TOKENS = list("0123456789+-*/^_=.,() {}\\$xyabc%!\n") + [
    "\\frac", "\\sqrt", "\\boxed{", "\\left(", "\\right)", "\\infty", "\\pi", "####", "Answer:"]
_LATEXISH = st.lists(st.sampled_from(_TOKENS), max_size=30).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=60), _LATEXISH, _LATEXISH.map(lambda s: "\\boxed{" + s + "}")),
       gold=st.one_of(st.sampled_from(["5", "1/2", "x+1", "\\frac{\\pi}{2}", "", "{"]), _LATEXISH))
def test_reward_never_raises(text, gold):
    r = _ROBUST(P(gold), C(text))
    assert isinstance(r, RewardResult)
    assert r.correct == (r.reason is None)
    assert r.reward == (1.0 if r.correct else 0.0)


_ROBUST = MathReward(timeout_s=2.0)


def test_verifier_failures_become_reasons(caplog):
    reward = MathReward(verifier=raising_verifier, timeout_mode="none", fast_path=False)
    assert reward(P("1"), C("\\boxed{boom}")) == RewardResult(0.0, False, "error")
    assert reward(P("1"), C("\\boxed{mvtimeout}")) == RewardResult(0.0, False, "timeout")
    assert reward(P("1"), C("\\boxed{odd}")) == RewardResult(0.0, False, "error")
    assert reward(P("1"), C("\\boxed{yes}")) == RewardResult(1.0, True, None)  # bools are accepted
    with pytest.raises(KeyboardInterrupt):
        reward(P("1"), C("\\boxed{interrupt}"))
    assert reward.metrics()["reward/math/errors"] == 2
    assert "verifier bug" in caplog.text


def test_non_string_completion_text_is_no_answer():
    assert MathReward()(P("1"), Completion("p", 0, (), None)) == RewardResult(0.0, False, "no_answer")


# ----------------------------------------------------------------------- timeouts and threads


def test_main_thread_timeout_uses_alarm_and_restores_handler():
    def mine(signum, frame):  # pragma: no cover - must never fire
        raise AssertionError

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        reward = MathReward(verifier=slow_verifier, timeout_s=0.2, fast_path=False)
        t0 = time.monotonic()
        assert reward(P("1"), C("\\boxed{slow}")) == RewardResult(0.0, False, "timeout")
        assert time.monotonic() - t0 < 2
        assert signal.getsignal(signal.SIGALRM) is mine
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
        assert reward(P("1"), C("\\boxed{1}")).correct
        assert reward.metrics()["reward/math/timeouts"] == 1
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_scoring_from_a_thread_uses_the_worker():
    out: list = []
    with MathReward(timeout_s=30) as reward:
        def work():
            out.append(reward(P("\\frac{x}{2}"), C("\\boxed{x/2}")))  # sympy path, in the worker
            out.append(reward(P("3"), C("\\boxed{4}")))  # fast path, in-process
            out.append(reward(P("x"), C("nothing")))

        t = threading.Thread(target=work)
        t.start()
        t.join(60)
        assert out == [RewardResult(1.0, True, None), RewardResult(0.0, False, "wrong"),
                       RewardResult(0.0, False, "no_answer")]
        assert reward._worker is not None and reward._worker.proc.poll() is None
    assert reward._worker is None  # closed by the context manager


def test_thread_timeout_kills_and_restarts_the_worker():
    reward = MathReward(verifier=slow_verifier, timeout_s=0.3, fast_path=False, timeout_mode="process")
    out: list = []

    def work():
        out.append(reward(P("1"), C("\\boxed{slow}")))
        out.append(reward(P("1"), C("\\boxed{1}")))

    try:
        reward.warmup()  # startup time never counts against a call's deadline
        first_pid = reward._worker.proc.pid
        t = threading.Thread(target=work)
        t.start()
        t.join(60)
        assert out == [RewardResult(0.0, False, "timeout"), RewardResult(1.0, True, None)]
        assert reward._worker.proc.pid != first_pid
        assert reward.metrics()["reward/math/worker_restarts"] == 1
    finally:
        reward.close()


def test_pickles_without_its_worker():
    reward = MathReward(format_reward=0.1, timeout_mode="process")
    clone = pickle.loads(pickle.dumps(reward))
    assert repr(clone) == repr(reward)
    assert clone(P("2"), C("\\boxed{2}")).correct


# ------------------------------------------------------------------------------- batch helpers


def test_score_and_stats():
    reward = MathReward(format_reward=0.1)
    prompt = P("4")
    texts = ["\\boxed{4}", "\\boxed{5}", "no idea", "#### 4", "\\boxed{\\frac{}{}}"]
    stats = RewardStats()
    results = score_group(reward, prompt, [C(t) for t in texts], stats=stats)
    assert [r.correct for r in results] == [True, False, False, True, False]
    assert results == score(reward, [(prompt, C(t)) for t in texts])
    assert reward.score([(prompt, C(t)) for t in texts]) == results
    m = stats.metrics()
    assert m["reward/count"] == 5
    assert m["reward/accuracy"] == pytest.approx(0.4)
    assert m["reward/mean"] == pytest.approx((1 + 0.1 + 0 + 1 + 0) / 5)
    assert (m["reward/reason/wrong"], m["reward/reason/no_answer"], m["reward/reason/parse_error"]) == (1, 1, 1)
    assert all(isinstance(v, float) for v in m.values())
    stats.reset()
    assert stats.metrics() == {"reward/count": 0.0, "reward/mean": 0.0, "reward/accuracy": 0.0}


# ------------------------------------------------------------------------------- bounds per call
def slow_prefix_verifier(gold: str, pred: str) -> str:
    """Spins on any prediction starting with "slow" (distinct answers: no cache hits between them)."""
    if pred.startswith("slow"):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass
    return "correct" if gold == pred else "wrong"


def test_extraction_is_linear_in_the_number_of_answer_phrases():
    text = "answer: 1 " * 100_000  # 1 MB; each match used to slice the rest of the text (139 s)
    t0 = time.perf_counter()
    assert extract_answer(text) == ("1", "answer_colon")
    assert time.perf_counter() - t0 < 5.0  # a guard against the quadratic path, not a benchmark


def test_a_whole_call_is_bounded_under_concurrency():
    """20 threads, 2 workers, every check pathological: each call ends near its own deadline (waiting
    for a worker counts), instead of queueing behind the others (20 x the limit)."""
    reward = MathReward(verifier=slow_prefix_verifier, timeout_s=1.0, fast_path=False, timeout_mode="process",
                        max_workers=2)
    reward.warmup()
    spans, out = [], []

    def work(i):
        t0 = time.monotonic()
        out.append(reward(P("1"), C(f"\\boxed{{slow{i}}}")))
        spans.append(time.monotonic() - t0)

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(out) == 20 and all(r == RewardResult(0.0, False, "timeout") for r in out)
        assert max(spans) < 10.0, spans  # bound + a worker's restart, far below 20 x 1 s in a queue
        assert reward.metrics()["reward/math/workers"] <= 2
    finally:
        reward.close()


def test_the_workers_grow_with_the_concurrency_asked_for():
    reward = MathReward(timeout_s=30, timeout_mode="process", max_workers=3)
    try:
        barrier = threading.Barrier(3)

        def work(i):
            barrier.wait()
            reward(P(f"x+{i}"), C(f"\\boxed{{{i}+x}}"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert 2 <= reward.metrics()["reward/math/workers"] <= 3
    finally:
        reward.close()


def test_verdicts_are_cached_per_gold_and_answer_timeouts_included():
    reward = MathReward(verifier=slow_verifier, timeout_s=0.2, fast_path=False)
    assert reward(P("1"), C("\\boxed{slow}")).reason == "timeout"
    t0 = time.monotonic()
    assert reward(P("1"), C("The answer is slow")).reason == "timeout"  # same extracted answer: no new check
    assert time.monotonic() - t0 < 0.1
    m = reward.metrics()
    assert m["reward/math/cache_hits"] == 1 and m["reward/math/timeouts"] == 2
    ok = MathReward(cache_size=0)
    assert ok(P("1+x"), C("\\boxed{x+1}")).correct and ok.metrics()["reward/math/cache_hits"] == 0


def test_missing_gold_and_huge_integers():
    reward = MathReward()
    none_gold = Prompt(id="p", text="q", answer=None)
    assert reward(none_gold, C("\\boxed{None}")) == RewardResult(0.0, False, "gold_error")
    big = "9" * 5000  # past Python's 4,300-digit int conversion limit
    assert reward(P(big), C(f"\\boxed{{{big}}}")).correct
    assert not reward(P(big), C(f"\\boxed{{{big[:-1]}8}}")).correct
    assert fast_equal("-0012", "-12") and fast_equal("1,234", "1234") and not fast_equal("12", "-12")


def test_math_verify_import_is_outside_the_first_deadline():
    """A fresh process: importing math-verify and its first parse must not count against the first
    check's deadline (5 processes scored 1+x vs x+1 as a timeout before)."""
    import subprocess
    import sys

    code = ("from rollsift.rewards import MathReward; from rollsift.records import Prompt, Completion; "
            "r = MathReward(timeout_s=0.05); "
            "print(r(Prompt(id='a', text='q', answer='1+x'), Completion('a', 0, (), '\\\\boxed{x+1}')).correct)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-1000:]
