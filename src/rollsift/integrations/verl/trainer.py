"""``RollsiftTrainerSync``: verl's V1 sync trainer with rollsift's pre-rollout selection and ledger.

Registered with verl as ``trainer.v1.trainer_mode=rollsift_sync`` (``register_trainer``; the
``verl.plugins`` entry point imports this module in every process of a verl job, so verl's
``TaskRunnerV1`` actor finds it). It is ``PPOTrainerSync`` with these overrides, each calling verl's
own method (nothing of verl's is copied but the one line that stamps ``global_steps`` on a batch):

* ``__init__``: verl branches on ``trainer_mode == "sync"`` (which buffer class, ``gen_batch_size``,
  what a checkpoint holds), so the mode is set back to ``sync`` before verl reads it: the run is
  verl's sync mode in every respect but selection.
* ``_build_replay_buffer``: verl builds its own sync ``ReplayBuffer`` (with ``algorithm.filter_groups``,
  verl's DAPO filter, wired as verl wires it); the trainer extends that object into a
  ``RollsiftSampler``, which writes every finished group to the ledger before DAPO can evict it.
* ``_next_train_batch(num_prompts)``: every batch verl submits to rollout, the step's first and each
  DAPO refill (``refill_fn``), passes through the selector. A stream selector (GRESO) examines the
  rows verl's ``_fetch_one_gen_batch`` draws from its shuffled dataloader, in order, and keeps
  unexamined rows for the next request; a pool selector (DOTS) picks dataset rows by index.
* ``prepare_step``: a probing selector's reference prompts are rolled out first, through verl's own
  agent loop (``_submit_batch_to_rollout``), recorded with purpose 'probe', told, and cleared.
* ``_save_checkpoint`` / ``_load_checkpoint``: the selector's state and the unexamined rows go to
  ``rollsift_state.pkl`` in verl's ``global_step_N`` folder (written before verl's own files); on
  resume the ledger is rolled back to step N.

The selector lives in this process (the trainer's, ``TaskRunnerV1``); the ledger is a Ray actor
pinned to this node or, with ``ledger.backend=driver``, a ``SqliteLedger`` here.
"""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...configlib import ConfigError
from ...records import Prompt
from .config import TRAINER_MODE, VerlRollsiftConfig, check_verl_version
from .session import Candidate, Session, prompt_from_row

VERL_VERSION = check_verl_version()
# verl is imported only after the version check, so another verl fails here with a clear message
import verl.utils.tensordict_utils as tu
from omegaconf import open_dict
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.dataset.rl_dataset import collate_fn

from .ledger_actor import open_verl_ledger
from .sampler import RollsiftSampler

logger = logging.getLogger(__name__)

STATE_FILE = "rollsift_state.pkl"
ROW_FIELDS = ["id", "data_source", "extra_info", "reward_model", "raw_prompt"]


@dataclass
class _Pool:
    prompts: list[Prompt]
    index: dict[str, int]  # prompt id -> dataset row


def check_config(config: Any) -> VerlRollsiftConfig:
    """rollsift's knobs from a verl config, and the verl settings the adapter cannot run with."""
    cfg = VerlRollsiftConfig.from_kwargs(config.trainer.v1.sampler.get("sampler_kwargs"))
    rm = config.reward.reward_model
    if rm.get("enable", False) and not rm.get("enable_resource_pool", False):
        raise ConfigError("rollsift reads each group's rewards before verl samples the batch; a colocated reward "
                          "model scores only afterwards: use a rule-based reward or set "
                          "reward.reward_model.enable_resource_pool=True")
    custom = config.trainer.v1.sampler.get("custom_sampler") or {}
    if custom.get("path") or custom.get("name"):
        raise ConfigError(f"{TRAINER_MODE} extends verl's own sync ReplayBuffer (keeping verl's DAPO filter, which "
                          "verl 0.9.1 gives no custom sampler); unset trainer.v1.sampler.custom_sampler")
    pss = config.trainer.v1.get("sync", {}).get("parameter_sync_step", 1)
    if pss != 1:
        raise ConfigError(f"{TRAINER_MODE} needs trainer.v1.sync.parameter_sync_step=1, got {pss}")
    return cfg


