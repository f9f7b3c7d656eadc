"""The conformance kit (rollsift.testing) over every registered strategy, and that it catches violations."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rollsift import testing
from rollsift.configlib import ConfigError, check_range, doc
from rollsift.records import Decision, Selection

REG = testing.registered()


@pytest.mark.parametrize("name,cfg", REG["selector"], ids=[n for n, _ in REG["selector"]])
def test_every_registered_selector_conforms(name, cfg, one_thread):
    testing.check_selector(testing._configured("selector", name, cfg))


@pytest.mark.parametrize("name,cfg", REG["filter"], ids=[n for n, _ in REG["filter"]])
def test_every_registered_filter_conforms(name, cfg):
    testing.check_filter(testing._configured("filter", name, cfg))


@pytest.mark.parametrize("name,cfg", REG["pruner"], ids=[n for n, _ in REG["pruner"]])
def test_every_registered_pruner_conforms(name, cfg, one_thread):
    testing.check_pruner(testing._configured("pruner", name, cfg))


# ------------------------------------------------------------------------------ a third-party strategy
@dataclass
class LongestFirstConfig:
    """docs/strategies/adding.md's example: keep the prompts with the longest text, skip a share."""

    type: str = doc("Selector name.", "longest_first")
    skip: float = doc("Share of candidates skipped at random.", 0.25)
    strategy = "tests.test_conformance:LongestFirst"

    def __post_init__(self) -> None:
        check_range("selector.skip", self.skip, 0.0, 1.0)


class LongestFirst:
    scope = "stream"

    def __init__(self, cfg: LongestFirstConfig, seed: int = 0) -> None:
        import numpy as np

        self.cfg, self.rng, self.seen = cfg, np.random.default_rng(seed), 0

    def ask(self, candidates, budget, ledger, ctx):
        chosen, decisions = [], []
        for p in candidates:
            keep = self.rng.random() >= self.cfg.skip
            decisions.append(Decision(p.id, keep, "kept" if keep else "random"))
            if keep:
                chosen.append(p)
                if len(chosen) == budget:
                    break
        return Selection(tuple(chosen), tuple(decisions))

    def tell(self, groups, ledger, ctx):
        self.seen += len(groups)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "seen": self.seen}

    def load_state_dict(self, state):
        self.rng.bit_generator.state, self.seen = state["rng"], state["seen"]

    def metrics(self):
        return {"select/longest_first/seen": float(self.seen)}


def test_a_third_party_selector_passes_the_kit():
    testing.check_selector(LongestFirstConfig(), bad_knobs={"skip": 2.0})


class Unsaved(LongestFirst):
    def load_state_dict(self, state):  # forgets the RNG
        self.seen = state["seen"]


class OutOfOrder(LongestFirst):
    def ask(self, candidates, budget, ledger, ctx):
        s = super().ask(list(reversed(candidates)), budget, ledger, ctx)
        return s


class Loud(LongestFirst):
    def metrics(self):
        return {"seen": float(self.seen)}


@pytest.mark.parametrize("cls,rule", [(Unsaved, "state_dict round trip"), (OutOfOrder, "prefix"),
                                      (Loud, "namespace")])
def test_the_kit_catches_a_broken_selector(cls, rule):
    with pytest.raises(AssertionError, match=rule):
        testing.check_selector(lambda: cls(LongestFirstConfig()), bad_knobs={})


def test_the_kit_catches_a_knob_accepted_without_check():
    @dataclass
    class Lax(LongestFirstConfig):
        def __post_init__(self) -> None:
            pass

    with pytest.raises(AssertionError, match="accepted the bad value skip=2.0"):
        testing._check_knobs(Lax(), {"skip": 2.0}, "selector")
    with pytest.raises(ConfigError):
        LongestFirstConfig(skip=2.0)


def test_the_kit_catches_a_filter_that_loses_groups():
    from rollsift.records import FilterResult

    class Lossy:
        name = "lossy"

        def apply(self, groups, ctx):
            return FilterResult(kept=tuple(groups[1:]), dropped={})

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

        def metrics(self):
            return {}

    with pytest.raises(AssertionError, match="lost groups"):
        testing.check_filter(Lossy)
