"""Asynchronous rollouts with bounded staleness (AReaL, arXiv 2505.24298): ``async.enabled = true``.

Two processes, each on its own core with one thread:

* the **rollout process** runs rollsift's pipeline as the synchronous loop does (select, generate,
  score, record to the ledger, filter, refill, replay) with the newest weights it has received, and
  sends each finished batch to the trainer;
* the **trainer** (this process) updates the policy as soon as a batch is ready, then publishes the
  new weights through shared memory (``share_memory_`` tensors and a version counter; no files),
  evaluates, logs and checkpoints.

Staleness (AReaL's eta, ``async.max_staleness``): batch i (trained at step i) may only be started once
the trainer has finished step ``i - 1 - eta``, so its weights are at most eta versions behind the
trainer that uses it; with eta = 0 the rollout process waits for every update and the run is the
synchronous loop. The trainer checks every group generated for the step anyway and drops (and
counts, ``async/stale_dropped_groups``) one that is more than eta versions behind: dropping, not
regenerating, because a regenerated group would come later still and cost a second rollout; the
admission rule makes it rare. Groups carried over by dynamic sampling and replayed groups keep the
bounds they have in the synchronous loop (``dynamic.max_staleness`` steps, ``replay.max_staleness``
versions) and train with the decoupled loss there as here.
Groups behind the trainer's version train with the decoupled PPO loss (``grpo.py``): pi_old is
recomputed under the current weights and each token is weighted by pi_old / pi_behaviour, capped.

Evaluation: a step counts as done for admission only after the trainer has evaluated and logged it,
so the rollout process starts no batch while the trainer evaluates (the benchmarks' train wall time
leaves evaluation out, and must not hide generation in it); a batch already under way goes on.

The rollout process tells its strategies about batch i (``selector.tell``, the pruner's ``observe``)
once it has the weights of step i, before collecting the next batch it starts: right after the update
with eta = 0, as in the synchronous loop; later with eta >= 1 (the selector's metrics in the row of
step i then describe batch i - 1). Every group, selection and filter decision goes to the ledger from
the rollout process; the trainer records which groups each step used and at which of its versions
(``Ledger.record_use``: the staleness histogram of the report).

Resume: a checkpoint of step s holds the trainer's state and the rollout process's state as it was
right after collecting batch s (sent with the batch), with batch s's groups still to be told. Batches
generated after s and never trained on are rolled back in the ledger (their events stay, hidden) and
generated again. Nothing is trained twice, and nothing trained is missing from the ledger. With
eta = 0 a resumed run equals an uninterrupted one; with eta >= 1 it does not bit for bit, because the
regenerated batches s+1..s+eta are sampled with the weights of step s, not with the older ones the
uninterrupted run happened to have (tests/test_async.py pins both).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue as queue_mod
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .. import faults
from ..config import RunConfig
from ..errors import UserError


class AsyncError(UserError):
    """The rollout process failed or stopped delivering batches."""

    exit_code = 1


# ---------------------------------------------------------------------- the trainer (this process)
def train_async(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    from ..records import Context, TrainBatch
    from .learner import batch_advantages
    from .loop import StepOutcome, opened_run, run_steps, summarize_attempt

    eta = cfg.async_.max_staleness
    with opened_run(cfg, resume=resume, overwrite=overwrite) as (run, start), \
            _rollout_process(run, start) as (proc, q, shared, counters, lock):
        observed: dict[str, float] = {}

        def one_step(step: int) -> StepOutcome:
            t0 = time.perf_counter()
            msg = _next_batch(q, proc, cfg.async_.timeout_s, observed)
            waited = time.perf_counter() - t0
            if msg["step"] != step:
                raise AsyncError(f"the rollout process sent batch {msg['step']} for step {step}")
            version = run.learner.policy_version
            groups, replayed, dropped = [], [], 0
            for g, r in zip(msg["groups"], msg["replayed"]):
                if g.step == step and version - g.policy_version > eta:
                    dropped += 1  # generated for this step but more than eta behind the trainer: never trained on
                    continue
                groups.append(g)
                replayed.append(r)
            lags = [version - g.policy_version for g in groups]
            off = [r or lag > 0 or g.step != step for g, r, lag in zip(groups, replayed, lags)]
            ctx = Context(step=step, epoch=msg["epoch"], policy_version=version, n=cfg.n)
            batch = TrainBatch(tuple(groups), batch_advantages(groups, cfg.learner.adv_scale), tuple(off))
            t1 = time.perf_counter()
            metrics = dict(run.learner.update(batch, ctx))
            faults.delay("train")
            metrics["time/train"] = time.perf_counter() - t1
            _publish(run.model, shared, counters, lock, run.learner.policy_version)
            run.ledger.record_use(groups, replayed, ctx)
            metrics.update(msg["metrics"])
            metrics.update(observed)
            observed.clear()
            metrics.update({"time/wait_rollouts": waited, "async/stale_dropped_groups": float(dropped),
                            "async/staleness_mean": sum(lags) / len(lags) if lags else 0.0,
                            "async/staleness_max": float(max(lags, default=0)),
                            "async/lagged_frac": sum(lag > 0 for lag in lags) / max(len(lags), 1)})

            def admit_next() -> None:  # after evaluation: no generation on its time
                counters[0] = step

            snap = msg["snapshot"]
            return StepOutcome(metrics, before_log=admit_next,
                               checkpoint={"pipeline_state": snap["pipeline"], "generator_state": snap["generator"],
                                           "extra": {"async_pending": snap["pending"]}})

        run_steps(run, start, one_step)
    return summarize_attempt(cfg, start)


@contextmanager
def _rollout_process(run: Any, start: int) -> Iterator[tuple[Any, Any, dict, Any, Any]]:
    """The rollout process, started from the run's restored state on the second core, with the weights in
    shared memory; on exit it is stopped and the caller gets its CPU affinity back."""
    from ..configlib import to_dict

    cfg, eta = run.cfg, run.cfg.async_.max_staleness
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    proc = None
    try:
        saved = run.restored_state or {}
        start_state = {"pipeline": run.pipeline.state_dict(), "generator": run.generator.state_dict(),
                       "pending": saved.get("async_pending")}
        _pin(cores[0])
        mp = torch.multiprocessing.get_context("spawn")
        shared = {k: v.detach().to("cpu", copy=True).share_memory_() for k, v in run.model.state_dict().items()}
        # counters: [trainer steps done, weights version published]
        counters = mp.Array("q", [start, run.learner.policy_version])
        lock, q = mp.Lock(), mp.Queue(maxsize=eta + 2)
        proc = mp.Process(target=_rollout_main, name="rollsift-rollouts", daemon=True,
                          args=(to_dict(cfg), shared, counters, lock, q, start, start_state,
                                cores[1 % len(cores)]))
        with _main_not_reimported():
            proc.start()
        yield proc, q, shared, counters, lock
    finally:
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(10)
        if hasattr(os, "sched_setaffinity"):  # the caller (a notebook, a test session) gets its cores back
            os.sched_setaffinity(0, cores)


def may_start(step: int, consumed: int, eta: int) -> bool:
    """Admission (AReaL's staleness control): batch ``step`` is trained at step ``step`` by a trainer that
    has then done ``step - 1`` updates; started once ``consumed`` (updates done) reaches ``step - 1 - eta``,
    with the newest weights, it is at most eta versions behind when used."""
    return consumed >= step - 1 - eta


def _next_batch(q: Any, proc: Any, timeout_s: float, observed: dict[str, float]) -> dict[str, Any]:
    """The next batch message; observation reports met on the way are merged into ``observed``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            msg = pickle.loads(q.get(timeout=1.0))
        except queue_mod.Empty:
            if not proc.is_alive():
                raise AsyncError(f"the rollout process stopped (exit code {proc.exitcode}); the run can be "
                                 f"resumed from its last checkpoint with --resume") from None
            if time.monotonic() > deadline:
                raise AsyncError(f"no batch from the rollout process for {timeout_s:.0f} s (async.timeout_s)") from None
            continue
        if msg["kind"] == "error":
            raise AsyncError(f"the rollout process failed: {msg['error']}")
        if msg["kind"] == "observed":
            observed.update(msg["metrics"])
            continue
        return msg


def _publish(model: Any, shared: dict, counters: Any, lock: Any, version: int) -> None:
    """Copy the trainer's weights into shared memory, then let the rollout process know."""
    with torch.no_grad(), lock:
        for k, v in model.state_dict().items():
            shared[k].copy_(v.detach().to("cpu"))
        counters[1] = version


class _main_not_reimported:
    """A spawned child imports the parent's main module (a script's top level runs again, a training
    script without a ``__main__`` guard would train twice). The rollout process needs nothing from it:
    hide it while the child starts."""

    def __enter__(self) -> None:
        import sys

        self.main = sys.modules["__main__"]
        self.saved = {k: getattr(self.main, k) for k in ("__file__", "__spec__") if hasattr(self.main, k)}
        for k in self.saved:
            if k == "__spec__":
                self.main.__spec__ = None
            else:
                delattr(self.main, k)

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            setattr(self.main, k, v)


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {core})
        except OSError:
            pass


