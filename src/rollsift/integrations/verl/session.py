"""rollsift's side of a verl run, with no verl in it: the selector, the ledger, the prompts in flight.

``trainer.py`` asks it which candidate prompts to roll out (``select_stream`` for GRESO-like
selectors that filter verl's shuffled dataloader stream, ``select_pool`` for DOTS-like ones that rank
the whole pool) and tells it which TransferQueue ``uid`` each chosen prompt got (``submitted``).
``sampler.py`` hands it every group it finds finished in TransferQueue, before verl's DAPO filter
can evict it (``observe``: the ledger gets the group at once), and closes the step once verl's
ReplayBuffer has picked the batch (``finish_step``: filter record, ``selector.tell``, metrics, step
record). Both run in verl's trainer process (the ``TaskRunnerV1`` Ray actor), so the selector's
state lives there; the ledger is a handle to the ledger actor or an in-process ``SqliteLedger``.

Counting follows rollsift's pipeline: every finished group is one event, probes included;
``cost/informative_rollouts`` counts completions in groups whose correctness varied.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from ...records import Completion, Context, Decision, FilterResult, Group, Prompt

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A prompt the dataloader produced, its epoch of the stream, and where its row lives (``ref``)."""

    prompt: Prompt
    epoch: int
    ref: Any = None


@dataclass(frozen=True)
class Finished:
    """A finished group as read from TransferQueue: one entry per session (completion), in order.

    ``prompt`` is set only when the session did not submit the uid itself (observe-only mode).
    """

    uid: str
    rewards: tuple[float, ...]
    correct: tuple[bool, ...]
    lengths: tuple[int, ...]
    prompt: Prompt | None = None


@dataclass
class _InFlight:
    prompt: Prompt
    epoch: int
    round: int
    purpose: str


_COUNTERS = ("select/examined", "select/skipped", "select/filled", "cost/rollouts", "cost/prompts",
             "cost/informative_rollouts", "cost/gen_tokens", "cost/probe_rollouts", "cost/rounds",
             "cost/failed_groups", "time/rollsift_select_s", "time/rollsift_observe_s")


