"""PODS: the max-variance rule against brute force, and the filter's behaviour."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollsift.configlib import ConfigError, from_dict
from rollsift.filters.pods import (
    PODSConfig,
    PODSFilter,
    max_variance_indices,
    max_variance_indices_one,
)
from rollsift.protocols import GroupFilter
from rollsift.records import Completion, Context, Group, Prompt

CTX = Context(step=0)

REWARDS = {
    "binary": st.sampled_from([0.0, 1.0]),
    # format-shaped scores as in the PODS code: many exact ties
    "shaped": st.sampled_from([round(0.1 * i, 1) for i in range(13)]),
    "real": st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False),
}


@st.composite
def reward_batches(draw):
    """A step's rewards [G, n] with n <= 12, and an m in [1, n]."""
    kind = draw(st.sampled_from(sorted(REWARDS)))
    n = draw(st.integers(2, 12))
    g = draw(st.integers(1, 3))
    rows = draw(st.lists(st.lists(REWARDS[kind], min_size=n, max_size=n), min_size=g, max_size=g))
    return np.array(rows, dtype=np.float64), draw(st.integers(1, n))


def brute_force_max_var(r, m):
    return max(np.var(r[list(c)]) for c in itertools.combinations(range(len(r)), m))


@settings(max_examples=80, deadline=None)
@given(reward_batches())
def test_max_variance_matches_brute_force(batch):
    rewards, m = batch
    idx = max_variance_indices(rewards, m)
    assert idx.shape == (rewards.shape[0], m)
    for r, row in zip(rewards, idx):
        assert len(set(row.tolist())) == m and 0 <= row.min() and row.max() < len(r)
        assert list(row) == sorted(row)
        assert abs(np.var(r[row]) - brute_force_max_var(r, m)) <= 1e-9


@settings(max_examples=80, deadline=None)
@given(reward_batches())
def test_vectorised_path_equals_per_group_path(batch):
    rewards, m = batch
    idx = max_variance_indices(rewards, m)
    for r, row in zip(rewards, idx):
        assert row.tolist() == max_variance_indices_one(r.tolist(), m)


def test_binary_rule_keeps_half_correct_when_it_can():
    # 3 correct of 8, m = 4: 2 correct + 2 wrong (variance 0.25) beats 3 + 1 (0.1875)
    r = np.array([[0, 1, 0, 0, 1, 0, 0, 1]], dtype=float)
    (row,) = max_variance_indices(r, 4)
    assert r[0, row].sum() == 2
    # 1 correct of 8: the correct one and m - 1 wrong ones
    (row,) = max_variance_indices(np.array([[0, 0, 0, 0, 0, 1, 0, 0]], dtype=float), 4)
    assert 5 in row


def test_tie_breaks_are_the_documented_ones():
    # all equal: the authors' scan starts at the top m, i.e. the first m completions
    assert max_variance_indices(np.full((1, 6), 0.5), 3).tolist() == [[0, 1, 2]]
    # 6 correct of 8, m = 4: k = 0, 1, 2 all give 2 correct + 2 wrong; k = 0 (first in the scan
    # after k = m) keeps the two wrong ones (indices 6, 7) and the two lowest-ranked correct ones
    r = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=float)
    assert max_variance_indices(r, 4).tolist() == [[4, 5, 6, 7]]
    # sorted 5,4,1,0 with m = 3: k = 1 {5,1,0} and k = 2 {5,4,0} tie at 14/3; k = 1 wins
    assert max_variance_indices_one([0.0, 4.0, 1.0, 5.0], 3) == [0, 2, 3]
    assert max_variance_indices(np.array([[0.0, 4.0, 1.0, 5.0]]), 3).tolist() == [[0, 2, 3]]


def test_max_variance_rejects_bad_input():
    with pytest.raises(ValueError, match=r"m must be in \[1, n=3\], got 4"):
        max_variance_indices(np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="finite"):
        max_variance_indices(np.array([[0.0, np.nan]]), 1)
    with pytest.raises(ValueError, match=r"\[G, n\]"):
        max_variance_indices(np.zeros(3), 1)


# ----------------------------------------------------------------------------- the filter


def make_group(pid, rewards):
    prompt = Prompt(id=pid, answer="1", text=f"question {pid}")
    comps = tuple(Completion(pid, i, token_ids=(i,) * (i + 1), text=str(i)) for i in range(len(rewards)))
    return Group(prompt, comps, tuple(float(r) for r in rewards), tuple(r >= 1.0 for r in rewards))


