"""Per-prompt state derived from the ledger's events, and the logic both backends share.

``PromptState`` keeps one slot per prompt id (``index[id] -> slot``) and one numpy array [S] per
field, grown by doubling; slot 0 is never written and holds the defaults, so an unknown id maps to
it and ``lookup`` is a dict look-up per id plus one fancy index per field. Group events update it
batch by batch with vectorised code; reopening a run replays the live events through the very same
code (``LedgerBase._rebuild``), so an incremental state and a rebuilt one cannot disagree.

``LedgerBase`` turns records into event rows, keeps the state in step with what was written and
answers history queries; a backend (``MemoryLedger``, ``SqliteLedger``) only stores rows and the
rollback markers. Which events are live is decided by one rule (``cutoffs``): a rollback to step c
that starts attempt b hides every event with step > c written by an attempt before b.
"""

from __future__ import annotations

import json
import math
import struct
from itertools import islice
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..records import PRUNED, PURPOSES, Context, Decision, FilterResult, Group, PromptArrays, PromptStats
from .rows import (_LIGHT, FILTER_COLUMNS, GROUP_COLUMNS, SELECTION_COLUMNS, STEP_COLUMNS, USE_COLUMNS,
                   DecisionRow, FilterRow, GroupRow, StepRow, UseRow)

