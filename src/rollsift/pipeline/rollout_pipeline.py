"""The rollout pipeline: one training step's worth of data (docs/architecture.md), for every engine.

    probe? -> SELECT -> GENERATE (+ prune) -> SCORE -> LEDGER -> FILTER -> refill? -> REPLAY mix-in

rollsift's own trainer and the simulator call ``collect`` (the whole step, with the pipeline's
generator) and ``observe``; host frameworks that generate themselves (TRL, verl) call the phases
``collect`` is made of: ``probe_prompts`` / ``tell_probes``, ``select``, ``record``, ``filter`` and
``tell``. Either way the prompt walk (``rollsift.selection``), the ledger events, the filter chain,
the cost accounting and the metric names are this module's, and ``from_config`` builds every
strategy with the same seeds (``SEEDS``) on every engine.

Accounting (``cost/*``): every generated rollout counts in ``cost/rollouts``, probes (DOTS's reference
set, also in ``cost/probe_rollouts``) and pruned rollouts included; ``cost/prompts`` and
``cost/informative_rollouts`` count training groups only, the latter those whose correctness varied:
the share GRESO and DAPO try to raise to 1.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from .. import faults
from ..errors import UserError
from ..protocols import Generator, GroupFilter, Ledger, PromptSelector, RefillPolicy, RolloutPruner
from ..records import SamplingParams
from ..records import Candidate, Completion, Context, Group, Prompt, RewardResult, TrainBatch, zero_variance_share
from .epoch_stream import EpochStream
from .prompt_walk import PromptWalk
from .step_counters import COUNTERS, StepCounters

ScoreFn = Callable[[Prompt, Sequence[Completion]], Sequence[RewardResult]]

# Every seeded piece of a run draws from ``seed + SEEDS[piece]``, on every engine, so that one seed
# gives the same selection decisions for the same history under rollsift's trainer, TRL and verl.
SEEDS = {"stream": 0, "generator": 0, "learner": 1, "filters": 2, "pruner": 3, "replay": 4, "selector": 5}

HOST = "host"  # Candidate.ref of a host's proposals (``select(host=...)``)
_FROM_FILTERS: Any = object()  # the default refill: the one a filter brings (DAPO dynamic sampling's)


def seed_of(piece: str, seed: int) -> int:
    return int(seed) + SEEDS[piece]


class RoundCapError(UserError, RuntimeError):
    """Dynamic sampling hit its round cap (or ran out of prompts) with at_cap='error'."""


@dataclass
class Collected:
    """The groups one step trains on, and what it cost to get them."""

    groups: list[Group]  # fresh first, then carried, then replayed
    off_policy: list[bool]  # sampled by an older policy (carried or replayed)
    generated: list[Group]  # every training group generated this step, before filtering
    probes: list[Group] = field(default_factory=list)  # a probing selector's reference groups
    metrics: dict[str, float] = field(default_factory=dict)
    replayed: list[bool] = field(default_factory=list)  # per group: drawn from the replay buffer


class RolloutPipeline:
    def __init__(
        self,
        pool: Sequence[Prompt],
        selector: PromptSelector,
        generator: Generator | None,
        score_fn: ScoreFn | None,
        ledger: Ledger,
        *,
        batch_size: int,
        n: int,
        sampling: SamplingParams | None = None,
        filters: Sequence[GroupFilter] = (),
        refill: RefillPolicy | None = _FROM_FILTERS,
        pruner: RolloutPruner | None = None,
        replay: Any = None,
        replay_fraction: float = 0.0,
        seed: int = 0,
        max_examined: float = 2.0,
    ) -> None:
        self.pool = list(pool)
        self.by_id = {p.id: p for p in self.pool}
        # A host that streams candidates itself (verl's dataloader) may give no pool: no stream then.
        self.stream = EpochStream(self.pool, seed_of("stream", seed)) if self.pool else None
        self.walk = PromptWalk(selector, ledger, pool_size=len(self.pool), max_examined=max_examined)
        self.generator, self.score_fn = generator, score_fn
        self.batch_size, self.n, self.sampling = batch_size, n, sampling or SamplingParams()
        self.filters = list(filters)
        if refill is _FROM_FILTERS:
            refill = next((r for f in self.filters if (r := getattr(f, "refill", None)) is not None), None)
        self.refill = refill
        self.pruner = pruner
        self.replay, self.replay_fraction = replay, replay_fraction
        self.carry: deque[Group] = deque()
        self.zero_variance_rate = 0.0  # last round's, for sizing the next (GRESO)
        self.counters = StepCounters()

    @classmethod
    def from_config(cls, cfg: Any, pool: Sequence[Prompt], ledger: Ledger, *, generator: Generator | None = None,
                    score_fn: ScoreFn | None = None, bind: Mapping[str, Any] | None = None,
                    **override: Any) -> "RolloutPipeline":
        """The pipeline a run config describes, every strategy seeded from ``SEEDS``.

        ``cfg`` is a ``RunConfig`` or any object with some of its fields (``seed``, ``batch_size``,
        ``n``, ``selector``, ``filters``, ``pruner``, ``replay``, ``sampling``, ``max_examined``);
        keyword arguments override them. A strategy field may hold a table, a config dataclass, a
        registry name or a ready strategy object. ``bind``: resources for ``bind(...)`` hooks
        (``model``, ``tokenizer``, ``encode``, ``out``, ``device``); None leaves binding to the caller.
        """
        from ..config import make_strategy
        from .replay_buffer import FifoReplayBuffer

        def get(name: str, default: Any = None) -> Any:
            return override[name] if name in override else getattr(cfg, name, default)

        seed = int(get("seed", 0) or 0)
        selector = make_strategy("selector", get("selector") or "uniform", seed_of("selector", seed))
        filters = [make_strategy("filter", f, seed_of("filters", seed)) for f in get("filters", ()) or ()]
        pruner = make_strategy("pruner", get("pruner"), seed_of("pruner", seed))
        rep = get("replay")
        replay = None
        if rep is not None and getattr(rep, "enabled", True):
            replay = rep if hasattr(rep, "sample") else FifoReplayBuffer(rep.capacity, rep.max_staleness,
                                                                         seed=seed_of("replay", seed))
        sampling = get("sampling")  # the run config's [sampling] table is a SamplingParams
        pipe = cls(pool, selector, generator, score_fn, ledger, batch_size=int(get("batch_size", 0) or 0),
                   n=int(get("n", 0) or 0), sampling=sampling, filters=filters, pruner=pruner, replay=replay,
                   replay_fraction=getattr(rep, "fraction", 0.0) if replay is not None else 0.0, seed=seed,
                   max_examined=float(get("max_examined", 2.0)))
        if bind is not None:
            pipe.bind(**bind)
        return pipe

    def bind(self, pool: Sequence[Prompt] | None = None, **resources: Any) -> None:
        """Call every strategy's optional ``bind`` hook (protocols.Bindable) with the pool (default: the
        pipeline's) and ``resources`` (model, tokenizer, encode, out, device; missing ones are None)."""
        for s in (self.selector, self.pruner, *self.filters):
            if s is not None and hasattr(s, "bind"):
                s.bind(pool=list(pool) if pool is not None else self.pool,
                       **{"model": None, "tokenizer": None, "encode": None, "out": None, **resources})

    @property
    def ledger(self) -> Ledger:
        return self.walk.ledger

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.walk.ledger = ledger

    @property
    def selector(self) -> PromptSelector:
        return self.walk.selector

    @selector.setter
    def selector(self, selector: PromptSelector) -> None:
        self.walk.selector = selector

    @property
    def epoch(self) -> int:
        """The pass over the pool the next selection belongs to."""
        if self.walk.scope == "pool":
            return self.walk.pool_consumed // max(len(self.pool), 1)
        return self.walk.pending[0].epoch if self.walk.pending else (self.stream.epoch if self.stream else 0)

    def context(self, step: int, policy_version: int = 0) -> Context:
        return Context(step=step, epoch=self.epoch, policy_version=policy_version, n=self.n)

    # ------------------------------------------------------------------ one step (own generator)
    def collect(self, ctx: Context) -> Collected:
        """Select, generate, score, record, filter and refill until the batch is full; mix in replay."""
        m = self.counters
        probes = self._probe(ctx)
        n_replay = self._replay_quota(ctx)
        target = self.batch_size - n_replay
        kept: list[Group] = self._take_carry(ctx)
        in_step = {g.prompt_id for g in kept}
        generated: list[Group] = []
        rounds, r = 0, self.refill
        while len(kept) < target:
            if rounds and r is None:
                break
            if r is not None and rounds >= r.max_rounds:
                self._at_cap(ctx, f"{len(kept)}/{target} informative groups after dynamic.max_rounds={r.max_rounds} "
                                  f"rounds; raise dynamic.max_rounds or set dynamic.at_cap='train' to train on a "
                                  f"short batch")
                break
            missing = target - len(kept)
            size = r.next_round_size(missing, self.zero_variance_rate, self.batch_size) if r is not None else missing
            rctx = replace(ctx, round=rounds)
            chosen = self.select(size, rctx, exclude=in_step)
            if not chosen:
                self._at_cap(ctx, f"{len(kept)}/{target} groups and the selector offered no prompt (every prompt of "
                                  f"the pool is in this step's batch, or the selector skipped them all); use a "
                                  f"larger pool or a smaller batch_size")
                break
            in_step.update(c.prompt.id for c in chosen)
            groups = self.rollout(chosen, rctx)
            generated += groups
            self.zero_variance_rate = zero_variance_share(groups)
            kept += self.filter(groups, rctx)
            rounds += 1
        fresh, surplus = kept[:target], kept[target:]
        if r is not None and r.carry_over:
            self.carry.extend(surplus)
        replayed = self._sample_replay(n_replay, fresh, ctx)
        if self.replay is not None:
            self.replay.add([g for g in fresh if g.step == ctx.step], ctx.policy_version)
        batch = fresh + replayed
        m.set("cost/rounds", rounds)
        m.set("cost/surplus_groups", len(surplus))
        if len(fresh) < target:
            m.set("cost/short_batch", 1.0)
        m.set("batch/groups", len(batch))
        m.set("batch/replayed_groups", len(replayed))
        m.set("batch/carried_groups", sum(g.step != ctx.step for g in fresh))
        m.set("batch/zero_variance_frac", zero_variance_share(batch))
        off = [g.step != ctx.step for g in fresh] + [True] * len(replayed)
        return Collected(groups=batch, off_policy=off, generated=generated, probes=probes,
                         metrics=self.step_metrics(), replayed=[False] * len(fresh) + [True] * len(replayed))

    def observe(self, collected: Collected, ctx: Context) -> dict[str, float]:
        """After the update: strategies learn from every training group the step generated."""
        return self.tell(collected.generated, ctx)

    def rollout(self, candidates: Sequence[Candidate], ctx: Context) -> list[Group]:
        """Generate ``n`` completions for each candidate with the pipeline's generator, score them and
        record the groups (purpose ``ctx.purpose``; a pruner runs on training rounds only)."""
        if self.generator is None or self.score_fn is None:
            raise RuntimeError("this pipeline has no generator/score_fn (a host engine generates): call select, "
                               "record, filter and tell instead of collect")
        prompts = [c.prompt for c in candidates]
        t0 = time.perf_counter()
        pruner = self.pruner if ctx.purpose == "train" else None
        outs = self.generator.generate(prompts, self.n, self.sampling, pruner, ctx)
        t1 = time.perf_counter()
        groups = []
        for c, comps in zip(candidates, outs):
            results = self.score_fn(c.prompt, comps)
            groups.append(Group(prompt=c.prompt, completions=tuple(comps), rewards=tuple(r.reward for r in results),
                                correct=tuple(r.correct for r in results), step=ctx.step, round=ctx.round,
                                policy_version=ctx.policy_version, epoch=c.epoch))
        self.counters.add("time/generate", t1 - t0)
        self.counters.add("time/score", time.perf_counter() - t1)
        self.record(groups, ctx, stats=getattr(self.generator, "last_stats", None))
        return groups

    # ------------------------------------------------------------------ phases (host engines)
    def probe_prompts(self, ctx: Context) -> list[Prompt]:
        """A probing selector's reference prompts for this step ([] for other selectors or steps)."""
        probe = getattr(self.selector, "probe", None)
        if probe is None:
            return []
        t0 = time.perf_counter()
        prompts = list(probe(self.pool, self.ledger, replace(ctx, purpose="probe")))
        self.walk.add_time(time.perf_counter() - t0)
        return prompts

    def tell_probes(self, groups: Sequence[Group], ctx: Context) -> None:
        """Hand the rolled-out reference groups to the selector (a DOTS refresh: selection cost)."""
        t0 = time.perf_counter()
        self.selector.tell(list(groups), self.ledger, replace(ctx, purpose="probe"))
        self.walk.add_time(time.perf_counter() - t0)

    def select(self, budget: int, ctx: Context, *, draw: Callable[[int], Sequence[Candidate]] | None = None,
               exclude: Iterable[str] = (), fill: bool = False, host: Sequence[Candidate] = ()) -> list[Candidate]:
        """Up to ``budget`` candidates through the prompt walk: from the whole pool for a pool-scoped
        selector, else from ``draw`` (default: the pipeline's epoch stream). ``fill``: complete a short
        request unconditionally (``PromptWalk.stream``). ``host``: a host's own proposals (TRL's
        sampler), examined before the stream and used first to fill; those left unexamined are dropped
        afterwards, since the host's sampler has moved on and they do not wait in the stream."""
        if self.walk.scope == "pool":
            return self.walk.pool(self.pool, budget, ctx, fill=fill)
        if draw is None and self.stream is None:
            raise RuntimeError("this pipeline has no pool to stream from: pass draw=")
        host = [replace(c, ref=HOST) for c in host]
        self.walk.pending.extendleft(reversed(host))
        try:
            return self.walk.stream(budget, ctx, draw or self.stream.draw, exclude=exclude, fill=fill,
                                    fill_first=host)
        finally:
            if host:
                self.walk.pending = deque(c for c in self.walk.pending if c.ref != HOST)

    def record(self, groups: Sequence[Group], ctx: Context, stats: Mapping[str, float] | None = None) -> None:
        """Write generated groups to the ledger (before any filter) and count their cost.

        ``stats``: the generator's ``last_stats`` when it knows more than the groups show (rollouts
        started and pruned, tokens generated)."""
        t0 = time.perf_counter()
        self.ledger.record_groups(groups, ctx)
        faults.point("ledger.groups")
        m, stats = self.counters, stats or {}
        m.add("time/ledger", time.perf_counter() - t0)
        rollouts = float(stats.get("rows", sum(g.n for g in groups)))
        m.add("cost/rollouts", rollouts)
        m.add("cost/gen_tokens", stats.get("gen_tokens", sum(g.num_tokens for g in groups)))
        m.add("cost/pruned_rollouts", stats.get("pruned_rows", 0))
        if ctx.purpose == "probe":
            m.add("cost/probe_rollouts", rollouts)
        else:
            m.add("cost/prompts", len(groups))
            m.add("cost/informative_rollouts", sum(g.n for g in groups if not g.is_zero_variance))
            m.count_training_groups(groups)

    def filter(self, groups: Sequence[Group], ctx: Context) -> list[Group]:
        """Run the filter chain; each filter's decisions go to the ledger. Returns the survivors."""
        t0 = time.perf_counter()
        survivors = list(groups)
        for f in self.filters:
            result = f.apply(survivors, ctx)
            self.ledger.record_filter(f.name, result, ctx)
            self.counters.add_filter_metrics(result.metrics, weight=len(survivors))  # weighted by the groups seen
            survivors = list(result.kept)
        self.counters.add("time/filter", time.perf_counter() - t0)
        return survivors

    def tell(self, groups: Sequence[Group], ctx: Context) -> dict[str, float]:
        """After the update: the selector and the pruner learn from the step's training groups; their
        metrics and the replay buffer's. The context's epoch is the latest epoch among the groups (the
        stream may have entered a new epoch during the step: GRESO adapts from the second epoch on)."""
        groups = list(groups)
        if groups:
            ctx = replace(ctx, epoch=max(ctx.epoch, max(g.epoch for g in groups)))
        self.selector.tell(groups, self.ledger, ctx)
        out = dict(self.selector.metrics())
        if self.pruner is not None:
            self.pruner.observe(groups, ctx)
            out.update(self.pruner.metrics())
        if self.replay is not None:
            out.update(self.replay.metrics())
        return {k: float(v) for k, v in out.items()}

    def add_time(self, key: str, seconds: float) -> None:
        """Time a host spent on rollsift's behalf outside these methods (``time/select``, ``time/observe``...)."""
        if key == "time/select":
            self.walk.add_time(seconds)
        else:
            self.counters.add(key, seconds)

    def use_pool(self, pool: Sequence[Prompt]) -> None:
        """Give a host pipeline built without a pool (verl streams its own dataloader) the pool that a
        pool-scoped or probing selector needs; the walk's examination limit follows its size."""
        self.pool = list(pool)
        self.by_id = {p.id: p for p in self.pool}
        self.walk.pool_size = len(self.pool)

    def use_host_queue(self, pending: deque, pool_size: int) -> None:
        """A host that draws candidates itself and keeps the walk's queue of drawn, not yet examined
        ones in its own checkpoints (verl's trainer): the walk works on that queue, over a pool of
        ``pool_size`` prompts."""
        self.walk.pending, self.walk.pool_size = pending, int(pool_size)

    @property
    def pool_consumed(self) -> int:
        """Prompts a pool-scoped selector chose so far (the epoch is ``pool_consumed // len(pool)``)."""
        return self.walk.pool_consumed

    @pool_consumed.setter
    def pool_consumed(self, value: int) -> None:
        self.walk.pool_consumed = int(value)

    def selection_metrics(self) -> dict[str, float]:
        """The prompt walk's counters of this step so far, without resetting them."""
        return self.walk.metrics(reset=False)

    def step_metrics(self) -> dict[str, float]:
        """Selection, cost, time and filter counters since the last call (then reset), and the share
        of zero-variance groups and the mean accuracy of the training groups recorded meanwhile."""
        return {**self.walk.metrics(), **self.counters.drain()}

    # ------------------------------------------------------------------ pieces
    def _probe(self, ctx: Context) -> list[Group]:
        prompts = self.probe_prompts(ctx)
        if not prompts:
            return []
        pctx = replace(ctx, round=0, purpose="probe")
        groups = self.rollout([Candidate(p, ctx.epoch) for p in prompts], pctx)
        self.tell_probes(groups, pctx)
        return groups

    def _at_cap(self, ctx: Context, why: str) -> None:
        if self.refill is not None and self.refill.at_cap == "error":
            raise RoundCapError(f"step {ctx.step}: {why}")

    def _take_carry(self, ctx: Context) -> list[Group]:
        if not self.carry:
            return []
        max_age = self.refill.max_staleness if self.refill is not None else 0
        fresh = [g for g in self.carry if ctx.step - g.step <= max_age]
        self.counters.set("cost/stale_dropped_groups", len(self.carry) - len(fresh))
        self.carry.clear()
        return fresh

    def _replay_quota(self, ctx: Context) -> int:
        if self.replay is None or self.replay_fraction <= 0:
            return 0
        want = int(self.replay_fraction * self.batch_size)
        return want if self.replay.available(ctx.policy_version) >= want else 0

    def _sample_replay(self, k: int, fresh: list[Group], ctx: Context) -> list[Group]:
        if k <= 0:
            return []
        return self.replay.sample(k, ctx.policy_version, exclude={g.prompt_id for g in fresh})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream.state_dict() if self.stream is not None else None,
            "walk": self.walk.state_dict(),
            "carry": list(self.carry),
            "zero_variance_rate": self.zero_variance_rate,
            "selector": self.selector.state_dict(),
            "filters": {f.name: f.state_dict() for f in self.filters},
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "replay": self.replay.state_dict() if self.replay is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.stream is not None:
            self.stream.load_state_dict(state["stream"])
        self.walk.load_state_dict(state["walk"], self.by_id)
        self.carry = deque(state["carry"])
        self.zero_variance_rate = float(state["zero_variance_rate"])
        self.selector.load_state_dict(state["selector"])
        for f in self.filters:
            f.load_state_dict(state["filters"][f.name])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])


def train_step(pipeline: RolloutPipeline, learner: Any, ctx: Context,
               advantages: Callable[[Sequence[Group]], Any] | None = None) -> tuple[Collected, dict[str, float]]:
    """One step of the reference loop, shared by ``rollsift train`` and the simulator: collect the
    batch, update the learner, let the strategies observe. ``advantages(groups)`` gives the
    per-completion advantages (the simulated learner reads the groups and needs none)."""
    collected = pipeline.collect(ctx)
    groups = tuple(collected.groups)
    adv = advantages(groups) if advantages is not None else tuple((0.0,) * g.n for g in groups)
    t0 = time.perf_counter()
    metrics = dict(learner.update(TrainBatch(groups, adv, tuple(collected.off_policy)), ctx))
    metrics["time/train"] = time.perf_counter() - t0
    pipeline.ledger.record_use(groups, collected.replayed, ctx)
    metrics.update(pipeline.observe(collected, ctx))
    metrics.update(collected.metrics)
    return collected, metrics


__all__ = ["COUNTERS", "Collected", "RolloutPipeline", "RoundCapError", "SEEDS", "seed_of", "train_step"]
