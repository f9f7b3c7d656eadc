"""The prompt walk: which prompts a step rolls out, written once for every engine.

rollsift's own trainer, the TRL adapter and the verl adapter all ask their selector through this
walk, so the rules below, the counters and the metric names are the same everywhere.

A stream-scoped selector (uniform, GRESO) is shown the next candidates of the epoch stream in
order, as many as the request still needs and of one epoch at a time, and decides on a prefix of
them (``ask`` may stop early: the undecided rest stays pending for the next request). The walk

* draws from the engine's source (rollsift's ``EpochStream``, verl's dataloader) only what it needs;
* passes over a candidate whose prompt is already in the step's batch (a small pool wraps around
  within a step) without spending its visit: it is deferred to the head of the stream for the next
  step, keeping its epoch, so every prompt still comes up once per epoch; when the stream comes
  round to a prompt it deferred, nothing new is left and the walk ends short;
* examines at most ``max_examined`` x the pool size candidates per request (a selector that skips
  everything cannot spin forever); past that, or once the stream came round, with ``fill`` the
  request is completed with the next candidates not in the batch, unconditionally (decision reason
  "fill"), which hosts that need an exact batch use.

A pool-scoped selector (DOTS) ranks the whole pool every request; its picks count toward the
epoch ``pool_consumed // len(pool)``.

Metrics (per step, reset by ``metrics()``): ``select/examined`` (decisions made), ``select/skipped``,
``select/filled``, ``select/deferred``, ``select/skip_frac`` and ``time/select`` (seconds in the
walk, the selector's own work included).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..protocols import LedgerView, PromptSelector
from ..records import Candidate, Context, Decision, Prompt

COUNTERS = ("select/examined", "select/skipped", "select/filled", "select/deferred", "time/select")
FILL = "fill"


class PromptWalk:
    def __init__(self, selector: PromptSelector, ledger: Any, *, pool_size: int, max_examined: float = 2.0) -> None:
        if not max_examined > 0:
            raise ValueError(f"max_examined must be > 0 (a multiple of the pool size), got {max_examined!r}")
        self.selector, self.ledger = selector, ledger
        self.pool_size, self.max_examined = int(pool_size), float(max_examined)
        self.pending: deque[Candidate] = deque()  # drawn from the source, not yet examined, in order
        self.pool_consumed = 0  # prompts chosen by a pool-scoped selector so far
        self._m = dict.fromkeys(COUNTERS, 0.0)

    @property
    def scope(self) -> str:
        return getattr(self.selector, "scope", "stream")

    # ------------------------------------------------------------------ stream-scoped
    def stream(self, budget: int, ctx: Context, draw: Callable[[int], Sequence[Candidate]], *,
               exclude: Iterable[str] = (), fill: bool = False,
               fill_first: Sequence[Candidate] = ()) -> list[Candidate]:
        """Up to ``budget`` candidates the selector keeps, in stream order (see the module docstring).

        ``draw(k)`` returns up to ``k`` more candidates of the source ([] when it has none left);
        ``exclude`` names the prompts already in the step's batch. With ``fill``, a request the
        selector leaves short is completed from ``fill_first`` (a host's own proposals), then from
        the stream.
        """
        t0 = time.perf_counter()
        taken = set(exclude)
        chosen: list[Candidate] = []
        deferred: list[Candidate] = []
        deferred_ids: set[str] = set()
        examined, limit = 0, self.max_examined * self.pool_size
        filling = False
        m = self._m
        try:
            while len(chosen) < budget:
                need = budget - len(chosen)
                if not self._top_up(need, draw):
                    break  # the source has nothing left
                head = self.pending[0]
                if head.prompt.id in taken:
                    if head.prompt.id in deferred_ids:  # the stream came round: the selector saw every prompt
                        if not fill or filling:
                            break  # (with fill: twice round, so every prompt left is already in the batch)
                        filling, deferred_ids = True, set()
                    deferred.append(self.pending.popleft())
                    deferred_ids.add(head.prompt.id)
                    continue
                if examined >= limit or filling:
                    if not fill:
                        break
                    first = [c for c in fill_first if c.prompt.id not in taken]
                    c = first[0] if first else self.pending.popleft()
                    self.ledger.record_selection([Decision(c.prompt.id, True, FILL)], replace(ctx, epoch=c.epoch))
                    chosen.append(c)
                    taken.add(c.prompt.id)
                    m["select/filled"] += 1
                    continue
                run = []  # the next `need` candidates of one epoch, up to one already in the batch
                for c in self.pending:
                    if len(run) == need or c.epoch != head.epoch or c.prompt.id in taken:
                        break
                    run.append(c)
                ectx = replace(ctx, epoch=head.epoch)
                sel = self.selector.ask([c.prompt for c in run], need, self.ledger, ectx)
                decisions = list(sel.decisions)
                check_prefix(decisions, [c.prompt for c in run])
                if not decisions:
                    raise RuntimeError(f"selector {type(self.selector).__name__} examined none of {len(run)} "
                                       f"candidates for a budget of {need}; a stream selector must decide on at "
                                       "least the first candidate")
                self.ledger.record_selection(decisions, ectx)
                for d in decisions:
                    c = self.pending.popleft()
                    if d.kept:
                        chosen.append(c)
                        taken.add(c.prompt.id)
                skipped = sum(not d.kept for d in decisions)
                examined += len(decisions)
                m["select/examined"] += len(decisions)
                m["select/skipped"] += skipped
        finally:
            self.pending.extendleft(reversed(deferred))
            m["select/deferred"] += len(deferred)
            m["time/select"] += time.perf_counter() - t0
        return chosen

    def _top_up(self, need: int, draw: Callable[[int], Sequence[Candidate]]) -> bool:
        """Draw until ``need`` candidates are pending (or the source runs dry); False if none is."""
        while len(self.pending) < need:
            got = draw(need - len(self.pending))
            if not got:
                break
            self.pending.extend(got)
        return bool(self.pending)

    # ------------------------------------------------------------------ pool-scoped
    def pool(self, pool: Sequence[Prompt], budget: int, ctx: Context, *, fill: bool = False) -> list[Candidate]:
        """Up to ``budget`` prompts a pool-scoped selector picks from the whole ``pool`` (pass the same
        list every time: DOTS caches its embedding rows on it). With ``fill``, a short pick is
        completed with other pool prompts (reason "fill")."""
        t0 = time.perf_counter()
        epoch = self.pool_consumed // max(len(pool), 1)
        ectx = replace(ctx, epoch=epoch)
        try:
            sel = self.selector.ask(pool, budget, self.ledger, ectx)
            self.ledger.record_selection(list(sel.decisions), ectx)
            chosen = [Candidate(p, epoch) for p in list(sel.chosen)[:budget]]
            self._m["select/examined"] += len(sel.decisions)
            self._m["select/skipped"] += sum(not d.kept for d in sel.decisions)
            if fill and len(chosen) < budget and pool:
                taken = {c.prompt.id for c in chosen}
                rest = [p for p in pool if p.id not in taken] or list(pool)
                extra = [rest[i % len(rest)] for i in range(budget - len(chosen))]
                self.ledger.record_selection([Decision(p.id, True, FILL) for p in extra], ectx)
                self._m["select/filled"] += len(extra)
                chosen += [Candidate(p, epoch) for p in extra]
            self.pool_consumed += len(chosen)
        finally:
            self._m["time/select"] += time.perf_counter() - t0
        return chosen

    # ------------------------------------------------------------------ metrics and state
    def add_time(self, seconds: float) -> None:
        """Selection work done outside the walk (a probing selector's refresh) counts in time/select."""
        self._m["time/select"] += seconds

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """The counters since the last reset, and the skip rate among the decisions."""
        out = dict(self._m)
        out["select/skip_frac"] = out["select/skipped"] / out["select/examined"] if out["select/examined"] else 0.0
        if reset:
            self._m = dict.fromkeys(COUNTERS, 0.0)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Pending candidates by prompt id (engines whose candidates carry rows save those themselves)."""
        return {"pending": [(c.prompt.id, c.epoch) for c in self.pending], "pool_consumed": self.pool_consumed}

    def load_state_dict(self, state: Mapping[str, Any], prompts: Mapping[str, Prompt]) -> None:
        """``prompts``: prompt id -> Prompt, to rebuild the pending candidates."""
        self.pending = deque(Candidate(prompts[pid], int(e)) for pid, e in state["pending"])
        self.pool_consumed = int(state["pool_consumed"])


def check_prefix(decisions: Sequence[Decision], candidates: Sequence[Prompt]) -> None:
    """A stream-scoped selector decides on a prefix of its candidates, in order (the stream relies on it)."""
    ids = [d.prompt_id for d in decisions]
    if ids != [p.id for p in candidates[: len(ids)]]:
        raise RuntimeError("a stream-scoped selector must decide on a prefix of its candidates, in order; got "
                           f"decisions for {ids[:5]}... from candidates {[p.id for p in candidates[:5]]}...")


__all__ = ["COUNTERS", "FILL", "PromptWalk", "check_prefix"]