# Stored columns, in storage order (both backends); every table also has "attempt" and "step".
class PromptState:
    """Derived per-prompt arrays [S]; slot 0 is the defaults row returned for unknown ids."""

    FIELDS: dict[str, tuple[Any, Any]] = {
        "rollouts": (np.int64, 0),  # groups generated, any purpose
        "skips": (np.int64, 0),  # selection decisions with kept False
        "last_accuracy": (np.float64, np.nan),
        "last_step": (np.int64, -1),
        "last_epoch": (np.int64, -1),
        "trailing_all_correct": (np.int64, 0),
        "trailing_all_wrong": (np.int64, 0),
        "all_correct": (np.int64, 0),  # groups with every completion correct
        "all_wrong": (np.int64, 0),  # groups with no completion correct
        "ever_informative": (np.bool_, False),  # some group had mixed correctness
        "registered": (np.bool_, False),  # in the pool given to register_pool
    }

    def __init__(self, capacity: int = 1024) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str | None] = [None]
        self.labels: dict[str, Any] = {}
        for name, (dtype, default) in self.FIELDS.items():
            setattr(self, name, np.full(max(capacity, 2), default, dtype))

    def __len__(self) -> int:
        return len(self.ids) - 1

    def _grow(self, need: int) -> None:
        cap = len(self.rollouts)
        if need <= cap:
            return
        new = cap
        while new < need:
            new *= 2
        for name, (dtype, default) in self.FIELDS.items():
            arr = np.full(new, default, dtype)
            arr[:cap] = getattr(self, name)
            setattr(self, name, arr)

    def slots(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Slots of the ids [P], creating the missing ones."""
        index, ids = self.index, self.ids
        new = [pid for pid in dict.fromkeys(prompt_ids) if pid not in index]
        if new:
            index.update(zip(new, range(len(ids), len(ids) + len(new))))
            ids.extend(new)
            self._grow(len(ids))
        return np.fromiter(map(index.__getitem__, prompt_ids), np.int64, len(prompt_ids))

    def find(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Slots of the ids [P]; 0 (the defaults row) for unknown ids."""
        get = self.index.get
        return np.array([get(pid, 0) for pid in prompt_ids], dtype=np.int64)

    # ------------------------------------------------------------------ updates
    def register(self, prompt_ids: Sequence[str], labels: Sequence[Any] | None = None) -> None:
        slots = self.slots(prompt_ids)  # may grow (replace) the arrays: index them afterwards
        self.registered[slots] = True
        if labels is not None:
            self.labels.update({p: lab for p, lab in zip(prompt_ids, labels) if lab is not None})

    def add_skips(self, prompt_ids: Sequence[str], kept: np.ndarray) -> None:
        slots = self.slots(prompt_ids)
        np.add.at(self.skips, slots[~kept], 1)

    def add_groups(self, prompt_ids: Sequence[str], n: np.ndarray, k: np.ndarray, step: np.ndarray,
                   epoch: np.ndarray) -> None:
        """Groups in event order: ``n`` [B] completions, ``k`` [B] of them correct."""
        if not len(prompt_ids):
            return
        slots = self.slots(prompt_ids)
        u, local = np.unique(slots, return_inverse=True)
        m = len(u)
        pos = np.arange(len(slots))
        last = np.full(m, -1)
        np.maximum.at(last, local, pos)
        acc = k / np.maximum(n, 1)
        all_correct = (k == n) & (n > 0)
        all_wrong = k == 0
        self.rollouts[u] += np.bincount(local, minlength=m)
        self.last_accuracy[u] = acc[last]
        self.last_step[u] = step[last]
        self.last_epoch[u] = epoch[last]
        self.all_correct[u] += np.bincount(local[all_correct], minlength=m)
        self.all_wrong[u] += np.bincount(local[all_wrong], minlength=m)
        self.ever_informative[u] |= np.bincount(local[~all_correct & ~all_wrong], minlength=m) > 0
        for flag, arr in ((all_correct, self.trailing_all_correct), (all_wrong, self.trailing_all_wrong)):
            brk = np.full(m, -1)  # the last group of the batch that broke the streak
            np.maximum.at(brk, local[~flag], pos[~flag])
            after = np.bincount(local[pos > brk[local]], minlength=m)
            arr[u] = np.where(brk >= 0, after, arr[u] + after)

    # ------------------------------------------------------------------ reads
    def stats(self, prompt_id: str) -> PromptStats:
        s = self.index.get(prompt_id, 0)
        if s == 0:
            return PromptStats(prompt_id)
        acc = float(self.last_accuracy[s])
        return PromptStats(
            prompt_id, rollouts=int(self.rollouts[s]), skips=int(self.skips[s]),
            last_accuracy=None if math.isnan(acc) else acc, last_step=int(self.last_step[s]),
            last_epoch=int(self.last_epoch[s]), trailing_all_correct=int(self.trailing_all_correct[s]),
            trailing_all_wrong=int(self.trailing_all_wrong[s]), ever_informative=bool(self.ever_informative[s]),
        )

    def arrays(self, prompt_ids: Sequence[str]) -> PromptArrays:
        s = self.find(prompt_ids)
        return PromptArrays(
            rollouts=self.rollouts[s], skips=self.skips[s], last_accuracy=self.last_accuracy[s],
            last_step=self.last_step[s], trailing_all_correct=self.trailing_all_correct[s],
            trailing_all_wrong=self.trailing_all_wrong[s],
        )

    def column(self, name: str) -> np.ndarray:
        """A field over all known prompts [len(self)], in slot order (``self.ids[1:]``)."""
        return getattr(self, name)[1 : len(self.ids)]


def _json_default(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)


class LedgerBase:
    """Everything but storage. A backend provides ``_append(table, rows)`` (one transaction),
    ``_rows(table, columns, include_rolled_back)`` (tuples of the columns plus a live flag, in write
    order), ``_register(ids, labels)``, ``_pool()``, ``_new_attempt(after_step)``, ``_attempts()``,
    ``set_meta`` / ``get_meta`` and ``close``; and sets ``self.attempt``."""

    attempt: int

    def __init__(self) -> None:
        self._state: PromptState | None = None  # built on first read, then kept in step with writes

    # ------------------------------------------------------------------ Ledger protocol
    def record_selection(self, decisions: Sequence[Decision], ctx: Context) -> None:
        a, step, rnd, epoch = self.attempt, int(ctx.step), int(ctx.round), int(ctx.epoch)
        rows = [(a, step, rnd, epoch, d.prompt_id, int(bool(d.kept)), d.reason, float(d.prob)) for d in decisions]
        self._append("selections", rows)
        if self._state is not None and rows:
            self._state.add_skips([d.prompt_id for d in decisions], np.array([r[5] for r in rows], bool))

    def record_groups(self, groups: Sequence[Group], ctx: Context, purpose: str | None = None) -> None:
        """Every generated group, before filtering. The event's step and round are the context's
        (the step during which it was written, which is what a rollback compares); epoch and
        policy version are the group's own; the purpose is ``ctx.purpose`` unless given."""
        purpose = ctx.purpose if purpose is None else purpose
        if purpose not in PURPOSES:
            raise ValueError(f"record_groups: purpose must be one of {PURPOSES}, got {purpose!r}")
        a, step, rnd = self.attempt, int(ctx.step), int(ctx.round)
        pack, rows = struct.pack, []
        for g in groups:
            r, comps = g.rewards, g.completions
            n = len(r)
            correct = bytes(map(bool, g.correct))
            k = correct.count(1)
            mean = float(sum(r)) / n if n else 0.0
            std = math.sqrt(sum([(x - mean) ** 2 for x in r]) / n) if n else 0.0
            lengths = [len(x.token_ids) for x in comps]  # Completion.num_tokens, without the call
            pruned = [x.status for x in comps].count(PRUNED)
            rows.append((a, step, rnd, int(g.epoch), g.prompt.id, purpose, n, k, k / n if n else 0.0, mean, std,
                         int(g.policy_version), pruned, pack(f"<{n}d", *r), correct,
                         pack(f"<{len(lengths)}i", *lengths)))
        self._append("groups", rows)
        if self._state is not None and rows:
            cols = list(zip(*[(r[4], r[6], r[7], r[3]) for r in rows]))
            self._state.add_groups(cols[0], np.array(cols[1]), np.array(cols[2]), np.full(len(rows), step),
                                   np.array(cols[3]))

    def record_filter(self, name: str, result: FilterResult, ctx: Context) -> None:
        a, step, rnd = self.attempt, int(ctx.step), int(ctx.round)
        rows = [(a, step, rnd, name, g.prompt.id, 1, None, g.n) for g in result.kept]
        rows += [(a, step, rnd, name, pid, 0, str(reason), 0) for pid, reason in result.dropped.items()]
        self._append("filters", rows)

    def record_use(self, groups: Sequence[Group], replayed: Sequence[bool], ctx: Context) -> None:
        """The groups a training step used (``ctx.step``) at the trainer's policy version
        (``ctx.policy_version``): staleness and "trained once" are read from these events."""
        a, step, v = self.attempt, int(ctx.step), int(ctx.policy_version)
        self._append("uses", [(a, step, g.prompt_id, int(g.step), int(g.round), int(g.policy_version), v, int(bool(r)))
                              for g, r in zip(groups, replayed)])

    def record_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        """A training step's metrics. Written last in a step, so backends make it durable (a barrier)."""
        text = json.dumps(dict(metrics), default=_json_default)
        self._append("steps", [(self.attempt, int(step), text)])

    # ------------------------------------------------------------------ run metadata and resume
    def register_pool(self, prompt_ids: Sequence[str], labels: Sequence[Any] | None = None) -> None:
        """The run's prompt pool (idempotent; a later call adds ids and overwrites given labels).

        Labels (e.g. testbed difficulty) are for analysis only; no strategy reads them.
        """
        ids = list(prompt_ids)
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(ids):
                raise ValueError(f"register_pool: {len(ids)} prompt ids but {len(labels)} labels")
        self._register(ids, labels)
        if self._state is not None:
            self._state.register(ids, labels)

    def rollback(self, after_step: int) -> int:
        """Resume from the checkpoint taken at the end of step ``after_step``.

        Appends a rollback marker that starts a new attempt: events with step > after_step written
        by earlier attempts disappear from every reader (state, history, ``show``) but stay stored
        (``include_rolled_back=True``). Returns the new attempt number.
        """
        if isinstance(after_step, bool) or not isinstance(after_step, (int, np.integer)):
            raise TypeError(f"rollback: after_step must be an int, got {after_step!r}")
        self.attempt = self._new_attempt(int(after_step))
        self._state = None
        return self.attempt

    def attempts(self) -> list[tuple[int, int | None]]:
        """(attempt, after_step of the rollback that started it; None for attempt 0), in order."""
        return sorted(self._attempts())

    # ------------------------------------------------------------------ LedgerView
    @property
    def state(self) -> PromptState:
        if self._state is None:
            self._state = self._rebuild()
        return self._state

    def get(self, prompt_id: str) -> PromptStats:
        return self.state.stats(prompt_id)

    def lookup(self, prompt_ids: Sequence[str]) -> PromptArrays:
        return self.state.arrays(prompt_ids)

    def _rebuild(self, chunk: int = 1 << 20) -> PromptState:
        st = PromptState()
        ids, labels = self._pool()
        st.register(ids, labels)
        rows = self._rows("groups", ("prompt_id", "n", "n_correct", "step", "epoch"), False)
        while batch := list(islice(rows, chunk)):
            pid, n, k, step, epoch, _ = zip(*batch)
            st.add_groups(pid, np.array(n), np.array(k), np.array(step), np.array(epoch))
        rows = self._rows("selections", ("prompt_id", "kept"), False)
        while batch := list(islice(rows, chunk)):
            pid, kept, _ = zip(*batch)
            st.add_skips(pid, np.array(kept, bool))
        return st

    # ------------------------------------------------------------------ history
    def groups(self, purpose: str | None = None, *, detail: bool = False,
               include_rolled_back: bool = False) -> Iterator[GroupRow]:
        """Group events in write order (live ones unless ``include_rolled_back``)."""
        cols = GROUP_COLUMNS if detail else _LIGHT
        for r in self._rows("groups", cols, include_rolled_back):
            if purpose is not None and r[5] != purpose:
                continue
            a, step, rnd, epoch, pid, purp, n, k, acc, mean, std, pv, pruned = r[:13]
            extra = ()
            if detail:
                rew, cor, lens = r[13:16]
                extra = (struct.unpack(f"<{n}d", rew), tuple(b != 0 for b in cor),
                         struct.unpack(f"<{len(lens) // 4}i", lens))
            yield GroupRow(step, rnd, epoch, pid, purp, n, k, acc, mean, std, pv, pruned, a, bool(r[-1]), *extra)

    def decisions(self, *, include_rolled_back: bool = False) -> Iterator[DecisionRow]:
        """Selection decisions in write order."""
        for a, step, rnd, epoch, pid, kept, reason, prob, live in self._rows(
                "selections", SELECTION_COLUMNS, include_rolled_back):
            yield DecisionRow(step, rnd, epoch, pid, bool(kept), reason, prob, a, bool(live))

    def filters(self, *, include_rolled_back: bool = False) -> Iterator[FilterRow]:
        for a, step, rnd, name, pid, kept, reason, n, live in self._rows(
                "filters", FILTER_COLUMNS, include_rolled_back):
            yield FilterRow(step, rnd, name, pid, bool(kept), reason, n, a, bool(live))

    def uses(self, *, include_rolled_back: bool = False) -> Iterator[UseRow]:
        """Use events (which groups each step trained on) in write order."""
        for a, step, pid, gs, gr, gv, tv, rep, live in self._rows("uses", USE_COLUMNS, include_rolled_back):
            yield UseRow(step, pid, gs, gr, gv, tv, bool(rep), a, bool(live))

    def steps(self, *, include_rolled_back: bool = False) -> list[StepRow]:
        """Step records in write order; ``row.metrics`` is the dict given to ``record_step``."""
        return [StepRow(step, json.loads(text), a, bool(live))
                for a, step, text, live in self._rows("steps", STEP_COLUMNS, include_rolled_back)]

    def pool(self) -> tuple[list[str], list[Any]]:
        """Registered prompt ids and their labels (None where none was given)."""
        return self._pool()

    # ------------------------------------------------------------------ lifetime
    def sync(self) -> None:
        """Make everything written so far durable (a no-op where nothing is buffered)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # backend hooks
    def _append(self, table: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _rows(self, table: str, columns: Sequence[str], include_rolled_back: bool) -> Iterator[tuple]:
        raise NotImplementedError

    def _register(self, ids: list[str], labels: list[Any] | None) -> None:
        raise NotImplementedError

    def _pool(self) -> tuple[list[str], list[Any]]:
        raise NotImplementedError

    def _new_attempt(self, after_step: int) -> int:
        raise NotImplementedError

    def _attempts(self) -> list[tuple[int, int | None]]:
        raise NotImplementedError