# ---------------------------------------------------------------------- the rollout process
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the trainer dies (a killed trainer must not leave a producer)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _rollout_main(cfg_data: dict, shared: dict, counters: Any, lock: Any, q: Any, start: int,
                  start_state: dict, core: int) -> None:
    _die_with_parent()
    _pin(core)
    torch.set_num_threads(1)
    try:
        _produce(cfg_data, shared, counters, lock, q, start, start_state)
    except BaseException as e:  # noqa: BLE001 - reported to the trainer, which fails with it
        import traceback

        q.put(pickle.dumps({"kind": "error", "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"}))
        raise


def _produce(cfg_data: dict, shared: dict, counters: Any, lock: Any, q: Any, start: int, start_state: dict) -> None:
    from ..ledger import open_ledger
    from ..rundir import RunDir
    from .assembly import assemble_rollouts, load_data, seed_everything

    cfg = RunConfig.from_data(cfg_data)
    eta = cfg.async_.max_staleness
    seed_everything(cfg.seed)
    train, _ = load_data(cfg)
    rundir = RunDir(cfg.out)
    ledger = open_ledger(rundir.ledger_path)
    r = assemble_rollouts(cfg, train, ledger, rundir.path)  # the same assembly as the trainer's, in this process
    model, device, generator, stats, pipeline = r.model, r.device, r.generator, r.reward_stats, r.pipeline
    pipeline.load_state_dict(start_state["pipeline"])
    generator.load_state_dict(start_state["generator"])
    pending = start_state.get("pending")  # (collected, ctx) of the last batch, not yet told to the strategies
    version = -1
    for step in range(start + 1, cfg.steps + 1):
        while not may_start(step, counters[0], eta):
            time.sleep(0.002)
        faults.delay("rollouts")
        if counters[1] != version:
            with torch.no_grad(), lock:
                model.load_state_dict({k: v.to(device) for k, v in shared.items()})
                version = int(counters[1])
        if pending is not None:
            done, dctx = pending
            q.put(pickle.dumps({"kind": "observed", "step": dctx.step, "metrics": pipeline.observe(done, dctx)}))
        ctx = pipeline.context(step, version)
        stats.reset()
        collected = pipeline.collect(ctx)
        pending = (collected, ctx)
        snapshot = {"pipeline": pipeline.state_dict(), "generator": generator.state_dict(), "pending": pending}
        # pickled here, tensors by value: a queue of thousands of shared tensors would exhaust file handles
        q.put(pickle.dumps({"kind": "batch", "step": step, "epoch": ctx.epoch, "groups": list(collected.groups),
                            "replayed": list(collected.replayed),
                            "metrics": {**collected.metrics, **stats.metrics()}, "snapshot": snapshot},
                           protocol=pickle.HIGHEST_PROTOCOL))
    ledger.close()


__all__ = ["AsyncError", "train_async"]
