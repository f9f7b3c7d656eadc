"""The posterior selector: the closed form, forgetting, the budget controller on drifting simulated
dynamics, and the same posteriors from a ledger as from the run that wrote it."""

from __future__ import annotations

import numpy as np
import pytest

from rollsift.ledger import MemoryLedger
from rollsift.pipeline import RolloutPipeline, train_step
from rollsift.records import Completion, Context, Group, Prompt
from rollsift.select.posterior import PosteriorConfig, PosteriorSelector, fit_beta, informative_probability
from rollsift.sim.model import SimGenerator, SimLearner, sim_score, synthetic_pool


@pytest.mark.parametrize("a,b,n", [(1.0, 1.0, 8), (0.3, 0.4, 8), (9.3, 0.3, 8), (2.5, 7.0, 4), (40.0, 3.0, 16)])
def test_informative_probability_matches_monte_carlo(a, b, n):
    rng = np.random.default_rng(0)
    p = rng.beta(a, b, size=400_000)
    k = rng.binomial(n, p)
    mc = np.mean((k > 0) & (k < n))
    assert informative_probability(a, b, n) == pytest.approx(mc, abs=0.004)
    assert informative_probability(1.0, 1.0, 8) == pytest.approx(7 / 9)  # uniform prior: 1 - 2/(n+1)


def test_fit_beta_recovers_a_u_shaped_prior():
    rng = np.random.default_rng(1)
    p = rng.beta(0.4, 0.6, size=4000)
    a, b = fit_beta(rng.binomial(8, p), np.full(4000, 8), (1.0, 1.0))
    assert a == pytest.approx(0.4, rel=0.15) and b == pytest.approx(0.6, rel=0.15)
    assert fit_beta([8, 8], [8, 8], (1.0, 2.0)) == (1.0, 2.0)  # too few groups: the default


def group(pid: str, k: int, n: int = 8, version: int = 0, step: int = 1) -> Group:
    p = Prompt(id=pid, text=pid, answer="1")
    return Group(p, tuple(Completion(pid, i, (1,), "") for i in range(n)), tuple([1.0] * k + [0.0] * (n - k)),
                 tuple([True] * k + [False] * (n - k)), step=step, policy_version=version)


def test_an_old_streak_loses_half_its_weight_per_half_life():
    sel = PosteriorSelector(PosteriorConfig(prior="fixed", half_life=10.0), seed=0)
    sel.sync(None)
    for v in range(3):  # three all-correct groups at versions 0, 1, 2
        sel.tell([group("a", 8, version=v, step=v + 1)], None, Context(step=v + 1, n=8, policy_version=v))
    a0, b0 = sel.prior
    fresh = 8 * (1 + 0.5 ** 0.1 + 0.5 ** 0.2)  # decayed to version 2
    for later, factor in ((2, 1.0), (12, 0.5), (22, 0.25)):
        a, b, seen = sel.posterior(["a"], later)
        assert seen[0] and a[0] - a0 == pytest.approx(fresh * factor) and b[0] == pytest.approx(b0)
    q_now = informative_probability(*sel.posterior(["a"], 2)[:2], 8)
    q_later = informative_probability(*sel.posterior(["a"], 40)[:2], 8)
    assert q_later > 2 * q_now  # the policy moved: the old streak no longer rules the prompt out


@pytest.mark.slow
def test_the_budget_controller_tracks_the_lost_share_under_drift():
    """On a simulated pool whose prompts get easier as training goes, the realised share of
    informative groups lost (under the simulator's true success rates) stays near max_lost."""
    pool, model = synthetic_pool(3000, seed=2, easy=0.4, hard=0.3)
    ledger = MemoryLedger()
    budget = 0.15
    sel = PosteriorSelector(PosteriorConfig(max_lost=budget), seed=0)
    from rollsift.filters.dynamic import DynamicSamplingFilter

    pipe = RolloutPipeline(pool, sel, SimGenerator(model, seed=0), sim_score, ledger, batch_size=64, n=8,
                           filters=[DynamicSamplingFilter()])
    learner = SimLearner(model, lr=0.3)
    truth = {"lost": 0.0, "all": 0.0}
    ask = sel.ask

    def spy(cands, budget_, led, ctx):
        s = ask(cands, budget_, led, ctx)
        p = model.success_rows(model.rows([d.prompt_id for d in s.decisions]))
        q = 1 - p ** 8 - (1 - p) ** 8
        keep = np.array([d.prob for d in s.decisions])
        if ctx.step > 80:  # after the controller settled
            truth["lost"] += float((q * (1 - keep)).sum())
            truth["all"] += float(q.sum())
        return s

    sel.ask = spy
    for step in range(1, 241):
        train_step(pipe, learner, pipe.context(step, learner.policy_version))
    realised = truth["lost"] / truth["all"]
    assert 0.5 * budget < realised < 1.6 * budget, realised
    assert sel.metrics()["select/posterior/skip_frac"] > 0.2 and model.competence > 0.5  # it did skip, and drifted


def test_posteriors_rebuilt_from_the_ledger_equal_the_live_ones():
    """Every engine writes the same ledger; a selector built (or restored) on it decides as the live one."""
    pool, model = synthetic_pool(200, seed=3)
    ledger = MemoryLedger()
    live = PosteriorSelector(PosteriorConfig(), seed=7)
    pipe = RolloutPipeline(pool, live, SimGenerator(model, seed=0), sim_score, ledger, batch_size=16, n=8)
    learner = SimLearner(model)
    for step in range(1, 25):
        train_step(pipe, learner, pipe.context(step, learner.policy_version))
    ids = [p.id for p in pool]
    state = live.state_dict()
    other = PosteriorSelector(PosteriorConfig(), seed=99)
    other.load_state_dict(state)
    other.sync(ledger)
    for x, y in zip(live.posterior(ids, 24), other.posterior(ids, 24)):
        assert np.allclose(x, y)
    assert other.prior == pytest.approx(live.prior)
    ctx = Context(step=25, n=8, policy_version=24)
    assert live.ask(pool[:40], 10, ledger, ctx) == other.ask(pool[:40], 10, ledger, ctx)
