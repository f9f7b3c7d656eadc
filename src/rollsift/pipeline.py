"""The rollout pipeline: one training step's worth of data (DESIGN.md section 1).

    probe? -> SELECT -> GENERATE (+ prune) -> SCORE -> LEDGER -> FILTER -> refill? -> REPLAY mix-in

Shared by the reference trainer, the simulator and the adapters: it sees the generator, the
reward function and the learner only through their protocols, so a simulated generator or a
host framework's rollouts drive the very same selection, filtering and accounting.

Accounting (``cost/*``): every generated rollout counts, probes (DOTS's reference set) and
pruned rollouts included; ``cost/informative_rollouts`` counts those in groups whose
correctness varied, the share GRESO and DAPO try to raise to 1.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from .protocols import Generator, GroupFilter, Ledger, PromptSelector, RolloutPruner, SamplingParams
from .records import Completion, Context, Group, Prompt, RewardResult, Selection
from .stream import EpochStream

ScoreFn = Callable[[Prompt, Sequence[Completion]], Sequence[RewardResult]]


class RoundCapError(RuntimeError):
    """Dynamic sampling hit its round cap with at_cap='error'."""


@dataclass
class Collected:
    """The groups one step trains on, and what it cost to get them."""

    groups: list[Group]  # fresh first, then carried, then replayed
    off_policy: list[bool]  # sampled by an older policy (carried or replayed)
    generated: list[Group]  # every group generated this step (probes excluded), before filtering
    metrics: dict[str, float] = field(default_factory=dict)


class RolloutPipeline:
    def __init__(
        self,
        pool: Sequence[Prompt],
        selector: PromptSelector,
        generator: Generator,
        score_fn: ScoreFn,
        ledger: Ledger,
        *,
        batch_size: int,
        n: int,
        sampling: SamplingParams,
        filters: Sequence[GroupFilter] = (),
        pruner: RolloutPruner | None = None,
        replay: Any = None,
        replay_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.pool = list(pool)
        self.stream = EpochStream(self.pool, seed)
        self.selector, self.generator, self.score_fn, self.ledger = selector, generator, score_fn, ledger
        self.batch_size, self.n, self.sampling = batch_size, n, sampling
        self.filters = list(filters)
        self.dynamic = next((f for f in self.filters if f.name == "dynamic"), None)
        self.pruner = pruner
        self.replay, self.replay_fraction = replay, replay_fraction
        self.carry: deque[Group] = deque()
        self.zero_variance_rate = 0.0  # last round's, for sizing the next (GRESO)
        self.pool_consumed = 0  # fresh prompts drawn by a pool-scoped selector
        self._step_ids: set[str] = set()  # prompts already in this step's batch

    # ------------------------------------------------------------------ one step
    def collect(self, ctx: Context) -> Collected:
        m: dict[str, float] = {k: 0.0 for k in _COUNTERS}
        timer = _Timer(m)
        self._step_ids: set[str] = set()
        probes = self._probe(ctx, m, timer)

        n_replay = self._replay_quota(ctx)
        target = self.batch_size - n_replay
        kept: list[Group] = self._take_carry(ctx, m)
        self._step_ids.update(g.prompt_id for g in kept)
        generated: list[Group] = []
        rounds = 0
        while len(kept) < target:
            if rounds and self.dynamic is None:
                break
            cfg = self.dynamic.cfg if self.dynamic else None
            if cfg and rounds >= cfg.max_rounds:
                if cfg.at_cap == "error":
                    raise RoundCapError(
                        f"step {ctx.step}: {len(kept)}/{target} informative groups after "
                        f"dynamic.max_rounds={cfg.max_rounds} rounds; raise dynamic.max_rounds or set "
                        f"dynamic.at_cap='train' to train on a short batch"
                    )
                m["cost/short_batch"] = 1.0
                break
            missing = target - len(kept)
            size = self.dynamic.next_round_size(missing, self.zero_variance_rate, self.batch_size) if self.dynamic else missing
            rctx = replace(ctx, round=rounds)
            with timer("time/select"):
                prompts, epochs = self._select(size, rctx)
            if not prompts:
                break
            groups = self._rollout(prompts, epochs, rctx, m, timer, purpose="train")
            generated += groups
            zero_var = sum(g.is_zero_variance for g in groups)
            self.zero_variance_rate = zero_var / len(groups)
            with timer("time/filter"):
                survivors = list(groups)
                for f in self.filters:
                    result = f.apply(survivors, rctx)
                    self.ledger.record_filter(f.name, result, rctx)
                    survivors = list(result.kept)
            kept += survivors
            rounds += 1
        m["cost/rounds"] = float(rounds)

        fresh, surplus = kept[:target], kept[target:]
        if self.dynamic and self.dynamic.cfg.carry_over:
            self.carry.extend(surplus)
        m["cost/surplus_groups"] = float(len(surplus))
        replayed = self._sample_replay(n_replay, fresh, ctx)
        if self.replay is not None:
            self.replay.add([g for g in fresh if g.step == ctx.step], ctx.policy_version)
        m["batch/groups"] = float(len(fresh) + len(replayed))
        m["batch/replayed_groups"] = float(len(replayed))
        m["batch/carried_groups"] = float(sum(g.step != ctx.step for g in fresh))
        m["batch/zero_variance_frac"] = sum(g.is_zero_variance for g in fresh + replayed) / max(len(fresh) + len(replayed), 1)
        for f in self.filters:
            m.update(f.metrics())
        if generated:
            m["step/zero_variance_frac"] = sum(g.is_zero_variance for g in generated) / len(generated)
            m["step/accuracy"] = sum(g.accuracy for g in generated) / len(generated)
        off = [g.step != ctx.step for g in fresh] + [True] * len(replayed)
        return Collected(groups=fresh + replayed, off_policy=off, generated=generated + probes, metrics=m)

    def observe(self, collected: Collected, ctx: Context) -> dict[str, float]:
        """After the update: strategies learn from every group the step generated; their metrics."""
        train_groups = [g for g in collected.generated if g.round >= 0]
        self.selector.tell(train_groups, self.ledger, ctx)
        out = dict(self.selector.metrics())
        if self.pruner is not None:
            self.pruner.observe(train_groups, ctx)
            out.update(self.pruner.metrics())
        if self.replay is not None:
            out.update(self.replay.metrics())
        return {k: float(v) for k, v in out.items()}

    # ------------------------------------------------------------------ pieces
    def _probe(self, ctx: Context, m: dict, timer: "_Timer") -> list[Group]:
        probe = getattr(self.selector, "probe", None)
        if probe is None:
            return []
        with timer("time/select"):
            prompts = list(probe(self.pool, self.ledger, ctx))
        if not prompts:
            return []
        pctx = replace(ctx, round=-1)
        groups = self._rollout(prompts, [ctx.epoch] * len(prompts), pctx, m, timer, purpose="probe")
        m["cost/probe_rollouts"] += sum(g.n for g in groups)
        with timer("time/select"):  # a DOTS refresh (predictor training + prediction) is selection cost
            self.selector.tell(groups, self.ledger, pctx)
        return groups

    def _select(self, size: int, ctx: Context) -> tuple[list[Prompt], list[int]]:
        if self.selector.scope == "pool":
            epoch = self.pool_consumed // len(self.pool)
            sel = self.selector.ask(self.pool, size, self.ledger, replace(ctx, epoch=epoch))
            self.ledger.record_selection(sel.decisions, replace(ctx, epoch=epoch))
            self.pool_consumed += len(sel.chosen)
            return list(sel.chosen), [epoch] * len(sel.chosen)
        chosen: list[Prompt] = []
        epochs: list[int] = []
        examined, limit = 0, 2 * len(self.pool)  # a selector that skips everything cannot spin forever
        while len(chosen) < size and examined < limit:
            raw = self.stream.chunk(size - len(chosen))
            # A prompt already rolled out this step (tiny pools wrap around mid-step) is passed over.
            cands = [p for p in raw if p.id not in self._step_ids]
            ectx = replace(ctx, epoch=self.stream.epoch)
            sel: Selection = self.selector.ask(cands, size - len(chosen), self.ledger, ectx)
            _check_prefix(sel, cands)
            k = len(sel.decisions)
            last = cands[k - 1].id if k else None
            consumed = next((i + 1 for i, p in enumerate(raw) if p.id == last), 0) if k < len(cands) else len(raw)
            self.stream.consume(consumed)
            self.ledger.record_selection(sel.decisions, ectx)
            examined += consumed
            chosen += sel.chosen
            self._step_ids.update(p.id for p in sel.chosen)
            epochs += [self.stream.epoch] * len(sel.chosen)
            if not consumed:
                break
        return chosen, epochs

    def _rollout(self, prompts, epochs, ctx: Context, m: dict, timer: "_Timer", purpose: str) -> list[Group]:
        with timer("time/generate"):
            outs = self.generator.generate(prompts, self.n, self.sampling, self.pruner if purpose == "train" else None, ctx)
        stats = getattr(self.generator, "last_stats", {}) or {}
        with timer("time/score"):
            groups = []
            for p, e, comps in zip(prompts, epochs, outs):
                results = self.score_fn(p, comps)
                groups.append(Group(
                    prompt=p, completions=tuple(comps), rewards=tuple(r.reward for r in results),
                    correct=tuple(r.correct for r in results), step=ctx.step, round=ctx.round,
                    policy_version=ctx.policy_version, epoch=e,
                ))
        with timer("time/ledger"):
            self.ledger.record_groups(groups, ctx, purpose=purpose)
        rollouts = int(stats.get("rows", sum(g.n for g in groups)))
        m["cost/rollouts"] += rollouts
        m["cost/gen_tokens"] += float(stats.get("gen_tokens", sum(g.num_tokens for g in groups)))
        m["cost/pruned_rollouts"] += float(stats.get("pruned_rows", 0))
        m["cost/informative_rollouts"] += sum(g.n for g in groups if not g.is_zero_variance)
        m["cost/prompts"] += len(groups)
        return groups

    def _take_carry(self, ctx: Context, m: dict) -> list[Group]:
        if not self.carry:
            return []
        max_age = self.dynamic.cfg.max_staleness if self.dynamic else 0
        fresh = [g for g in self.carry if ctx.step - g.step <= max_age]
        m["cost/stale_dropped_groups"] = float(len(self.carry) - len(fresh))
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
        exclude = {g.prompt_id for g in fresh}
        return self.replay.sample(k, ctx.policy_version, exclude=exclude)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream.state_dict(),
            "carry": list(self.carry),
            "zero_variance_rate": self.zero_variance_rate,
            "pool_consumed": self.pool_consumed,
            "selector": self.selector.state_dict(),
            "filters": {f.name: f.state_dict() for f in self.filters},
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "replay": self.replay.state_dict() if self.replay is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.carry = deque(state["carry"])
        self.zero_variance_rate = float(state["zero_variance_rate"])
        self.pool_consumed = int(state["pool_consumed"])
        self.selector.load_state_dict(state["selector"])
        for f in self.filters:
            f.load_state_dict(state["filters"][f.name])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])


_COUNTERS = (
    "cost/rollouts", "cost/gen_tokens", "cost/pruned_rollouts", "cost/informative_rollouts",
    "cost/prompts", "cost/probe_rollouts", "time/select", "time/generate", "time/score",
    "time/ledger", "time/filter",
)


def _check_prefix(sel: Selection, cands: Sequence[Prompt]) -> None:
    ids = [d.prompt_id for d in sel.decisions]
    if ids != [p.id for p in cands[: len(ids)]]:
        raise RuntimeError(
            "a stream-scoped selector must decide on a prefix of its candidates, in order; "
            f"got decisions for {ids[:5]}... from candidates {[p.id for p in cands[:5]]}..."
        )


class _Timer:
    def __init__(self, sink: dict) -> None:
        self.sink = sink

    def __call__(self, key: str) -> "_Span":
        return _Span(self.sink, key)


class _Span:
    def __init__(self, sink: dict, key: str) -> None:
        self.sink, self.key = sink, key

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.sink[self.key] = self.sink.get(self.key, 0.0) + time.perf_counter() - self.t0