def test_filter_keeps_m_of_each_group_and_reports_metrics():
    groups = [
        make_group("a", [1, 0, 0, 0, 0, 0, 0, 1]),  # var 0.1875 -> 2 + 2 kept: 0.25
        make_group("b", [1, 1, 1, 1, 1, 1, 1, 1]),  # var 0 -> stays 0
        make_group("c", [0, 1, 0]),  # n = 3 <= m: passes unchanged
        make_group("d", [0.2, 1.1, 0.0, 1.2, 0.1, 0.3]),  # another size in the same step
    ]
    f = PODSFilter(PODSConfig(m=4))
    assert isinstance(f, GroupFilter) and f.name == "pods"
    res = f.apply(groups, CTX)
    assert res.dropped == {} and [g.prompt_id for g in res.kept] == ["a", "b", "c", "d"]
    a, b, c, d = res.kept
    assert a.n == b.n == d.n == 4 and c is groups[2]
    assert sorted(a.rewards) == [0, 0, 1, 1]
    # the kept completions are the ones whose rewards were kept, in their original order
    assert [x.index for x in a.completions] == sorted(x.index for x in a.completions)
    assert all(groups[0].rewards[x.index] == r for x, r in zip(a.completions, a.rewards))
    # d sorted: 1.2, 1.1, 0.3, 0.2, 0.1, 0.0 -> two highest + two lowest
    assert sorted(d.rewards) == [0.0, 0.1, 1.1, 1.2]
    # kept_frac = (4 + 4 + 3 + 4) / (8 + 8 + 3 + 6)
    assert res.metrics["filter/pods/kept_frac"] == pytest.approx(15 / 25)
    var_d_before = np.var([0.2, 1.1, 0.0, 1.2, 0.1, 0.3])
    var_d_after = np.var([0.0, 0.1, 1.1, 1.2])
    assert res.metrics["filter/pods/var_before"] == pytest.approx((0.1875 + 0 + 2 / 9 + var_d_before) / 4)
    assert res.metrics["filter/pods/var_after"] == pytest.approx((0.25 + 0 + 2 / 9 + var_d_after) / 4)
    assert f.metrics() == dict(res.metrics)


def test_max_reward_keeps_the_highest():
    g = make_group("a", [0.5, 0.9, 0.1, 0.9, 0.3])
    (kept,) = PODSFilter(PODSConfig(m=3, rule="max_reward")).apply([g], CTX).kept
    assert [x.index for x in kept.completions] == [0, 1, 3]


def test_random_rule_is_seeded_and_resumable():
    groups = [make_group(str(i), [i % 2, 1, 0, 0, 1, 0, 1, 0]) for i in range(5)]

    def pick(f):
        return [[x.index for x in g.completions] for g in f.apply(groups, CTX).kept]

    cfg = PODSConfig(m=3, rule="random", seed=7)
    first = pick(PODSFilter(cfg))
    assert first == pick(PODSFilter(cfg)) and first != pick(PODSFilter(PODSConfig(m=3, rule="random", seed=8)))
    assert pick(PODSFilter(PODSConfig(m=3, rule="random"), seed=7)) == first  # seed from the run
    assert all(len(set(row)) == 3 for row in first)

    f = PODSFilter(cfg)
    pick(f)
    state = f.state_dict()
    after = pick(f)
    g = PODSFilter(PODSConfig(m=3, rule="random", seed=0))
    g.load_state_dict(state)
    assert pick(g) == after != first


def test_config_validation_names_the_value():
    with pytest.raises(ConfigError, match=r"pods.m must be an integer >= 2.*got 1"):
        PODSConfig(m=1)
    with pytest.raises(ConfigError, match=r"pods.rule = 'top' is not allowed; choose one of \['max_variance'"):
        PODSConfig(rule="top")
    with pytest.raises(ConfigError, match=r"pods.seed must be an integer or None, got 1.5"):
        PODSConfig(seed=1.5)
    cfg = from_dict(PODSConfig, {"type": "pods", "m": 16, "rule": "random"}, "pods")
    assert (cfg.m, cfg.rule, cfg.seed) == (16, "random", None)
    with pytest.raises(ConfigError, match=r"choose one of \['max_variance', 'random', 'max_reward'\]"):
        from_dict(PODSConfig, {"type": "pods", "rule": "best"}, "pods")


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12).flatmap(
    lambda n: st.tuples(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n),
                        st.integers(1, n // 2).map(lambda h: 2 * h))))
def test_binary_variance_never_drops_for_even_m(case):
    # j correct of m has variance j(m - j)/m^2; with m even, j = m/2 is reachable whenever the
    # group has m/2 of each, otherwise j/m lies between c/n and 1/2: never below p(1 - p).
    rewards, m = case
    r = np.array(rewards)
    (row,) = max_variance_indices(r[None, :], m)
    assert np.var(r[row]) >= np.var(r) - 1e-12
