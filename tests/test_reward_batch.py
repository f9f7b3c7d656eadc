"""One deadline for a whole batch of rewards (issue 23): ``MathReward.score(pairs)`` returns within
``batch_timeout`` (plus a small slack) whatever its completions hold, the slow ones marked
``timeout``, the fast ones scored right; also through ``rewards.score`` and verl's reward path."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from rollsift.records import Completion, Prompt
from rollsift.rewards import MathReward, RewardStats, score, score_groups

SLACK_S = 2.0  # killing and restarting the workers, joining the threads, a loaded 2-core box


def sleepy_verifier(gold: str, pred: str) -> str:
    """Runs in the worker: an answer starting with "slow" never finishes in time."""
    if pred.startswith("slow"):
        time.sleep(60)
    return "correct" if pred == gold else "wrong"


def pair(answer: str, text: str, pid: str = "p") -> tuple[Prompt, Completion]:
    return Prompt(id=pid, answer=answer, text="q"), Completion(pid, 0, (), text)


def test_a_batch_of_slow_checks_ends_at_its_deadline_and_fast_ones_are_scored():
    # A sleeping verifier (no sympy import) keeps this quick; per completion, 5 s each would be 100 s.
    r = MathReward(verifier=sleepy_verifier, timeout_mode="process", timeout_s=5.0, batch_timeout=1.5,
                   max_workers=2)
    try:
        r.warmup(2)
        slow = [pair("y", f"\\boxed{{slow-{i}-" + "x" * 40 + "}", f"s{i}") for i in range(40)]
        fast = [pair("y", "\\boxed{y}", "f0"), pair("y", "\\boxed{z}", "f1"), pair("7", "\\boxed{7}", "f2")]
        stats = RewardStats()
        t0 = time.monotonic()
        res = score(r, fast + slow, stats=stats)  # rewards.score hands MathReward the batch at once
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5 + SLACK_S, elapsed
        assert [x.correct for x in res[:3]] == [True, False, True]
        assert [x.reason for x in res[:3]] == [None, "wrong", None]
        assert all(x.reason == "timeout" and not x.correct for x in res[3:])
        m = stats.metrics()
        assert m["reward/reason/timeout"] == 40.0 and m["reward/count"] == 43.0
        rm = r.metrics()
        assert rm["reward/math/batch_timeouts"] == 40.0  # all cut by the batch, none ran its own 5 s
        assert rm["reward/math/worker_restarts"] >= 2  # the overrunning workers were killed and restarted
        # cut by the batch, not slow on their own: not cached as timeouts, checked again next time
        assert r.score([pair("y", "\\boxed{y}")])[0].correct
    finally:
        r.close()


def test_identical_completions_are_checked_once():
    r = MathReward(verifier=sleepy_verifier, timeout_mode="process", batch_timeout=10.0, max_workers=2)
    try:
        res = r.score([pair("y", "so \\boxed{y}", f"p{i}") for i in range(30)])
        assert all(x.correct for x in res)
        m = r.metrics()
        assert m["reward/math/verifier"] == 1.0 and m["reward/math/cache_hits"] == 29.0
    finally:
        r.close()


def test_score_groups_scores_many_groups_in_one_batch():
    r = MathReward()
    groups = [(Prompt(id="a", answer="3", text="q"), [Completion("a", i, (), f"\\boxed{{{i}}}") for i in range(4)]),
              (Prompt(id="b", answer="1", text="q"), [Completion("b", i, (), f"\\boxed{{{i}}}") for i in range(2)])]
    out = score_groups(r, groups)
    assert [[x.correct for x in g] for g in out] == [[False, False, False, True], [False, True]]


def test_batch_timeout_is_validated_and_has_a_config_key():
    from rollsift.config import build_config
    from rollsift.configlib import ConfigError

    with pytest.raises(ValueError, match="batch_timeout must be > 0"):
        MathReward(batch_timeout=0)
    assert MathReward(batch_timeout=None).batch_timeout is None
    cfg = build_config(overrides=["reward.batch_timeout=7.5"])
    assert cfg.reward.build().batch_timeout == 7.5
    with pytest.raises(ConfigError, match="reward.batch_timeout"):
        build_config(overrides=["reward.batch_timeout=-1"])


def pathological(kind: int, j: int) -> str:
    """The five shapes of issue 23, each made distinct by ``j`` so the cache cannot merge them."""
    if kind == 0:
        return "\\boxed{" + "{" * 5000 + str(j) + "}" * 5000 + "}"  # 5,000 nested braces
    if kind == 1:
        return "\\boxed{" + "+".join(["1"] * (500_000 + j)) + "}"  # 1 MB of 1+1+...
    if kind == 2:
        return "\\boxed{" + "^".join([str(9 + j)] * 30) + "}"  # a power tower
    if kind == 3:
        return "\\boxed{(%d!)!}" % (100_000 + j)
    return "\\boxed{" + "\\sqrt{" * 400 + str(j + 2) + "}" * 400 + "}"  # 400 nested square roots


@pytest.mark.slow
def test_200_pathological_completions_return_within_the_batch_deadline():
    batch_timeout = 4.0
    r = MathReward(timeout_s=3.0, batch_timeout=batch_timeout, max_workers=2)
    try:
        r.warmup(2)  # math-verify's import in the workers (3-4 s each) is not the batch's time
        fast = [pair("\\frac{1}{2}", "so \\boxed{0.5}", "f0"), pair("x+1", "\\boxed{1+x}", "f1"),
                pair("1,234", "The answer is 1234.", "f2"), pair("7", "\\boxed{8}", "f3"),
                pair("\\sqrt{2}", "\\boxed{2^{1/2}}", "f4")]
        slow = [pair("x^2+1", pathological(k, j), f"s{k}-{j}") for j in range(40) for k in range(5)]
        stats = RewardStats()
        t0 = time.monotonic()
        res = score(r, slow[:100] + fast + slow[100:], stats=stats)
        elapsed = time.monotonic() - t0
        assert elapsed < batch_timeout + SLACK_S, elapsed
        got = res[100:105]
        assert [x.correct for x in got] == [True, True, True, False, True], [x.reason for x in got]
        others = res[:100] + res[105:]
        assert Counter(x.reason for x in others) == {"timeout": 200}
        assert stats.metrics()["reward/reason/timeout"] == 200.0
    finally:
        r.close()


@pytest.mark.slow
def test_verl_reward_calls_that_overlap_share_one_deadline():
    from rollsift.integrations.verl import reward as verl_reward

    knobs = {"timeout_s": 30.0, "batch_timeout": 3.0}
    reward, _window = verl_reward._reward(knobs)
    reward.warmup(2)
    out: dict[int, dict] = {}

    def one(i: int) -> None:  # verl's reward loop: one call per sample, many threads at once
        text = "\\boxed{7}" if i == 0 else pathological(1, i)
        out[i] = verl_reward.compute_score("gsm8k", text, "7", {}, **knobs)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(9)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    # 8 slow answers on 2 workers at 30 s each would take 120 s per completion bound
    assert elapsed < 3.0 + SLACK_S, elapsed
    assert out[0] == {"score": 1.0, "acc": 1.0}
    assert all(out[i]["acc"] == 0.0 for i in range(1, 9))
    assert reward.metrics()["reward/math/batch_timeouts"] == 8.0