class Session:
    def __init__(self, cfg: Any, selector: Any, ledger: Any, n: int) -> None:
        self.cfg, self.selector, self.ledger, self.n = cfg, selector, ledger, int(n)
        self.step = 0  # verl's global_steps of the step in progress
        self.round = 0  # selection requests so far in this step (the first batch, then each refill)
        self.epoch = 0  # epoch of the stream at the last selection
        self.pool_consumed = 0  # prompts chosen by a pool-scoped selector so far
        self.inflight: dict[str, _InFlight] = {}
        self._groups: list[tuple[str, Group]] = []  # this step's training groups, as observed
        self.probes: list[Group] = []  # probe groups observed and not yet taken by the trainer
        self._m = dict.fromkeys(_COUNTERS, 0.0)

    def context(self, *, epoch: int | None = None, round: int | None = None) -> Context:
        return Context(step=self.step, epoch=self.epoch if epoch is None else epoch,
                       round=self.round if round is None else round, policy_version=max(self.step - 1, 0), n=self.n)

    def begin(self, step: int) -> None:
        """Called with verl's global_steps before every selection; a new value starts a new step."""
        if step != self.step:
            self.step, self.round = int(step), 0

    def spent(self, key: str, seconds: float) -> None:
        """Add time to a ``time/rollsift_*_s`` counter (rollsift's own overhead in the step)."""
        self._m[key] += seconds

    # ------------------------------------------------------------------ selection
    def select_stream(self, pending: deque, budget: int, draw: Callable[[], list[Candidate]],
                      pool_size: int) -> list[Candidate]:
        """``budget`` candidates, examined in stream order from ``pending`` (refilled by ``draw``).

        The selector sees runs of one epoch at a time and decides on a prefix of them (as in
        rollsift's pipeline); examined candidates leave ``pending``, the rest stay for the next call.
        Past ``max_examined * pool_size`` examined candidates the request is completed unconditionally
        ('fill'): verl's sync ReplayBuffer waits for exactly the number of groups it asked for.
        """
        chosen: list[Candidate] = []
        examined, limit = 0, self.cfg.max_examined * pool_size
        while len(chosen) < budget:
            while len(pending) < budget - len(chosen):  # one ask over many candidates, not one per fetch
                got = draw()
                if not got:
                    raise RuntimeError("the training dataloader yielded no prompts")
                pending.extend(got)
            if examined >= limit:
                fill = [pending.popleft() for _ in range(min(budget - len(chosen), len(pending)))]
                self.ledger.record_selection([Decision(c.prompt.id, True, "fill") for c in fill],
                                             self.context(epoch=fill[0].epoch))
                self._m["select/filled"] += len(fill)
                chosen += fill
                continue
            epoch = pending[0].epoch
            run = list(takewhile(lambda c, e=epoch: c.epoch == e, pending))
            ctx = self.context(epoch=epoch)
            sel = self.selector.ask([c.prompt for c in run], budget - len(chosen), self.ledger, ctx)
            decisions = list(sel.decisions)
            if [d.prompt_id for d in decisions] != [c.prompt.id for c in run[: len(decisions)]]:
                raise RuntimeError("a stream-scoped selector must decide on a prefix of its candidates, in order")
            if not decisions:
                raise RuntimeError(f"selector {type(self.selector).__name__} examined none of {len(run)} candidates")
            self.ledger.record_selection(decisions, ctx)
            for d in decisions:
                c = pending.popleft()
                if d.kept:
                    chosen.append(c)
            examined += len(decisions)
            self._m["select/examined"] += len(decisions)
            self._m["select/skipped"] += sum(not d.kept for d in decisions)
            self.epoch = epoch
        self.round += 1
        return chosen

    def select_pool(self, pool: Sequence[Prompt], budget: int) -> tuple[list[Prompt], int]:
        """``budget`` prompts a pool-scoped selector (DOTS) ranks highest, and the epoch they count in."""
        epoch = self.pool_consumed // max(len(pool), 1)
        ctx = self.context(epoch=epoch)
        sel = self.selector.ask(pool, budget, self.ledger, ctx)  # the same list every call (DOTS caches on it)
        self.ledger.record_selection(list(sel.decisions), ctx)
        chosen = list(sel.chosen)[:budget]
        self._m["select/examined"] += len(sel.decisions)
        self._m["select/skipped"] += sum(not d.kept for d in sel.decisions)
        if len(chosen) < budget:  # the selector returned too few (a pool smaller than the batch): fill
            taken = {p.id for p in chosen}
            rest = [p for p in pool if p.id not in taken] or list(pool)
            fill = [rest[i % len(rest)] for i in range(budget - len(chosen))]
            self.ledger.record_selection([Decision(p.id, True, "fill") for p in fill], ctx)
            self._m["select/filled"] += len(fill)
            chosen += fill
        self.pool_consumed += len(chosen)
        self.epoch = epoch
        self.round += 1
        return chosen, epoch

    def submitted(self, uids: Sequence[str], prompts: Sequence[Prompt], epochs: Sequence[int],
                  purpose: str = "train") -> None:
        rnd = -1 if purpose == "probe" else max(self.round - 1, 0)
        for uid, p, e in zip(uids, prompts, epochs, strict=True):
            self.inflight[uid] = _InFlight(p, int(e), rnd, purpose)

    # ------------------------------------------------------------------ observation
    def observe(self, finished: Sequence[Finished]) -> list[Group]:
        """Build groups from finished TransferQueue entries and write them to the ledger at once."""
        by_round: dict[tuple[int, str], list[Group]] = {}
        out = []
        for f in finished:
            info = self.inflight.pop(f.uid, None)
            if info is None:
                if f.prompt is None:
                    logger.warning("rollsift: finished uid %s is unknown and carries no prompt fields", f.uid)
                    continue
                info = _InFlight(f.prompt, self.epoch, 0, "train")
            pid = info.prompt.id
            comps = tuple(Completion(pid, i, range(length), "") for i, length in enumerate(f.lengths))
            # range(length): the ledger keeps completion lengths, not tokens; a range has the length and costs nothing
            g = Group(prompt=info.prompt, completions=comps, rewards=tuple(f.rewards), correct=tuple(f.correct),
                      step=self.step, round=info.round, policy_version=max(self.step - 1, 0),
                      epoch=info.epoch)
            by_round.setdefault((info.round, info.purpose), []).append(g)
            out.append(g)
            self._m["cost/rollouts"] += g.n  # probes included, as in rollsift's pipeline
            self._m["cost/gen_tokens"] += sum(f.lengths)
            if info.purpose == "probe":
                self._m["cost/probe_rollouts"] += g.n
                self.probes.append(g)
            else:
                self._groups.append((f.uid, g))
                self._m["cost/prompts"] += 1
                self._m["cost/informative_rollouts"] += 0 if g.is_zero_variance else g.n
        for (rnd, purpose), groups in by_round.items():
            self.ledger.record_groups(groups, self.context(round=rnd), purpose=purpose)
        return out

    def failed(self, uids: Sequence[str]) -> None:
        """Groups verl marked 'failure' (an agent loop raised): not recorded, counted."""
        for uid in uids:
            self.inflight.pop(uid, None)
        self._m["cost/failed_groups"] += len(uids)

    def finish_step(self, trained_uids: set[str]) -> dict[str, float]:
        """After verl's ReplayBuffer chose the batch: record what it kept, tell the selector, close the step.

        Groups observed this step but not trained on were evicted by verl's DAPO filter
        ('zero_variance', judged here on correctness) or drained as surplus ('surplus').
        """
        ctx = self.context()
        groups = [g for _, g in self._groups]
        kept = tuple(g for uid, g in self._groups if uid in trained_uids)
        dropped = {g.prompt_id: ("zero_variance" if g.is_zero_variance else "surplus")
                   for uid, g in self._groups if uid not in trained_uids}
        n = max(len(groups), 1)
        fm = {"filter/verl/dropped_frac": len(dropped) / n,
              "filter/verl/zero_variance_frac": sum(g.is_zero_variance for g in groups) / n}
        self.ledger.record_filter("verl", FilterResult(kept=kept, dropped=dropped, metrics=fm), ctx)
        self.selector.tell(groups, self.ledger, ctx)
        m = {k: float(v) for k, v in self._m.items()}
        m["cost/rounds"] = float(self.round)
        examined = m["select/examined"]
        m["select/skip_frac"] = m["select/skipped"] / examined if examined else 0.0
        m.update(fm)
        m.update({k: float(v) for k, v in self.selector.metrics().items()})
        if groups:
            m["step/accuracy"] = sum(g.accuracy for g in groups) / len(groups)
        self.ledger.record_step(self.step, m)
        self._groups.clear()
        self._m = dict.fromkeys(_COUNTERS, 0.0)
        return m

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict(), "epoch": self.epoch, "pool_consumed": self.pool_consumed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.selector.load_state_dict(state["selector"])
        self.epoch, self.pool_consumed = int(state["epoch"]), int(state["pool_consumed"])


def prompt_from_row(row: Mapping[str, Any]) -> Prompt:
    """The rollsift ``Prompt`` of a verl dataset row (``RLHFDataset.__getitem__``'s output, or the
    prompt fields a trajectory carries in TransferQueue).

    Ids follow ``rollsift.data`` for verl-style files: the ``id`` column, else
    ``'{data_source}/{extra_info.index}'``, else a content hash of the messages; so the ledger of a
    verl run and of a rollsift run on the same parquet file name prompts alike.
    """
    from ...data import prompt_from_verl_row

    messages = row.get("raw_prompt")
    body = {"prompt": messages if messages is not None else row.get("prompt"), "id": row.get("id"),
            "reward_model": row.get("reward_model"), "data_source": row.get("data_source"),
            "extra_info": row.get("extra_info")}
    return prompt_from_verl_row(body)
