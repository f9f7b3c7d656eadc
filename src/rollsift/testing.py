"""The conformance kit: what every selector, filter and pruner must do to plug into rollsift.

Run it in your own tests over a strategy of yours (``docs/strategies/adding.md``)::

    from rollsift.testing import check_selector
    check_selector(MySelectorConfig(), bad_knobs={"target": 2.0})

Each ``check_*`` takes a strategy *config* (a dataclass naming its strategy class in ``strategy``,
as every registered strategy's does) or a zero-argument factory of strategy objects, drives it
through rollsift's real ``RolloutPipeline`` on the simulator (a pruner: on the tiny testbed policy),
and raises ``AssertionError`` naming the rule broken. The rules:

* it satisfies its protocol (``PromptSelector``, ``GroupFilter``, ``RolloutPruner``);
* a ``state_dict()`` round trip reproduces the same decisions: a fresh object, differently seeded,
  loaded with the state and shown the same history, decides exactly as the original did;
* its metrics sit under its namespace (``select/NAME/``, ``filter/NAME/``, ``prune/NAME/``; timings
  under ``time/NAME/``);
* a stream selector decides on a prefix of its candidates, in order, and keeps at most the budget;
  a filter keeps or drops every group it is given, never both, and edits a group only down to a
  subset of its completions;
* its config rejects an unknown knob, and each knob of ``bad_knobs`` with a bad value, by name.

``check_registered()`` runs the kit over every strategy rollsift registers (the test suite does).
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import is_dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .configlib import ConfigError, from_dict
from .protocols import GroupFilter, PromptSelector, RefillPolicy, RolloutPruner

# Known-bad values for the registered strategies' knobs (a third party passes its own).
BAD_KNOBS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "greso": {"p_easy": 2.0, "min_p": -0.1, "floor": 1.5},
    "dots": {"tau": 0.0, "mu": 0, "ref_size": 2},
    "posterior": {"max_lost": 1.5, "half_life": 0.0, "floor": -0.1, "prior": "flat"},
    "learned": {"max_lost": 1.5, "half_life": 0.0, "floor": 0.0, "ridge": -1.0, "weighting": "aipw"},
    "dynamic": {"max_rounds": 0, "overshoot": 0.5},
    "pods": {"m": 1, "rule": "best"},
    "quality_head": {"over_sample": 0.5, "checkpoint": 0},
}


# ------------------------------------------------------------------------------ helpers
def _factory(spec: Any) -> tuple[Callable[[int], Any], Any]:
    """(seed -> strategy, config or None) from a config dataclass or a factory."""
    if is_dataclass(spec) and not isinstance(spec, type):
        from .config import build_strategy

        return (lambda seed: build_strategy(copy.deepcopy(spec), seed)), spec
    if callable(spec):
        return (lambda seed: spec()), None
    raise TypeError(f"pass a strategy config (a dataclass naming its strategy) or a factory, got {spec!r}")


def _name(obj: Any, cfg: Any) -> str:
    return (getattr(cfg, "type", None) or getattr(getattr(obj, "cfg", None), "type", None)
            or getattr(obj, "name", None) or type(obj).__name__.lower())


def _check_namespace(metrics: Mapping[str, float], kind: str, name: str) -> None:
    ok = (f"{kind}/{name}/", f"time/{name}/")
    bad = [k for k in metrics if not k.startswith(ok)]
    assert not bad, f"{kind} {name!r}: metrics outside its namespace {ok}: {bad[:5]}"
    for k, v in metrics.items():
        assert isinstance(v, (int, float, np.floating, np.integer)), f"metric {k} is {type(v).__name__}, not a number"


def _check_knobs(cfg: Any, bad_knobs: Mapping[str, Any] | None, prefix: str) -> None:
    if cfg is None:
        return
    cls = type(cfg)
    base = {"type": cfg.type} if hasattr(cfg, "type") else {}
    try:
        from_dict(cls, {**base, "no_such_knob": 1}, prefix)
    except ConfigError as e:
        assert "no_such_knob" in str(e), f"{cls.__name__}: an unknown knob is rejected without its name: {e}"
    else:
        raise AssertionError(f"{cls.__name__} accepted an unknown knob 'no_such_knob'")
    for knob, value in (bad_knobs or {}).items():
        try:
            from_dict(cls, {**base, knob: value}, prefix)
        except ConfigError as e:
            assert knob in str(e), f"{cls.__name__}: {knob}={value!r} is rejected without naming {knob!r}: {e}"
        else:
            raise AssertionError(f"{cls.__name__} accepted the bad value {knob}={value!r}")


def _sim(size: int, seed: int):
    from .sim.model import synthetic_embeddings, synthetic_pool

    pool, model = synthetic_pool(size, seed=seed, easy=0.35, hard=0.35)
    return pool, model, synthetic_embeddings(model, seed=seed)


def _sim_pipeline(selector: Any, filters: Sequence[Any], pool, model, emb, ledger, *, batch: int = 8, n: int = 8,
                  seed: int = 0):
    from .pipeline.rollout_pipeline import RolloutPipeline
    from .sim.model import SimGenerator, sim_score

    if hasattr(selector, "set_embeddings"):
        selector.set_embeddings([p.id for p in pool], emb)
    return RolloutPipeline(pool, selector, SimGenerator(model, seed=seed), sim_score, ledger, batch_size=batch, n=n,
                           filters=list(filters), seed=seed)


def _drive(pipe, learner, steps: range) -> list[tuple]:
    """Run steps; return every decision and kept group, in order (what must replay identically)."""
    from .pipeline.rollout_pipeline import train_step

    out = []
    for step in steps:
        col, _ = train_step(pipe, learner, pipe.context(step, learner.policy_version))
        out.append(("groups", tuple((g.prompt_id, g.n, g.correct) for g in col.groups)))
    return out


def _decisions_after(ledger, step: int) -> list[tuple]:
    return [(d.step, d.round, d.prompt_id, d.kept, d.reason) for d in ledger.decisions() if d.step > step]


# ------------------------------------------------------------------------------ selectors
def check_selector(spec: Any, *, bad_knobs: Mapping[str, Any] | None = None, pool_size: int = 96,
                   steps: int = 8, seed: int = 0) -> None:
    """The selector rules of the module docstring (on a simulated pool with dynamic sampling)."""
    from .filters.dynamic import DynamicSamplingFilter
    from .ledger import MemoryLedger
    from .records import Context
    from .sim.model import SimLearner

    make, cfg = _factory(spec)
    sel = make(seed)
    assert isinstance(sel, PromptSelector), f"{type(sel).__name__} does not satisfy the PromptSelector protocol"
    assert sel.scope in ("stream", "pool"), f"{type(sel).__name__}.scope must be 'stream' or 'pool', not {sel.scope!r}"
    name = _name(sel, cfg)
    pool, model, emb = _sim(pool_size, seed)
    ledger = MemoryLedger()

    # the prefix rule, directly on a fresh selector
    if sel.scope == "stream":
        cands = pool[:20]
        s = make(seed).ask(cands, 5, ledger, Context(step=1, n=8))
        ids = [d.prompt_id for d in s.decisions]
        assert ids == [p.id for p in cands[: len(ids)]], f"selector {name!r} decided on {ids[:5]}..., not a prefix"
        kept = [d.prompt_id for d in s.decisions if d.kept]
        assert [p.id for p in s.chosen] == kept and len(kept) <= 5, (
            f"selector {name!r}: chosen {[p.id for p in s.chosen]} are not its kept decisions {kept} within budget 5")

    # the history, then the state round trip
    pipe = _sim_pipeline(sel, [DynamicSamplingFilter()], pool, model, emb, ledger, seed=seed)
    learner = SimLearner(model)
    half = steps // 2
    _drive(pipe, learner, range(1, half + 1))
    state = pickle.loads(pickle.dumps(pipe.state_dict()))
    gen_state, learner_state = copy.deepcopy(pipe.generator.state_dict()), learner.policy_version
    first = _drive(pipe, learner, range(half + 1, steps + 1))
    _check_namespace(sel.metrics(), "select", name)
    decided = _decisions_after(ledger, half)
    assert decided, f"selector {name!r} made no decision in steps {half + 1}..{steps}"

    other = make(seed + 1000)
    ledger.rollback(after_step=half)
    pipe2 = _sim_pipeline(other, [DynamicSamplingFilter()], pool, model, emb, ledger, seed=seed)
    pipe2.load_state_dict(state)
    pipe2.generator.load_state_dict(gen_state)
    learner2 = SimLearner(model)
    learner2.policy_version = learner_state
    again = _drive(pipe2, learner2, range(half + 1, steps + 1))
    assert _decisions_after(ledger, half) == decided and again == first, (
        f"selector {name!r}: a state_dict round trip did not reproduce the same decisions")

    if sel.scope == "pool":
        s = other.ask(pool, 5, ledger, pipe2.context(steps + 1))
        ids = [p.id for p in s.chosen]
        assert len(ids) <= 5 and len(set(ids)) == len(ids) and set(ids) <= {p.id for p in pool}, (
            f"selector {name!r} chose {ids}: more than the budget, twice, or outside the pool")
    _check_knobs(cfg, BAD_KNOBS.get(name, {}) if bad_knobs is None else bad_knobs, "selector")


# ------------------------------------------------------------------------------ filters
def _groups(pool, model, n: int, seed: int, step: int):
    from .records import Group
    from .sim.model import SimGenerator, sim_score
    from .records import SamplingParams

    outs = SimGenerator(model, seed=seed + step).generate(pool, n, SamplingParams())
    return [Group(p, tuple(c), tuple(r.reward for r in sim_score(p, c)), tuple(r.correct for r in sim_score(p, c)),
                  step=step) for p, c in zip(pool, outs)]


def check_filter(spec: Any, *, bad_knobs: Mapping[str, Any] | None = None, n: int = 8, seed: int = 0) -> None:
    """The filter rules of the module docstring, on simulated groups of ``n`` completions."""
    from .records import Context

    make, cfg = _factory(spec)
    f = make(seed)
    assert isinstance(f, GroupFilter), f"{type(f).__name__} does not satisfy the GroupFilter protocol"
    name = _name(f, cfg)
    assert f.name == name or cfg is None, f"filter {type(f).__name__}.name is {f.name!r}, its config type {name!r}"
    pool, model, _ = _sim(40, seed)
    for step in range(1, 4):
        groups = _groups(pool, model, n, seed, step)
        state = pickle.loads(pickle.dumps(f.state_dict()))
        ctx = Context(step=step, n=n)
        res = f.apply(groups, ctx)
        by_id = {g.prompt_id: g for g in groups}
        kept_ids = [g.prompt_id for g in res.kept]
        assert len(set(kept_ids)) == len(kept_ids), f"filter {name!r} kept a group twice"
        assert not set(kept_ids) & set(res.dropped), f"filter {name!r} both kept and dropped {set(kept_ids) & set(res.dropped)}"
        assert set(kept_ids) | set(res.dropped) == set(by_id), f"filter {name!r} lost groups without a reason"
        for g in res.kept:
            orig = {c.index: c for c in by_id[g.prompt_id].completions}
            assert all(c.index in orig and orig[c.index] == c for c in g.completions), (
                f"filter {name!r} changed the completions of {g.prompt_id} (it may only keep a subset)")
        _check_namespace({**res.metrics, **f.metrics()}, "filter", name)
        twin = make(seed + 1000)
        twin.load_state_dict(state)
        res2 = twin.apply(groups, ctx)
        assert [(g.prompt_id, [c.index for c in g.completions]) for g in res2.kept] == \
               [(g.prompt_id, [c.index for c in g.completions]) for g in res.kept], (
            f"filter {name!r}: a state_dict round trip did not reproduce the same decisions")
    refill = getattr(f, "refill", None)
    if refill is not None:
        assert isinstance(refill, RefillPolicy), f"filter {name!r}.refill does not satisfy the RefillPolicy protocol"
        assert refill.next_round_size(8, 0.5, 16) >= 1 and refill.at_cap in ("train", "error")
    _check_knobs(cfg, BAD_KNOBS.get(name, {}) if bad_knobs is None else bad_knobs, name)


# ------------------------------------------------------------------------------ pruners
def check_pruner(spec: Any, *, bad_knobs: Mapping[str, Any] | None = None, steps: int = 4, seed: int = 0) -> None:
    """The pruner rules of the module docstring, driving rollsift's HF generator on the shipped testbed
    policy (a few seconds on one CPU thread): every group keeps at most n rollouts, and a state round
    trip reproduces the same pruning."""
    import torch

    from .generate import HFGenerator
    from .ledger import MemoryLedger
    from .pipeline.rollout_pipeline import RolloutPipeline
    from .trainer.policy import load_model
    from .records import SamplingParams
    from .rewards import MathReward, score_group
    from .testbed.problems import prompts

    make, cfg = _factory(spec)
    pr = make(seed)
    assert isinstance(pr, RolloutPruner), f"{type(pr).__name__} does not satisfy the RolloutPruner protocol"
    assert pr.over_sample >= 1 and pr.poll_every >= 1, f"pruner needs over_sample >= 1 and poll_every >= 1"
    name = _name(pr, cfg)
    model, tok = load_model("testbed", torch.device("cpu"))
    reward = MathReward()
    pool = prompts("train")[:24]

    def pipeline(pruner: Any, ledger: Any) -> RolloutPipeline:
        gen = HFGenerator(model, tok, max_batch_rows=64, seed=seed)
        pipe = RolloutPipeline(pool, _Uniform(), gen, lambda p, cs: score_group(reward, p, cs), ledger,
                               batch_size=4, n=4, sampling=SamplingParams(1.0, 1.0, 48), pruner=pruner, seed=seed)
        pipe.bind(model=model, tokenizer=tok, encode=gen.encode, out=None, device=torch.device("cpu"))
        return pipe

    class _Learner:  # the policy stays fixed: only the pruner learns
        policy_version = 0

        def update(self, batch, ctx):
            return {}

    ledger = MemoryLedger()
    pipe = pipeline(pr, ledger)
    half = steps // 2
    _drive(pipe, _Learner(), range(1, half + 1))
    state = pickle.loads(pickle.dumps(pipe.state_dict()))
    gen_state = copy.deepcopy(pipe.generator.state_dict())
    first = _drive(pipe, _Learner(), range(half + 1, steps + 1))
    assert all(g.n <= pipe.n for g in ledger.groups()), f"pruner {name!r} left more than n rollouts in a group"
    _check_namespace(pr.metrics(), "prune", name)
    ledger.rollback(after_step=half)
    pipe2 = pipeline(make(seed + 1000), ledger)
    pipe2.load_state_dict(state)
    pipe2.generator.load_state_dict(gen_state)
    again = _drive(pipe2, _Learner(), range(half + 1, steps + 1))
    assert again == first, f"pruner {name!r}: a state_dict round trip did not reproduce the same pruning"
    _check_knobs(cfg, BAD_KNOBS.get(name, {}) if bad_knobs is None else bad_knobs, "pruner")


class _Uniform:
    scope = "stream"

    def ask(self, candidates, budget, ledger, ctx):
        from .records import Decision, Selection

        chosen = tuple(candidates[:budget])
        return Selection(chosen, tuple(Decision(p.id, True, "uniform") for p in chosen))

    def tell(self, groups, ledger, ctx):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def metrics(self):
        return {}


# ------------------------------------------------------------------------------ everything registered
def registered() -> dict[str, list[tuple[str, Any]]]:
    """(name, default config) of every registered selector, filter and pruner."""
    from .config import FILTERS, PRUNERS, SELECTORS
    from .configlib import load_class

    out: dict[str, list[tuple[str, Any]]] = {}
    for kind, reg in (("selector", SELECTORS), ("filter", FILTERS), ("pruner", PRUNERS)):
        out[kind] = [(name, load_class(spec)()) for name, spec in reg.items() if spec is not None]
    return out


def check_registered(kinds: Sequence[str] = ("selector", "filter", "pruner"), **kw: Any) -> list[str]:
    """Run the kit over every registered strategy of ``kinds``; returns what was checked."""
    checks = {"selector": check_selector, "filter": check_filter, "pruner": check_pruner}
    done = []
    for kind, items in registered().items():
        if kind in kinds:
            for name, cfg in items:
                checks[kind](_configured(kind, name, cfg), **kw)
                done.append(f"{kind}:{name}")
    return done


def _configured(kind: str, name: str, cfg: Any) -> Any:
    """A registered strategy's config, made small enough for the kit (DOTS's reference set, the
    quality head's warm-up, which would otherwise outlast a few steps)."""
    if name == "dots":
        return type(cfg)(ref_size=16, train_steps=5, train_batch=32)
    if name == "quality_head":
        return type(cfg)(min_warmup_steps=0, warmup_patience=0, min_auc=0.0, checkpoint=8, train_iters=5)
    return cfg


__all__ = ["BAD_KNOBS", "check_filter", "check_pruner", "check_registered", "check_selector", "registered"]
