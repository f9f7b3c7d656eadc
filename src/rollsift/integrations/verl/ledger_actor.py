"""The ledger as a Ray actor: one process owns the SQLite file, every other process holds a handle.

In a verl job the rewards are computed by reward-loop workers on any node and reach the trainer
through TransferQueue; the trainer process writes them to the ledger. The ledger therefore needs
no per-process state anywhere: ``LedgerServer`` owns a ``SqliteLedger`` (the durable record, one
file, crash-safe) inside a named Ray actor pinned to the trainer's node (so the file sits next to
verl's checkpoints), and ``LedgerClient`` implements ``rollsift.protocols.Ledger`` by forwarding
each call to it. A handle pickles, so it can be passed to Ray tasks; any process of the job can
also reach the actor by name (``LedgerClient.connect(name)``), e.g. to read prompt histories.

Calls are synchronous (``ray.get``): writes from one caller are applied in call order, a read sees
every write its caller made before it, and an error in the actor surfaces in the caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ...records import Context, Decision, FilterResult, Group, PromptStats
from .config import LEDGER_NAMESPACE

HEAD_RESOURCE = "node:__internal_head__"  # Ray's custom resource of the head node


class LedgerServer:
    """Owns the run's ``SqliteLedger``; exposes the ``Ledger`` protocol plus rollback and sync."""

    def __init__(self, path: str) -> None:
        from ...ledger import SqliteLedger

        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.ledger = SqliteLedger(self.path)

    def info(self) -> dict[str, Any]:
        import socket

        return {"path": self.path, "attempt": self.ledger.attempt, "steps": len(self.ledger.steps()),
                "host": socket.gethostname(), "pid": os.getpid()}

    def record_selection(self, decisions: Sequence[Decision], ctx: Context) -> None:
        self.ledger.record_selection(decisions, ctx)

    def record_groups(self, groups: Sequence[Group], ctx: Context, purpose: str = "train") -> None:
        self.ledger.record_groups(groups, ctx, purpose)

    def record_filter(self, name: str, result: FilterResult, ctx: Context) -> None:
        self.ledger.record_filter(name, result, ctx)

    def record_use(self, groups: Sequence[Group], replayed: Sequence[bool], ctx: Context) -> None:
        self.ledger.record_use(groups, replayed, ctx)

    def record_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self.ledger.record_step(step, metrics)

    def register_pool(self, prompt_ids: Sequence[str], labels: Sequence[Any] | None = None) -> None:
        self.ledger.register_pool(prompt_ids, labels)

    def rollback(self, after_step: int) -> int:
        return self.ledger.rollback(after_step)

    def get(self, prompt_id: str) -> PromptStats:
        return self.ledger.get(prompt_id)

    def lookup(self, prompt_ids: Sequence[str]) -> Any:
        return self.ledger.lookup(prompt_ids)

    def sync(self) -> None:
        self.ledger.sync()

    def close(self) -> None:
        self.ledger.close()


class LedgerClient:
    """A handle to a ``LedgerServer`` actor that implements ``rollsift.protocols.Ledger``."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def connect(cls, name: str, namespace: str = LEDGER_NAMESPACE) -> LedgerClient:
        """A handle to the running ledger actor called ``name`` (from any process of the Ray job)."""
        import ray

        return cls(ray.get_actor(name, namespace=namespace))

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def info(self) -> dict[str, Any]:
        return self._call("info")

    def record_selection(self, decisions: Sequence[Decision], ctx: Context) -> None:
        if decisions:
            self._call("record_selection", list(decisions), ctx)

    def record_groups(self, groups: Sequence[Group], ctx: Context, purpose: str = "train") -> None:
        if groups:
            self._call("record_groups", list(groups), ctx, purpose)

    def record_filter(self, name: str, result: FilterResult, ctx: Context) -> None:
        self._call("record_filter", name, result, ctx)

    def record_use(self, groups: Sequence[Group], replayed: Sequence[bool], ctx: Context) -> None:
        if groups:
            self._call("record_use", list(groups), list(replayed), ctx)

    def record_step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._call("record_step", int(step), dict(metrics))

    def register_pool(self, prompt_ids: Sequence[str], labels: Sequence[Any] | None = None) -> None:
        self._call("register_pool", list(prompt_ids), None if labels is None else list(labels))

    def rollback(self, after_step: int) -> int:
        return self._call("rollback", int(after_step))

    def get(self, prompt_id: str) -> PromptStats:
        return self._call("get", prompt_id)

    def lookup(self, prompt_ids: Sequence[str]) -> Any:
        return self._call("lookup", list(prompt_ids))

    def sync(self) -> None:
        self._call("sync")

    def close(self) -> None:
        self._call("close")


def start_ledger_actor(path: str, name: str, placement: str = "trainer",
                       namespace: str = LEDGER_NAMESPACE) -> LedgerClient:
    """Start (or join) the ledger actor ``name`` that owns the SQLite file at ``path``.

    ``placement`` 'trainer' pins the actor to the calling process's node (verl's trainer, which writes
    the checkpoints there); 'head' pins it to the Ray head node, a fixed place for the file when the
    trainer may land on another node after a restart. The actor takes no CPU from verl's placement
    groups (``num_cpus=0``) and lives as long as the Ray job. Joining an actor of that name that owns
    another file raises.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    path = os.path.abspath(path)
    if placement == "head":
        where: dict[str, Any] = {"resources": {HEAD_RESOURCE: 0.001}}
    elif placement == "trainer":
        node = ray.get_runtime_context().get_node_id()
        where = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False)}
    else:
        raise ValueError(f"placement must be 'trainer' or 'head', got {placement!r}")
    actor = (
        ray.remote(LedgerServer)
        .options(name=name, namespace=namespace, get_if_exists=True, num_cpus=0, max_restarts=0, **where)
        .remote(path)
    )
    client = LedgerClient(actor)
    owned = client.info()["path"]
    if owned != path:
        raise RuntimeError(
            f"a ledger actor named {name!r} already owns {owned!r}, not {path!r}; give "
            "trainer.v1.sampler.sampler_kwargs.ledger.name a distinct name"
        )
    return client


def open_verl_ledger(settings: Any, path: str) -> Any:
    """The run's ledger at ``path``: a ``LedgerClient`` to the actor (backend 'actor') or a ``SqliteLedger``
    in this process (backend 'driver'); ``settings`` is a ``config.LedgerSettings``."""
    if settings.backend == "actor":
        return start_ledger_actor(path, settings.actor_name(path), settings.placement)
    from ...ledger import SqliteLedger

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return SqliteLedger(path)
