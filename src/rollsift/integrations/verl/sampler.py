"""``RollsiftSampler``: verl's V1 sync ``ReplayBuffer`` that shows every finished group to rollsift.

verl 0.9's V1 trainer takes its training batch from a "sampler", the ``ReplayBuffer`` over
TransferQueue (``trainer.v1.sampler``). Each prompt's ``n`` trajectories land there with their
rewards, computed by reward workers on any node, before the buffer picks the batch; verl's DAPO
filter (``algorithm.filter_groups``) evicts zero-variance groups inside the buffer's polling loop.
This subclass overrides two methods and calls verl's in both:

* ``_sync_metadata_from_transfer_queue`` (the first thing of every poll, before any eviction):
  after verl's, groups that just turned ``finished`` are read from TransferQueue (final output of
  each session: ``rm_scores`` summed, the correctness flag in ``extra_fields.reward_extra_info``,
  the response length tag) and written to the ledger. So the ledger holds every generated group,
  DAPO-evicted ones included, as rollsift's own pipeline does.
* ``sample``: after verl's (which picks, evicts, refills and drains exactly as before), the step is
  closed: the groups verl kept or dropped go to the ledger as filter ``verl``, the selector is told
  every group of the step, and rollsift's metrics join verl's step metrics.

Two ways in. Under the ``rollsift_sync`` trainer (``trainer.py``), the normal way, verl builds its
own sync buffer, DAPO knobs and all, and the trainer extends that very object (``adopt``); selection
happens in the trainer. Named as ``trainer.v1.sampler.custom_sampler`` of verl's stock ``sync``
trainer, verl constructs this class with the custom-sampler arguments; it then records to the ledger
only (verl 0.9.1 gives custom samplers no DAPO knobs and prompts reach rollout without passing
rollsift). Pinned to verl 0.9.1 (``config.SUPPORTED_VERL_VERSIONS``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ...configlib import ConfigError
from .config import CONFIG_KEY, TRAINER_MODE, VerlRollsiftConfig, check_verl_version
from .session import Finished, Session, prompt_from_row

VERL_VERSION = check_verl_version()
# verl is imported only after the version check, so another verl fails here with a clear message
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

logger = logging.getLogger(__name__)

TRAIN = "train"
# Prompt fields a trajectory carries in TransferQueue (AgentLoopWorkerTQ stores the dataset row with
# every output); read only for uids the session did not submit itself. Absent fields are skipped.
IDENTITY_FIELDS = ["id", "data_source", "extra_info", "reward_model", "raw_prompt"]


class RollsiftSampler(ReplayBuffer):
    session: Session

    def __init__(self, trainer_mode: str, trainer_config: Any, max_off_policy_threshold: int | None,
                 max_off_policy_strategy: str, sampler_kwargs: Any, **kwargs: Any) -> None:
        """The custom-sampler constructor verl calls (``PPOTrainer._build_replay_buffer``); records only."""
        super().__init__(trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                         sampler_kwargs, **kwargs)
        if trainer_mode != "sync":
            raise ConfigError(f"RollsiftSampler supports trainer.v1.trainer_mode 'sync' or '{TRAINER_MODE}', "
                              f"got {trainer_mode!r}")
        cfg = VerlRollsiftConfig.from_kwargs(sampler_kwargs)
        if cfg.ledger.path is None:
            raise ConfigError(f"{CONFIG_KEY}.ledger.path is required when RollsiftSampler is a custom sampler of "
                              f"verl's own trainer (e.g. '${{trainer.default_local_dir}}/rollsift/ledger.sqlite')")
        if cfg.selector.type != "uniform":
            logger.warning("rollsift: selector %r needs trainer.v1.trainer_mode=%s; as a custom sampler of verl's "
                           "own trainer RollsiftSampler only records to the ledger", cfg.selector.type, TRAINER_MODE)
        from .ledger_actor import open_verl_ledger

        path = cfg.ledger.path
        ledger = open_verl_ledger(cfg.ledger, path)
        self._attach(Session(cfg, "uniform", ledger, n=0))

    @classmethod
    def adopt(cls, buffer: ReplayBuffer, session: Session) -> RollsiftSampler:
        """A ``RollsiftSampler`` holding the very state of verl's own sync ``buffer`` (DAPO knobs included).

        Nothing of verl's construction logic is repeated: verl decides the arguments, we add rollsift.
        """
        if type(buffer) is not ReplayBuffer:
            raise TypeError(f"adopt expects verl's sync ReplayBuffer, got {type(buffer).__name__}")
        self = cls.__new__(cls)
        self.__dict__.update(vars(buffer))
        self._attach(session)
        return self

    def _attach(self, session: Session) -> None:
        self.session = session
        self._seen: set[str] = set()  # terminal uids already shown to the session

    # ------------------------------------------------------------------ verl's methods, wrapped
    def _sync_metadata_from_transfer_queue(self) -> None:
        super()._sync_metadata_from_transfer_queue()
        self._observe_terminal(TRAIN)

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id != TRAIN:
            return super().sample(global_steps, partition_id, batch_size)
        self.session.begin(global_steps)
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        trained = {key.split("_")[0] for key in batch.keys}
        metrics.update(self.session.finish_step(trained))
        return batch, metrics

    # ------------------------------------------------------------------ probes (DOTS's reference set)
    def collect(self, uids: Sequence[str], timeout_s: float | None = None) -> list:
        """Wait until every uid is terminal, take the probe groups observed meanwhile, clear the uids.

        Used by the trainer for a probing selector's reference prompts, which are rolled out through
        verl's own agent loop but never trained on.
        """
        want, t0 = set(uids), time.monotonic()
        while True:
            self._sync_metadata_from_transfer_queue()
            done = (self.finished_keys[TRAIN] | self.failure_keys[TRAIN]) & want
            if len(done) == len(want):
                break
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"{len(want) - len(done)} of {len(want)} probe prompts still running")
            time.sleep(self.poll_interval)
        self._clear_groups(TRAIN, want)
        groups, self.session.probes = self.session.probes, []
        return groups

    # ------------------------------------------------------------------ reading TransferQueue
    def _observe_terminal(self, partition_id: str) -> None:
        t0 = time.perf_counter()
        done = self.finished_keys[partition_id] - self._seen
        failed = self.failure_keys[partition_id] - self._seen
        if failed:
            self.session.failed(sorted(failed))
        if done:
            self.session.observe(self._read(partition_id, sorted(done)))
        self._seen |= done | failed
        self._seen.intersection_update(self.prompt_global_steps[partition_id])  # forget uids TQ dropped
        self.session.spent("time/observe", time.perf_counter() - t0)

    def _read(self, partition_id: str, uids: list[str]) -> list[Finished]:
        """The final output of every session of each uid, in session order."""
        want = set(uids)
        finals: dict[str, dict[int, tuple[int, str]]] = {uid: {} for uid in uids}
        tags = self.partitions[partition_id]
        for key in tags:
            uid, session, index = key.rsplit("_", 2)
            if uid in want:
                s, i = int(session), int(index)
                if s not in finals[uid] or finals[uid][s][0] < i:
                    finals[uid][s] = (i, key)
        keys = [finals[uid][s][1] for uid in uids for s in sorted(finals[uid])]
        if not keys:
            return []
        fields = ["rm_scores", "extra_fields"]
        if any(uid not in self.session.inflight for uid in uids):
            fields += IDENTITY_FIELDS
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
        if "rm_scores" not in data.keys():  # .keys(): a TensorDict has no `in` membership test
            raise RuntimeError("rollsift needs each trajectory's reward when the sampler runs (rm_scores is "
                               "missing): use a rule-based reward or reward.reward_model.enable_resource_pool=True")
        scores = data["rm_scores"].sum(dim=1).tolist()
        extras = list(data["extra_fields"])
        ident = {f: list(data[f]) for f in IDENTITY_FIELDS if f in fields and f in data.keys()}
        key_row = {k: r for r, k in enumerate(keys)}
        ck, thr = self.session.cfg.correct_key, self.session.cfg.correct_threshold
        out = []
        for uid in uids:
            rows = [key_row[finals[uid][s][1]] for s in sorted(finals[uid])]
            if not rows:
                continue
            correct = []
            for r in rows:
                info = (getattr(extras[r], "data", extras[r]) or {}).get("reward_extra_info", {}) or {}
                if ck not in info:
                    raise RuntimeError(
                        f"reward_extra_info of {keys[r]} has no {ck!r} (keys: {sorted(info)}); return it from the "
                        f"reward function (rollsift.integrations.verl.reward.compute_score returns 'acc') or set "
                        f"{CONFIG_KEY}.correct_key")
                correct.append(float(info[ck]) > thr)
            lengths = tuple(int(tags[keys[r]].get("response_len", 0)) for r in rows)
            prompt = None
            if uid not in self.session.inflight and ident:
                prompt = prompt_from_row({f: vals[rows[0]] for f, vals in ident.items()})
            out.append(Finished(uid, tuple(scores[r] for r in rows), tuple(correct), lengths, prompt))
        return out


__all__ = ["VERL_VERSION", "RollsiftSampler"]
