"""``rollsift testbed regime``: group shares and the noise floor of a fixed policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollsift.measure.regime import OUTCOMES, noise_floor


def test_noise_floor_of_known_rates():
    # p = 0.5, groups of 2: W, M, C with 1/4, 1/2, 1/4, every row the same (visits are independent)
    t = noise_floor([0.5], group=2)
    for a in OUTCOMES:
        assert t[a] == pytest.approx({"all_wrong": 0.25, "mixed": 0.5, "all_correct": 0.25})
    # a deterministic prompt stays put; a prompt never solved stays all-wrong; they do not mix
    t = noise_floor([0.0, 1.0], group=8)
    assert t["all_wrong"]["all_wrong"] == 1.0 and t["all_correct"]["all_correct"] == 1.0
    assert t["mixed"] == {b: 0.0 for b in OUTCOMES}                       # no prompt can be mixed
    # two prompts, p = 0 and p = 0.5, groups of 1: after all-wrong, (1 * 1 + 0.5 * 0.5) / (1 + 0.5) of W
    t = noise_floor([0.0, 0.5], group=1)
    assert t["all_wrong"]["all_wrong"] == pytest.approx(1.25 / 1.5)
    assert t["all_correct"]["all_correct"] == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30), st.integers(1, 16))
def test_noise_floor_rows_are_distributions_and_persistence_is_at_least_the_share(rates, group):
    t = noise_floor(rates, group)
    one = noise_floor(rates[:1], group)
    for i, a in enumerate(OUTCOMES):
        s = sum(t[a].values())
        assert s == pytest.approx(1.0) or s == 0.0
        # one prompt: visits are independent, so every row it can reach is that prompt's outcome law
        if sum(one[a].values()) > 0:
            assert one[a] == pytest.approx(one[OUTCOMES[(i + 1) % 3]]) or sum(one[OUTCOMES[(i + 1) % 3]].values()) == 0
    # a mixture of prompts: an outcome is at least as likely after itself as over all groups (Cauchy-Schwarz)
    n = len(rates)
    for a, k in zip(OUTCOMES, range(3)):
        law = [((1 - p) ** group, max(0.0, 1 - p ** group - (1 - p) ** group), p ** group)[k] for p in rates]
        share = sum(law) / n
        if share > 1e-9:
            assert t[a][a] >= share - 1e-9


def test_noise_floor_names_the_bad_rate():
    with pytest.raises(ValueError, match="1.5"):
        noise_floor([0.2, 1.5])
    with pytest.raises(ValueError, match="group"):
        noise_floor([0.2], group=0)


def test_regime_command_prints_and_writes_the_floor(tmp_path, capsys):
    from rollsift.cli import main

    out = tmp_path / "regime.json"
    assert main(["testbed", "regime", "--prompts", "8", "--n", "4", "--group", "2", "--temperature", "1.5",
                 "--max-new-tokens", "48", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["temperature"] == 1.5 and r["group"] == 2 and r["prompts"] == 8 and sum(r["rate_histogram"]) == 8
    assert set(r["noise_floor"]) == set(OUTCOMES)
    printed = capsys.readouterr().out
    assert "at temperature 1.5" in printed and "noise floor (fixed policy, groups of 2)" in printed
