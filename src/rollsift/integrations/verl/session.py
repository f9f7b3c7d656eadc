"""rollsift's side of a verl run, with no verl in it: the selector, the ledger, the prompts in flight.

``trainer.py`` asks it which candidate prompts to roll out (``select_stream`` for GRESO-like
selectors that filter verl's shuffled dataloader stream, ``select_pool`` for DOTS-like ones that rank
the whole pool) and tells it which TransferQueue ``uid`` each chosen prompt got (``submitted``).
``sampler.py`` hands it every group it finds finished in TransferQueue, before verl's DAPO filter
can evict it (``observe``: the ledger gets the group at once), and closes the step once verl's
ReplayBuffer has picked the batch (``finish_step``: filter record, ``selector.tell``, metrics, step
record). Both run in verl's trainer process (the ``TaskRunnerV1`` Ray actor), so the selector's
state lives there; the ledger is a handle to the ledger actor or an in-process ``SqliteLedger``.

Selection, recording, accounting and the metric names are rollsift's pipeline's
(``rollsift.pipeline``, ``rollsift.selection``): every finished group is one event, probes included;
``cost/informative_rollouts`` counts completions in training groups whose correctness varied.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...records import Candidate, Completion, Context, FilterResult, Group, Prompt, zero_variance_share

logger = logging.getLogger(__name__)


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


class Session:
    """rollsift's pipeline (``RolloutPipeline``, without a generator: verl generates) for one verl run:
    the prompt walk over verl's dataloader stream, the ledger, the accounting, the selector's
    ``tell`` and the metrics, under the same names and seeds as rollsift's own trainer."""

    def __init__(self, cfg: Any, selector: Any, ledger: Any, n: int, *, seed: int | None = None) -> None:
        from ...pipeline.rollout_pipeline import RolloutPipeline

        self.cfg, self.ledger, self.n = cfg, ledger, int(n)
        seed = seed if seed is not None else (getattr(cfg, "seed", None) or 0)
        self.pipeline = RolloutPipeline.from_config(cfg, [], ledger, selector=selector, seed=seed, n=self.n,
                                                    max_examined=getattr(cfg, "max_examined", 2.0))
        self.step = 0  # verl's global_steps of the step in progress
        self.round = 0  # selection requests so far in this step (the first batch, then each refill)
        self.epoch = 0  # epoch of the stream at the last selection
        self.inflight: dict[str, _InFlight] = {}
        self._groups: list[tuple[str, Group]] = []  # this step's training groups, as observed
        self.probes: list[Group] = []  # probe groups observed and not yet taken by the trainer
        self._failed = 0

    def context(self, *, epoch: int | None = None, round: int | None = None, purpose: str = "train") -> Context:
        return Context(step=self.step, epoch=self.epoch if epoch is None else epoch,
                       round=self.round if round is None else round, policy_version=max(self.step - 1, 0), n=self.n,
                       purpose=purpose)

    def begin(self, step: int) -> None:
        """Called with verl's global_steps before every selection; a new value starts a new step."""
        if step != self.step:
            self.step, self.round = int(step), 0

    def spent(self, key: str, seconds: float) -> None:
        """Time spent on rollsift's behalf outside the pipeline's calls (reading TransferQueue: ``time/observe``)."""
        self.pipeline.add_time(key, seconds)

    # ------------------------------------------------------------------ selection
    def select_stream(self, pending: deque, budget: int, draw: Callable[[], list[Candidate]],
                      pool_size: int) -> list[Candidate]:
        """``budget`` candidates from verl's dataloader stream through rollsift's prompt walk.

        ``pending`` holds what was drawn and not yet examined (it is the walk's own queue, kept by the
        trainer for its checkpoints); ``draw()`` fetches the next dataloader chunk. Past
        ``max_examined * pool_size`` examined candidates the request is completed unconditionally
        ('fill'): verl's sync ReplayBuffer waits for exactly the number of groups it asked for.
        """
        self.pipeline.use_host_queue(pending, pool_size)

        def fetch(k: int) -> list[Candidate]:
            got = draw()
            if not got:
                raise RuntimeError("the training dataloader yielded no prompts")
            return got

        chosen = self.pipeline.select(budget, self.context(), draw=fetch, fill=True)
        if chosen:
            self.epoch = chosen[-1].epoch
        self.round += 1
        return chosen

    def use_pool(self, pool: Sequence[Prompt]) -> None:
        """The whole training pool, once built (pool-scoped and probing selectors need it)."""
        self.pipeline.use_pool(pool)

    def select_pool(self, pool: Sequence[Prompt], budget: int) -> tuple[list[Prompt], int]:
        """``budget`` prompts a pool-scoped selector (DOTS) ranks highest, and the epoch they count in."""
        if self.pipeline.pool is not pool and [p.id for p in self.pipeline.pool] != [p.id for p in pool]:
            self.use_pool(pool)
        chosen = self.pipeline.select(budget, self.context(), fill=True)
        epoch = chosen[0].epoch if chosen else self.pipeline.pool_consumed // max(len(pool), 1)
        self.epoch = epoch
        self.round += 1
        return [c.prompt for c in chosen], epoch

    def submitted(self, uids: Sequence[str], prompts: Sequence[Prompt], epochs: Sequence[int],
                  purpose: str = "train") -> None:
        rnd = 0 if purpose == "probe" else max(self.round - 1, 0)
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
            if info.purpose == "probe":
                self.probes.append(g)
            else:
                self._groups.append((f.uid, g))
        for (rnd, purpose), groups in by_round.items():
            self.pipeline.record(groups, self.context(round=rnd, purpose=purpose))
        return out

    def tell_probes(self, groups: Sequence[Group]) -> None:
        self.pipeline.tell_probes(groups, self.context(round=0, purpose="probe"))

    def failed(self, uids: Sequence[str]) -> None:
        """Groups verl marked 'failure' (an agent loop raised): not recorded, counted."""
        for uid in uids:
            self.inflight.pop(uid, None)
        self._failed += len(uids)

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
              "filter/verl/zero_variance_frac": zero_variance_share(groups)}
        self.ledger.record_filter("verl", FilterResult(kept=kept, dropped=dropped, metrics=fm), ctx)
        m = self.pipeline.tell(groups, ctx)
        m.update(self.pipeline.step_metrics())
        m.update(fm)
        m["cost/rounds"] = float(self.round)
        m["cost/failed_groups"] = float(self._failed)
        self.ledger.record_step(self.step, m)
        self._groups.clear()
        self._failed = 0
        return m

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"selector": self.pipeline.selector.state_dict(), "epoch": self.epoch,
                "pool_consumed": self.pipeline.pool_consumed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pipeline.selector.load_state_dict(state["selector"])
        self.epoch = int(state["epoch"])
        self.pipeline.pool_consumed = int(state["pool_consumed"])


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
