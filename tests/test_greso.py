"""GRESO's rule, pinned to the authors' constants."""

from __future__ import annotations

import numpy as np
import pytest

from rollsift.configlib import ConfigError
from rollsift.records import Completion, Context, Group, Prompt, PromptArrays
from rollsift.select.greso import GresoConfig, GresoSelector


class FakeLedger:
    """Per-prompt (rollouts, trailing_all_correct, trailing_all_wrong)."""

    def __init__(self, table: dict[str, tuple[int, int, int]]):
        self.table = table

    def lookup(self, ids):
        rows = [self.table.get(i, (0, 0, 0)) for i in ids]
        r, c, w = (np.array(x) for x in zip(*rows)) if rows else (np.zeros(0),) * 3
        last = np.where(r > 0, np.where(c > 0, 1.0, np.where(w > 0, 0.0, 0.5)), np.nan)
        return PromptArrays(rollouts=r, skips=np.zeros_like(r), last_accuracy=last, last_step=np.zeros_like(r),
                            trailing_all_correct=c, trailing_all_wrong=w)


def prompts(k: int, prefix: str = "p") -> list[Prompt]:
    return [Prompt(id=f"{prefix}{i}", text="1+1", answer="2") for i in range(k)]


def group(pid: str, correct: list[bool]) -> Group:
    comps = tuple(Completion(pid, i, (1,), "") for i in range(len(correct)))
    return Group(Prompt(pid, "2", text="1+1"), comps, tuple(float(c) for c in correct), tuple(correct))


def skip_rate(history: tuple[int, int, int], draws: int = 20000, seed: int = 0, **cfg) -> float:
    sel = GresoSelector(GresoConfig(**cfg), seed=seed)
    ps = prompts(draws)
    led = FakeLedger({p.id: history for p in ps})
    out = sel.ask(ps, draws, led, Context(step=1))
    return sum(not d.kept for d in out.decisions) / len(out.decisions)


@pytest.mark.parametrize("z", [1, 2, 3, 5, 8])
def test_easy_streak_skip_rate_is_one_minus_p_to_the_z(z):
    expected = 1 - max(0.5**z, 0.01)
    rate = skip_rate((z + 1, z, 0))
    sd = np.sqrt(expected * (1 - expected) / 20000)
    assert abs(rate - expected) < 5 * sd + 1e-9


@pytest.mark.parametrize("z", [1, 3, 10])
def test_hard_streak_skip_rate(z):
    expected = 1 - max(0.5**z, 0.01)
    rate = skip_rate((z, 0, z))
    assert abs(rate - expected) < 5 * np.sqrt(expected * (1 - expected) / 20000) + 1e-9


def test_floor_caps_skipping_at_99_percent():
    rate = skip_rate((40, 40, 0))  # 0.5**40 << 0.01
    assert abs(rate - 0.99) < 5 * np.sqrt(0.99 * 0.01 / 20000)


def test_no_history_and_informative_prompts_are_always_kept():
    assert skip_rate((0, 0, 0)) == 0.0
    assert skip_rate((3, 0, 0)) == 0.0  # rolled out, latest group mixed


def test_hard_test_only_when_the_latest_group_was_all_wrong():
    sel = GresoSelector(GresoConfig(p_hard=0.05, min_p=0.05), seed=1)
    ps = prompts(2000)
    # Latest group all correct (z_easy = 1); an older all-wrong streak does not count.
    out = sel.ask(ps, 2000, FakeLedger({p.id: (4, 1, 0) for p in ps}), Context(step=1))
    reasons = {d.reason for d in out.decisions if not d.kept}
    assert reasons == {"easy"}


def test_budget_stops_examination_and_records_probabilities():
    sel = GresoSelector(GresoConfig(), seed=0)
    ps = prompts(50)
    led = FakeLedger({p.id: (2, 2, 0) for p in ps[:25]})  # 25 easy, then 25 without history
    out = sel.ask(ps, 10, led, Context(step=1))
    assert len(out.chosen) == 10
    assert [d.prompt_id for d in out.decisions] == [p.id for p in ps[: len(out.decisions)]]
    for d in out.decisions:
        if d.reason == "easy":
            assert d.prob == pytest.approx(0.25)  # p_easy ** 2


