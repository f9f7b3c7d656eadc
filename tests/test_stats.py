"""Intervals over seeds (rollsift.measure.stats): a known difference is found, a null one is not."""

from __future__ import annotations

import math
import random

import pytest

from rollsift.measure import stats


def test_t_quantiles_and_mean_interval():
    assert stats.t975(1) == pytest.approx(12.706) and stats.t975(2) == pytest.approx(4.303)
    assert stats.t975(100) == 1.96
    m = stats.mean_interval([1.0, 2.0, 3.0, None])
    assert m["n"] == 3 and m["mean"] == 2.0 and m["std"] == 1.0
    assert m["lo"] == pytest.approx(2 - 4.303 / math.sqrt(3)) and m["hi"] == pytest.approx(2 + 4.303 / math.sqrt(3))
    one = stats.mean_interval([5.0])
    assert one["lo"] is None and one["hi"] is None and one["std"] == 0.0
    assert stats.mean_interval([None])["n"] == 0


def test_ratio_interval_is_paired_and_geometric():
    r = stats.ratio_interval([100, 200, 400], [50, 100, 200])  # exactly 2x cheaper on every seed
    assert r["geo_mean"] == pytest.approx(2.0) and r["lo"] == pytest.approx(2.0) and r["verdict"] == "better"
    r = stats.ratio_interval([100, 200], [200, 400])
    assert r["geo_mean"] == pytest.approx(0.5) and r["verdict"] == "worse"
    assert stats.ratio_interval([100, None, 0], [50, 10, 10])["n"] == 1  # pairs with a missing cost are left out
    assert stats.ratio_interval([100], [50])["verdict"] == "not measured"  # one pair: no interval


def _trial(rng: random.Random, true_ratio: float, sd: float, n: int) -> str:
    ref = [1000 * math.exp(rng.gauss(0, sd)) for _ in range(n)]
    run = [1000 / true_ratio * math.exp(rng.gauss(0, sd)) for _ in range(n)]
    return stats.ratio_interval(ref, run)["verdict"]


def test_a_known_difference_is_found_and_a_null_one_is_not():
    rng = random.Random(0)
    null = [_trial(rng, 1.0, 0.1, 3) for _ in range(400)]
    false_positive = sum(v in ("better", "worse") for v in null) / len(null)
    assert false_positive < 0.1  # a 95% interval: about 5%
    found = [_trial(rng, 1.5, 0.1, 5) for _ in range(400)]
    assert sum(v == "better" for v in found) / len(found) > 0.9  # log(1.5) = 0.41; the log ratio's sd is 0.14
    assert "worse" not in found


def test_detectable_ratio_and_seeds_needed():
    # with a seed-to-seed sd of the log ratio of 0.1, 3 seeds tell apart 1.28x, 4 seeds 1.17x
    assert stats.detectable_ratio(0.1, 3) == pytest.approx(math.exp(4.303 * 0.1 / math.sqrt(3)))
    assert stats.seeds_needed(0.1, 1.25) == 4
    assert stats.seeds_needed(0.3, 1.25) > 5
    assert stats.seeds_needed(5.0, 1.01, most=50) is None