@register_trainer(TRAINER_MODE)
class RollsiftTrainerSync(PPOTrainerSync):
    replay_buffer: RollsiftSampler

    def __init__(self, config: Any) -> None:
        self.rollsift_cfg = check_config(config)
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        self._rollsift_pending: deque[Candidate] = deque()  # drawn from the dataloader, not yet examined
        self._rollsift_drawn = 0  # rows drawn from the dataloader so far (epoch = drawn // rows per epoch)
        self._rollsift_pool: _Pool | None = None
        super().__init__(config)

    @property
    def rollsift(self) -> Session:
        return self.replay_buffer.session

    # ------------------------------------------------------------------ construction
    def _build_replay_buffer(self) -> ReplayBuffer:
        return RollsiftSampler.adopt(super()._build_replay_buffer(), self._make_session())

    def _make_session(self) -> Session:
        cfg = self.rollsift_cfg
        path = os.path.abspath(cfg.ledger.path or os.path.join(self.config.trainer.default_local_dir, "rollsift",
                                                               "ledger.sqlite"))
        self._ledger_path = path
        ledger = open_verl_ledger(cfg.ledger, path)
        seed = cfg.seed if cfg.seed is not None else (self.config.data.get("seed") or 0)
        session = Session(cfg, cfg.selector, ledger, n=self.config.actor_rollout_ref.rollout.n, seed=seed)
        logger.info("rollsift: selector %s, ledger %s (%s)", type(session.pipeline.selector).__name__, path, cfg.ledger.backend)
        return session

    def _pool(self) -> _Pool:
        """Every training prompt, in dataset order (built once, from verl's own dataset rows); a selector
        that reads the policy (DOTS's embeddings) is bound to it here."""
        if self._rollsift_pool is None:
            ds = self.train_dataset
            prompts = [prompt_from_row(ds[i]) for i in range(len(ds))]
            self._rollsift_pool = _Pool(prompts, {p.id: i for i, p in enumerate(prompts)})
            self.rollsift.use_pool(prompts)
            if hasattr(self.rollsift.pipeline.selector, "bind"):
                self._bind(self.rollsift.pipeline.selector, prompts)
        return self._rollsift_pool

    def _bind(self, selector: Any, prompts: list[Prompt]) -> None:
        """DOTS embeds the pool once (cached next to the ledger). Its 'policy' encoder needs the starting
        checkpoint, which verl keeps in GPU workers only: it is loaded here, on CPU, once per pool and
        encoder (a local encoder, ``selector.encoder=/path``, or a cache from an earlier run avoids that)."""
        tok = self.tokenizer
        model = None
        if getattr(getattr(selector, "cfg", None), "encoder", "policy") == "policy":
            from transformers import AutoModelForCausalLM
            from verl.utils.fs import copy_to_local

            path = copy_to_local(self.config.actor_rollout_ref.model.path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")

        def encode(p: Prompt) -> list[int]:  # the chat-templated prompt, roughly what verl's agent loop feeds
            text = tok.apply_chat_template(p.as_messages(), add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]

        out = os.path.dirname(self._ledger_path)
        self.rollsift.pipeline.bind(pool=prompts, model=model, tokenizer=tok, encode=encode, out=out, device="cpu")
        del model

    # ------------------------------------------------------------------ selection
    def _next_train_batch(self, num_prompts: int | None = None):
        n = self.config.data.train_batch_size if num_prompts is None else int(num_prompts)
        s = self.rollsift
        s.begin(self.global_steps)
        if s.pipeline.selector.scope == "pool":
            pool = self._pool()
            prompts, epoch = s.select_pool(pool.prompts, n)
            batch = self._rows_batch([pool.index[p.id] for p in prompts])
            epochs = [epoch] * len(prompts)
        else:
            chosen = s.select_stream(self._rollsift_pending, n, self._draw, len(self.train_dataset))
            batch = self._gather(chosen)
            prompts, epochs = [c.prompt for c in chosen], [c.epoch for c in chosen]
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)  # as verl's _next_train_batch does
        s.submitted([str(u) for u in batch["uid"]], prompts, epochs)
        return batch

    def _draw(self) -> list[Candidate]:
        """One chunk from verl's own ``_fetch_one_gen_batch`` (dataloader order, epoch wrap, uids)."""
        rows_per_epoch = max(len(self.train_dataloader) * (self.train_dataloader.batch_size or 1), 1)
        epoch = self._rollsift_drawn // rows_per_epoch
        chunk = super()._fetch_one_gen_batch()
        self._rollsift_drawn += len(chunk)
        return [Candidate(prompt_from_row(row), epoch, (chunk, i)) for i, row in enumerate(_rows(chunk))]

    @staticmethod
    def _gather(chosen: list[Candidate]):
        """One batch of the chosen rows, in order (consecutive rows of a chunk are selected together; a
        chunk taken whole, as every chunk is when DAPO makes verl fetch one prompt at a time, is not copied)."""
        parts, run = [], []

        def take(run: list[Candidate]):
            chunk, idx = run[0].ref[0], [c.ref[1] for c in run]
            return chunk if idx == list(range(len(chunk))) else tu.index_select_tensor_dict(chunk, idx)

        for c in chosen:
            if run and c.ref[0] is not run[-1].ref[0]:
                parts.append(take(run))
                run = []
            run.append(c)
        parts.append(take(run))
        return parts[0] if len(parts) == 1 else tu.concat_tensordict(parts)

    def _rows_batch(self, indices: list[int]):
        """Dataset rows by index, batched the way verl's ``_fetch_one_gen_batch`` batches a dataloader chunk."""
        batch_dict = collate_fn([self.train_dataset[i] for i in indices])
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in indices], dtype=object)
        return tu.get_tensordict(batch_dict)

    def prepare_step(self) -> dict:
        metrics = self._probe() if hasattr(self.rollsift.pipeline.selector, "probe") else {}
        return {**(super().prepare_step() or {}), **metrics}

    def _probe(self) -> dict:
        s = self.rollsift
        s.begin(self.global_steps)
        pool = self._pool()
        pctx = s.context(round=0, purpose="probe")
        prompts = s.pipeline.probe_prompts(pctx)
        if not prompts:
            return {}
        batch = self._rows_batch([pool.index[p.id] for p in prompts])
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        uids = [str(u) for u in batch["uid"]]
        s.submitted(uids, prompts, [s.epoch] * len(prompts), purpose="probe")
        self._submit_batch_to_rollout(batch)
        groups = self.replay_buffer.collect(uids)
        s.tell_probes(groups)
        return {"select/probe_groups": float(len(groups))}

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        self.rollsift_save(folder)  # before verl's files: verl writes latest_checkpointed_iteration.txt last
        super()._save_checkpoint()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        if self.global_steps > 0:
            t = self.config.trainer
            folder = (t.resume_from_path if t.resume_mode == "resume_path"
                      else os.path.join(t.default_local_dir, f"global_step_{self.global_steps}"))
            self.rollsift_load(os.path.abspath(folder), self.global_steps)
        elif _has_history(self.rollsift.ledger):
            logger.warning("rollsift: a fresh run found history in its ledger; rolling it back to step 0")
            self.rollsift.ledger.rollback(0)
        if self.rollsift_cfg.register_pool or self.rollsift.pipeline.selector.scope == "pool":
            self.rollsift.ledger.register_pool([p.id for p in self._pool().prompts])

    def rollsift_save(self, folder: str) -> None:
        self.rollsift.ledger.sync()  # every event of the checkpointed steps is durable before the state is
        pending = [(c.prompt, c.epoch, tu.index_select_tensor_dict(c.ref[0], [c.ref[1]]))
                   for c in self._rollsift_pending]
        state = {"session": self.rollsift.state_dict(), "drawn": self._rollsift_drawn, "pending": pending,
                 "verl": VERL_VERSION}
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, STATE_FILE + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        os.replace(tmp, os.path.join(folder, STATE_FILE))

    def rollsift_load(self, folder: str, step: int) -> None:
        """Resume rollsift at the checkpoint of ``step`` in ``folder``: ledger rolled back, state restored."""
        self.rollsift.ledger.rollback(step)
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            logger.warning("rollsift: no %s in %s; the selector starts afresh", STATE_FILE, folder)
            return
        with open(path, "rb") as f:
            state = pickle.load(f)  # written by rollsift_save of this run; same trust as verl's data.pt
        self.rollsift.load_state_dict(state["session"])
        self._rollsift_drawn = int(state["drawn"])
        self._rollsift_pending = deque(Candidate(p, e, (td, 0)) for p, e, td in state["pending"])


def _rows(chunk: Any) -> list[dict]:
    """Per-row dicts of the prompt fields of a verl batch (a TensorDict of one dataloader chunk)."""
    cols = {f: list(chunk[f]) for f in ROW_FIELDS if f in chunk.keys()}
    return [{f: vals[i] for f, vals in cols.items()} for i in range(len(chunk))]


def _has_history(ledger: Any) -> bool:
    info = getattr(ledger, "info", None)
    if info is not None:
        return bool(info().get("steps", 0))
    return bool(ledger.steps())


__all__ = ["VERL_VERSION", "RollsiftTrainerSync", "check_config"]