def adapt(sel: GresoSelector, easy_frac: float, hard_frac: float, epoch: int = 1, n: int = 120) -> None:
    k_easy, k_hard = round(easy_frac * n), round(hard_frac * n)
    groups = [group(f"e{i}", [True] * 8) for i in range(k_easy)]
    groups += [group(f"h{i}", [False] * 8) for i in range(k_hard)]
    groups += [group(f"m{i}", [True] + [False] * 7) for i in range(n - k_easy - k_hard)]
    sel.tell(groups, None, Context(step=1, epoch=epoch))


def test_p_adapts_by_001_toward_targets_from_the_second_epoch():
    sel = GresoSelector(GresoConfig(), seed=0)
    adapt(sel, 0.5, 0.5, epoch=0)  # first epoch: no adaptation
    assert (sel.p_easy, sel.p_hard) == (0.5, 0.5)
    adapt(sel, 0.5, 0.5, epoch=1)  # both above target (0.0833, 0.1667): skip more
    assert (sel.p_easy, sel.p_hard) == (0.49, 0.49)
    adapt(sel, 0.0, 0.0, epoch=1)  # both below: explore more
    assert (sel.p_easy, sel.p_hard) == (0.5, 0.5)
    adapt(sel, 0.25 / 3 + 0.01, 0.0, epoch=2)  # at/above the easy target only
    assert (sel.p_easy, sel.p_hard) == (0.49, 0.51)


def test_p_is_clipped_to_005_095():
    sel = GresoSelector(GresoConfig(), seed=0)
    for _ in range(100):
        adapt(sel, 1.0, 0.0)
    assert sel.p_easy == 0.05 and sel.p_hard == 0.95
    m = sel.metrics()
    assert m["select/greso/p_easy"] == 0.05 and m["select/greso/p_hard"] == 0.95


def test_metrics_count_skips_per_step():
    sel = GresoSelector(GresoConfig(p_easy=0.05, min_p=0.05), seed=3)
    ps = prompts(400)
    led = FakeLedger({p.id: (5, 5, 0) for p in ps[:200]} | {p.id: (5, 0, 5) for p in ps[200:]})
    out = sel.ask(ps, 400, led, Context(step=1))
    adapt(sel, 0.0, 0.0, epoch=0)
    m = sel.metrics()
    assert m["select/greso/skipped_easy"] == sum(d.reason == "easy" for d in out.decisions)
    assert m["select/greso/skipped_hard"] == sum(d.reason == "hard" for d in out.decisions)
    assert m["select/greso/skip_frac"] == pytest.approx(
        (m["select/greso/skipped_easy"] + m["select/greso/skipped_hard"]) / 400)


def test_state_dict_round_trip_reproduces_decisions():
    ps = prompts(300)
    led = FakeLedger({p.id: (3, 2, 0) if i % 2 else (3, 0, 3) for i, p in enumerate(ps)})
    a = GresoSelector(GresoConfig(), seed=7)
    a.ask(ps[:100], 100, led, Context(step=1))
    adapt(a, 0.5, 0.5)
    state = a.state_dict()
    b = GresoSelector(GresoConfig(), seed=999)
    b.load_state_dict(state)
    da = a.ask(ps[100:], 200, led, Context(step=2)).decisions
    db = b.ask(ps[100:], 200, led, Context(step=2)).decisions
    assert da == db and (a.p_easy, a.p_hard) == (b.p_easy, b.p_hard)


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ConfigError, match="selector.p_easy"):
        GresoConfig(p_easy=1.5)
    with pytest.raises(ConfigError, match="selector.max_p"):
        GresoConfig(min_p=0.5, max_p=0.4)
