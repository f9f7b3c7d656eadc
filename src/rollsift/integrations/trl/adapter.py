"""rollsift inside TRL's ``GRPOTrainer``: prompt selection, the ledger, group filters, metrics.

Pinned to ``trl==1.16.0`` (``SUPPORTED_TRL_VERSIONS``): the adapter wraps private methods of
``GRPOTrainer`` that change between releases, so importing it with another TRL raises, unless
``ROLLSIFT_TRL_UNSUPPORTED_OK=1`` is set. Switching it on::

    from rollsift.integrations.trl import RollsiftConfig, RollsiftGRPOTrainer, RollsiftReward, to_trl_dataset

    trainer = RollsiftGRPOTrainer(
        model=path, args=GRPOConfig(...), train_dataset=to_trl_dataset(prompts),
        reward_funcs=[RollsiftReward(MathReward())],
        rollsift=RollsiftConfig(selector="greso", filters=("dynamic",), ledger="out/ledger.sqlite"),
    )

Where it hooks in. Every override calls TRL's own method and edits its input or its output;
no TRL method body is copied (TRL removed a replay-buffer trainer whose copy had drifted).

* ``_generate_and_score_completions(inputs)``, before TRL: the unique prompts of the global
  generation batch (every ``num_generations``-th row, gathered from all processes) are the
  selector's candidates; skipped ones are replaced by candidates from the adapter's own epoch
  stream (seeded identically on every process), keeping the number of unique prompts and the
  ``[p0]*G + [p1]*G + ...`` layout TRL's advantage code relies on. A pool-scoped selector (DOTS)
  picks from the whole pool; a probing one gets its reference prompts rolled out by TRL's own
  ``_generate`` first.
* ``_calculate_rewards``: TRL gathers every process's rewards to every process; the adapter keeps
  them. After TRL, the adapter gathers the completions and the correctness flags that
  ``RollsiftReward`` recorded, writes one ledger group per prompt (on every process, so every
  process's ledger replica and every selector decision agree), runs the filters and tells the
  selector.
* Filtering keeps tensor shapes: a dropped row (a zero-variance group, a completion PODS leaves
  out) gets advantage 0 and an all-zero ``completion_mask`` (as TRL's own
  ``mask_truncated_completions`` does), and ``num_items_in_batch`` is recounted over kept tokens,
  so token-mean losses (``dapo``, the default; ``cispo``, ``vespo``) average over kept tokens only.
  Shapes stay because ``split_tensor_dict`` silently drops leftover rows and the advantage code
  assumes ``G`` rows per prompt. PODS groups get their advantages recomputed on the kept subset
  (TRL's formula, ``scale_rewards`` respected).
* ``_compute_loss``: with one process, filtered rows are sliced out of the micro-batch before TRL's
  loss (their forward/backward is saved; the loss is the same). Row-mean losses (``grpo``,
  ``dr_grpo``, ``sapo``, ``luspo``) are rescaled so that they average over kept rows, not over all.
* ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the strategies' state goes to
  ``rollsift_state.json`` in the checkpoint; on resume the ledger is rolled back to it.

What does not carry over from rollsift's own pipeline: TRL generates once per generation batch,
so dynamic sampling cannot refill (``max_rounds``, ``carry_over`` and ``at_cap`` are unused; a
filtered batch trains on fewer groups); rollout pruning (a ``RolloutPruner``) is not available
because neither TRL generation path lets a caller stop sequences mid-flight. See
docs/integrations/trl.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ...configlib import ConfigError, doc
from ...records import LENGTH, STOP, Candidate, Completion, Context, Group, Prompt, zero_variance_share

SUPPORTED_TRL_VERSIONS = ("1.16.0",)
VERSION_OVERRIDE_ENV = "ROLLSIFT_TRL_UNSUPPORTED_OK"


def _check_trl_version() -> str:
    import trl

    found = getattr(trl, "__version__", "unknown")
    if found not in SUPPORTED_TRL_VERSIONS and os.environ.get(VERSION_OVERRIDE_ENV) != "1":
        raise ImportError(
            f"rollsift.integrations.trl is tested with trl=={' or '.join(SUPPORTED_TRL_VERSIONS)} and wraps "
            f"private GRPOTrainer methods that change between releases; found trl=={found}. Install the pinned "
            f"version (pip install trl==1.16.0, or rollsift's extra: pip install '/path/to/rollsift[trl]'), or set "
            f"{VERSION_OVERRIDE_ENV}=1 to try this one anyway."
        )
    return found


TRL_VERSION = _check_trl_version()

from accelerate.utils import gather_object  # noqa: E402  (after the version check, on purpose)
from trl import GRPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

KEEP_KEY = "rollsift_keep"  # per-row keep flags [B] carried in TRL's batch dict to _compute_loss
STATE_FILE = "rollsift_state.json"
ROW_MEAN_LOSSES = ("grpo", "dr_grpo", "sapo", "luspo")  # normalised by the number of rows
# Per-row tensors of TRL's batch dict ([B, ...]); with anything else present rows are not sliced.
_PER_ROW = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "old_per_token_logps",
            "ref_per_token_logps", "sampling_per_token_logps", "importance_sampling_ratio", "tool_mask",
            "token_type_ids", "mm_token_type_ids"}
_SCALAR = {"num_items_in_batch"}
from .data import _TRL_REWARD_KWARGS, RollsiftReward, _prompt_record, content_id, to_trl_dataset  # noqa: E402,F401


@dataclass
class RollsiftConfig:
    """What the adapter does inside ``GRPOTrainer``; the defaults change nothing but keep a ledger."""

    selector: Any = doc(
        "A PromptSelector, a selector config (e.g. GresoConfig(p_easy=0.3)) or a registry name "
        "('uniform', 'greso', 'dots'); None rolls out TRL's prompts as drawn.", None)
    filters: Sequence[Any] = doc(
        "Post-rollout filters, applied in order: GroupFilter objects, their configs, or registry names "
        "('dynamic' drops zero-variance groups, 'pods' down-samples each group).", ())
    ledger: Any = doc(
        "A rollsift Ledger, a path (a SQLite file, opened with rollsift.ledger.open_ledger on the main process; "
        "other processes keep in-memory replicas; with several processes give a path, not an object), or None "
        "for an in-memory ledger.", None)
    id_column: str = doc("Dataset column with stable prompt ids; without it ids are content hashes of 'prompt'.", "id")
    answer_column: str = doc("Dataset column with the gold answer (for the prompt records).", "answer")
    correct_threshold: float | None = doc(
        "Used only when no RollsiftReward is among the reward functions: a completion counts as correct when "
        "its weighted total reward is >= this.", None)
    drop_filtered_rows: bool = doc(
        "With one process, leave filtered rows out of the loss's forward/backward (same loss, less compute).", True)
    seed: int | None = doc("Seed of the strategies and of the replacement stream; None uses GRPOConfig.seed.", None)
    max_examined: float = doc(
        "Cap on candidates a selector may examine per generation batch, in multiples of the pool size; past it "
        "the batch is completed with skipped candidates (decision reason 'fill').", 2.0)

    def __post_init__(self) -> None:
        if not self.max_examined > 0:
            raise ConfigError(f"rollsift.max_examined must be > 0, got {self.max_examined!r}")
        if isinstance(self.filters, (str, bytes)) or not isinstance(self.filters, Sequence):
            raise ConfigError(f"rollsift.filters must be a list, e.g. ['dynamic'], got {self.filters!r}")


# ---------------------------------------------------------------------------------- the adapter


def _open_ledger(spec: Any, is_main: bool) -> Any:
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return spec
    from ...ledger import MemoryLedger, open_ledger

    return open_ledger(spec) if spec is not None and is_main else MemoryLedger()




class TRLRollsift:
    """The adapter's state and logic; ``trainer.rollsift`` holds one. Every process runs the same
    decisions on the same (gathered) data, so nothing here is broadcast. Selection, the ledger, the
    filter chain, the accounting and the strategies' seeds are rollsift's ``RolloutPipeline``'s."""

    def __init__(self, trainer: GRPOTrainer, cfg: RollsiftConfig) -> None:
        from ...pipeline.rollout_pipeline import RolloutPipeline

        self.t, self.cfg = trainer, cfg
        args = trainer.args
        seed = args.seed if cfg.seed is None else cfg.seed
        self.G = trainer.num_generations
        self.ledger = _open_ledger(cfg.ledger, trainer.accelerator.is_main_process)
        self.reward = next((f for f in trainer.reward_funcs if isinstance(f, RollsiftReward)), None)
        self._check_data(trainer)
        self.pool, self.index = self._read_pool(trainer.train_dataset)
        self.by_id = {p.id: p for p in self.pool}
        self.selecting = cfg.selector is not None  # None: TRL's prompts are rolled out as drawn
        self.pipeline = RolloutPipeline.from_config(cfg, self.pool, self.ledger, seed=seed, n=self.G, batch_size=0,
                                                    selector=cfg.selector or "uniform")
        self._check(trainer)
        if hasattr(self.ledger, "register_pool"):
            self.ledger.register_pool([p.id for p in self.pool])
        self._bind(trainer)
        # rollsift's step: one per generation batch (TRL's global_step in TRL's default layout)
        self.generation = 0
        self.totals = {"rollouts": 0, "groups": 0, "informative_groups": 0, "kept_rows": 0, "probe_rollouts": 0}
        self.kept_rows = 0  # kept rows of the current generation batch, all processes
        self._captured: dict[str, Any] | None = None
        self._batch: dict[str, Any] | None = None


    # ------------------------------------------------------------------ setup
    def _check_data(self, t: GRPOTrainer) -> None:
        from datasets import Dataset

        if not isinstance(t.train_dataset, Dataset):
            raise ValueError(f"the rollsift adapter needs a map-style datasets.Dataset (it fetches replacement prompts "
                             f"by index); got {type(t.train_dataset).__name__}")
        if "prompt" not in t.train_dataset.column_names:
            raise ValueError(f"the train dataset needs a 'prompt' column; it has {t.train_dataset.column_names}")
        if self.reward is None and self.cfg.correct_threshold is None:
            raise ValueError("the ledger and the filters need per-completion correctness: add a RollsiftReward to "
                             "reward_funcs, or set RollsiftConfig.correct_threshold")

    def _check(self, t: GRPOTrainer) -> None:
        selector = self.pipeline.selector
        if getattr(selector, "scope", "stream") not in ("stream", "pool"):
            raise ValueError(f"selector scope must be 'stream' or 'pool', got {selector.scope!r}")
        for f in self.pipeline.filters:
            m = getattr(getattr(f, "cfg", None), "m", None)
            if f.name == "pods" and m is not None and m >= self.G:
                raise ValueError(f"pods.m={m} must be smaller than num_generations={self.G} (PODS keeps m of them)")
            if f.name == "pods" and t.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError("PODS recomputes advantages on the kept rewards; it needs "
                                 "multi_objective_aggregation='sum_then_normalize'")
        if self.pipeline.filters and t.loss_type in ROW_MEAN_LOSSES and (t._entropy_bonus_enabled or t.aux_loss_enabled):
            raise ValueError(f"loss_type={t.loss_type!r} with filters is renormalised by rescaling the loss, which "
                             "would also rescale the entropy bonus / router aux loss; use loss_type='dapo' or turn "
                             "those off")

    def _bind(self, t: GRPOTrainer) -> None:
        """Strategies that read the policy (DOTS embeds the pool) get TRL's model, tokenizer and prompts
        as TRL renders them; caches go to the trainer's output directory."""
        tok = t.processing_class
        model = t.accelerator.unwrap_model(t.model)

        def encode(p: Prompt) -> list[int]:  # the prompt as TRL renders it: chat template for messages
            if p.messages is not None and getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(p.as_messages(), add_generation_prompt=True, tokenize=False)
            else:
                text = p.text if p.text is not None else p.as_messages()[-1]["content"]
            return list(tok(text, add_special_tokens=False)["input_ids"])

        self.pipeline.bind(model=model, tokenizer=tok, encode=encode, out=t.args.output_dir,
                           device=next(model.parameters()).device)

    def _read_pool(self, ds: Any) -> tuple[list[Prompt], dict[str, int]]:
        cols = [c for c in (self.cfg.id_column, "prompt", self.cfg.answer_column) if c in ds.column_names]
        pool, index = [], {}
        for i, row in enumerate(ds.select_columns(cols)):
            pid = self.row_id(row)
            if pid in index:
                continue  # duplicate prompts share one id and one history
            index[pid] = i
            pool.append(_prompt_record(pid, row["prompt"], row.get(self.cfg.answer_column, ""), {}))
        return pool, index

    def row_id(self, row: Mapping[str, Any]) -> str:
        v = row.get(self.cfg.id_column)
        return str(v) if v is not None else content_id(row["prompt"])

    # ------------------------------------------------------------------ before generation
    def before_generation(self, inputs: list[dict]) -> list[dict]:
        t, acc, G = self.t, self.t.accelerator, self.G
        local_ids = [self.row_id(x) for x in inputs]
        global_ids = gather_object(local_ids) if acc.num_processes > 1 else local_ids
        _check_layout(global_ids, G, "TRL's sampler")
        ctx = Context(step=self.generation, epoch=int(t.state.epoch or 0), policy_version=t.state.global_step, n=G)
        metrics: dict[str, float] = {}
        probes = self._probe(ctx, metrics) if hasattr(self.pipeline.selector, "probe") else []
        cands = [self.by_id[pid] for pid in global_ids[::G]]
        if self.selecting:
            chosen, epochs = self._select(cands, ctx, metrics)
        else:
            chosen, epochs = cands, [ctx.epoch] * len(cands)
        self._batch = {"ctx": ctx, "chosen": chosen, "epochs": epochs, "metrics": metrics, "probes": probes}
        # The same global list on every process; each keeps its slice, as TRL's sampler would have.
        by_id = dict(zip(local_ids, inputs))
        keys = list(inputs[0].keys())
        rows = [self._row(p.id, by_id, keys) for p in chosen for _ in range(G)]
        n = len(inputs)
        return rows[acc.process_index * n:(acc.process_index + 1) * n]

    def _row(self, pid: str, local: Mapping[str, dict], keys: list[str]) -> dict:
        if pid in local:
            return local[pid]
        row = self.t.train_dataset[self.index[pid]]
        return {k: row[k] for k in keys} if all(k in row for k in keys) else dict(row)

    def _select(self, cands: list[Prompt], ctx: Context, m: dict) -> tuple[list[Prompt], list[int]]:
        """``len(cands)`` distinct prompts through rollsift's prompt walk: TRL's candidates first, then
        the adapter's epoch stream (a pool-scoped selector picks from the whole pool); past the walk's
        limit the batch is completed unconditionally ('fill'), as TRL needs a full batch."""
        pipe = self.pipeline
        # TRL's prompts are examined first and fill a short pick; the unexamined ones do not wait
        picked = pipe.select(len(cands), ctx, fill=True, host=[Candidate(p, ctx.epoch) for p in _distinct(cands)])
        given = {p.id for p in cands}
        m.update(pipe.selection_metrics())
        m["select/replaced"] = float(sum(c.prompt.id not in given for c in picked))
        return [c.prompt for c in picked], [c.epoch for c in picked]

    def _probe(self, ctx: Context, m: dict) -> list[Group]:
        """A probing selector's reference prompts, rolled out by TRL's ``_generate`` and scored by TRL's
        ``_calculate_rewards`` (both called, not copied), recorded with purpose 'probe', then told."""
        t, acc, G = self.t, self.t.accelerator, self.G
        pctx = replace(ctx, purpose="probe")
        prompts = self.pipeline.probe_prompts(pctx)
        if not prompts:
            return []
        k = len(prompts)
        while (k * G) % acc.num_processes:  # whole groups per process layout; extra copies are ignored
            k += 1
        padded = prompts + [prompts[-1]] * (k - len(prompts))
        rows = [self.t.train_dataset[self.index[p.id]] for p in padded for _ in range(G)]
        n = len(rows) // acc.num_processes
        local = rows[acc.process_index * n:(acc.process_index + 1) * n]
        out = t._generate([r["prompt"] for r in local])
        completion_ids, completions = out[1], out[3]
        t._calculate_rewards(local, [r["prompt"] for r in local], completions, completion_ids)
        groups = self._groups(padded, [ctx.epoch] * len(padded), pctx)[: len(prompts)]
        self.pipeline.record(groups, pctx)
        self.pipeline.tell_probes(groups, pctx)
        self.totals["probe_rollouts"] += len(prompts) * G
        return groups

    # ------------------------------------------------------------------ after generation
    def capture(self, completions: list, completion_ids: list, rewards_per_func: torch.Tensor) -> None:
        """Called from ``_calculate_rewards`` with the local completions and TRL's gathered rewards."""
        eos = set(self.t.eos_token_ids) | {self.t._tokenizer.pad_token_id}
        correct = list(self.reward.last_correct) if self.reward is not None else None
        self._captured = {"completions": completions, "ids": completion_ids, "rewards": rewards_per_func,
                          "status": [STOP if ids and ids[-1] in eos else LENGTH for ids in completion_ids],
                          "correct": correct}

    def _groups(self, prompts: list[Prompt], epochs: list[int], ctx: Context) -> list[Group]:
        """One Group per prompt from the captured (local) completions and (global) rewards."""
        t, cap, G = self.t, self._captured, self.G
        if cap is None:
            raise RuntimeError("TRL's _calculate_rewards was not called for this batch; the adapter cannot see rewards")
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in cap["completions"]]
        local = list(zip(map(tuple, cap["ids"]), texts, cap["status"], cap["correct"] or [None] * len(texts)))
        rows = gather_object(local) if t.accelerator.num_processes > 1 else local
        total = self._total_rewards(cap["rewards"])  # [B] float
        if cap["correct"] is None:
            correct = [bool(r >= self.cfg.correct_threshold) for r in total.tolist()]
        else:
            correct = [bool(r[3]) for r in rows]
        rewards = torch.nan_to_num(total, nan=0.0).tolist()
        if len(rows) != len(prompts) * G:
            raise RuntimeError(f"broken group layout: {len(rows)} completions for {len(prompts)} prompts x {G}")
        groups = []
        for k, p in enumerate(prompts):
            s = slice(k * G, (k + 1) * G)
            comps = tuple(Completion(p.id, i, ids, text, status=st, policy_version=ctx.policy_version)
                          for i, (ids, text, st, _) in enumerate(rows[s]))
            groups.append(Group(prompt=p, completions=comps, rewards=tuple(rewards[s]), correct=tuple(correct[s]),
                                step=ctx.step, round=ctx.round, policy_version=ctx.policy_version,
                                epoch=epochs[k]))
        self._captured = None
        return groups

    def _total_rewards(self, rpf: torch.Tensor) -> torch.Tensor:
        """TRL's weighted sum of the reward functions [B, F] -> [B]; NaN where every function returned None."""
        w = self.t.reward_weights.to(rpf.device)
        total = (rpf * w.unsqueeze(0)).nansum(dim=1)
        total[torch.isnan(rpf).all(dim=1)] = torch.nan
        return total

    def after_generation(self, output: dict[str, Any]) -> dict[str, Any]:
        t, b, pipe = self.t, self._batch, self.pipeline
        ctx, chosen, m = b["ctx"], b["chosen"], b["metrics"]
        rpf = self._captured["rewards"] if self._captured is not None else None
        groups = self._groups(chosen, b["epochs"], ctx)
        pipe.record(groups, ctx)
        survivors = pipe.filter(groups, ctx)
        m.update(pipe.tell(groups, ctx))
        if self.pipeline.filters:
            output = self._apply_keep(output, groups, survivors, rpf)
        else:
            self.kept_rows = len(groups) * self.G
        m.update(pipe.step_metrics())
        self._account(groups, m)
        self.ledger.record_step(ctx.step, {**m, "trl/global_step": float(t.state.global_step)})
        for k, v in m.items():
            t._metrics["train"][k].append(float(v))
        self.generation += 1
        self._batch = None
        return output

    def _apply_keep(self, output: dict, groups: list[Group], kept: list[Group], rpf: torch.Tensor) -> dict:
        """Zero the advantages and the completion mask of filtered rows; PODS subsets get their own
        advantages; ``num_items_in_batch`` counts kept tokens only."""
        acc, G = self.t.accelerator, self.G
        B = len(groups) * G
        keep = torch.zeros(B, dtype=torch.bool)
        recompute: list[list[int]] = []
        slot: dict[str, list[int]] = {}
        for k, g in enumerate(groups):
            slot.setdefault(g.prompt_id, []).append(k)
        for g in kept:  # filters keep order; a prompt id names its group position(s) in that order
            k = slot[g.prompt_id].pop(0)
            rows = [k * G + c.index for c in g.completions]
            keep[rows] = True
            if 0 < len(rows) < G:
                recompute.append(rows)
        n = len(output["advantages"])
        lo = acc.process_index * n
        keep_local = keep[lo:lo + n].to(output["advantages"].device)
        adv = torch.where(keep_local, output["advantages"], torch.zeros_like(output["advantages"]))
        if recompute:
            new = self._subset_advantages(self._total_rewards(rpf), recompute, keep)
            for rows in recompute:
                for r in rows:
                    if lo <= r < lo + n:
                        adv[r - lo] = new[r].to(adv.dtype)
        out = dict(output)
        out["advantages"] = adv
        out["completion_mask"] = output["completion_mask"] * keep_local.unsqueeze(1).to(output["completion_mask"].dtype)
        loss_mask = out["completion_mask"]
        if output.get("tool_mask") is not None:
            out["tool_mask"] = output["tool_mask"] * keep_local.unsqueeze(1).to(output["tool_mask"].dtype)
            loss_mask = loss_mask * out["tool_mask"]
        out["num_items_in_batch"] = acc.gather(loss_mask.sum()).sum()
        out[KEEP_KEY] = keep_local
        self.kept_rows = int(keep.sum())
        return out

    def _subset_advantages(self, total: torch.Tensor, subsets: list[list[int]], keep: torch.Tensor) -> torch.Tensor:
        """TRL's advantage formula applied to each kept subset: (r - mean) / (std + 1e-4) with
        ``scale_rewards='group'``, r - mean with 'none', the kept batch's std with 'batch'."""
        out = torch.zeros_like(total)
        scale = self.t.scale_rewards
        batch_std = nanstd(total[keep.to(total.device)]) if scale == "batch" else None
        for rows in subsets:
            r = total[rows]
            a = r - torch.nanmean(r)
            if scale == "group":
                a = a / (nanstd(r) + 1e-4)
            elif scale == "batch":
                a = a / (batch_std + 1e-4)
            out[rows] = torch.nan_to_num(a, nan=0.0)
        return out

    def _account(self, groups: list[Group], m: dict) -> None:
        """TRL-side totals beside the pipeline's per-step ``cost/*``: what the adapter's run has spent
        per informative group so far, and the share of rows the loss kept."""
        informative = sum(not g.is_zero_variance for g in groups)
        T = self.totals
        T["rollouts"] += sum(g.n for g in groups)
        T["groups"] += len(groups)
        T["informative_groups"] += informative
        T["kept_rows"] += self.kept_rows
        total = T["rollouts"] + T["probe_rollouts"]
        m.update({
            "cost/groups": float(len(groups)), "cost/informative_groups": float(informative),
            "cost/zero_variance_frac": zero_variance_share(groups),
            "batch/kept_rows_frac": self.kept_rows / max(len(groups) * self.G, 1),
            "cost/total_rollouts": float(total), "cost/total_informative_groups": float(T["informative_groups"]),
        })
        if T["informative_groups"]:  # undefined (not logged) until the first informative group
            m["cost/rollouts_per_informative_group"] = total / T["informative_groups"]

    # ------------------------------------------------------------------ loss
    def loss_inputs(self, inputs: dict, keep: torch.Tensor) -> tuple[dict, int]:
        """TRL's micro-batch without the keep flags, and without filtered rows when that is safe."""
        inputs = {k: v for k, v in inputs.items() if k != KEEP_KEY}
        can_slice = (self.cfg.drop_filtered_rows and self.t.accelerator.num_processes == 1
                     and set(inputs) <= _PER_ROW | _SCALAR)
        if not can_slice or bool(keep.all()):
            return inputs, len(keep)
        idx = keep.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            idx = torch.zeros(1, dtype=torch.long, device=keep.device)  # one fully masked row: a zero loss with a graph
        return {k: (v[idx] if k in _PER_ROW and v is not None else v) for k, v in inputs.items()}, int(idx.numel())

    def loss_scale(self, rows: int) -> float:
        """Row-mean losses divide by the rows they are given; make that the kept rows of the whole
        generation batch, as ``num_items_in_batch`` does for token-mean losses."""
        t = self.t
        if t.loss_type not in ROW_MEAN_LOSSES or not t.model.training:
            return 1.0
        return rows * t.accelerator.num_processes * t.args.steps_per_generation / max(self.kept_rows, 1)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "totals": dict(self.totals), "pipeline": self.pipeline.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.totals = dict(state["totals"])
        self.pipeline.load_state_dict(state["pipeline"])

    def save(self, folder: str | Path) -> None:
        if hasattr(self.ledger, "sync"):
            self.ledger.sync()
        if self.t.accelerator.is_main_process:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / STATE_FILE).write_text(json.dumps(self.state_dict(), default=_jsonable))

    def load(self, folder: str | Path) -> None:
        path = Path(folder) / STATE_FILE
        if not path.exists():
            return
        self.load_state_dict(json.loads(path.read_text()))
        if hasattr(self.ledger, "rollback"):  # events of generations after the checkpoint are hidden
            self.ledger.rollback(self.generation - 1)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"rollsift state value {o!r} ({type(o).__name__}) is not JSON-serialisable")


def _distinct(prompts: Sequence[Prompt]) -> list[Prompt]:
    seen: set[str] = set()
    return [p for p in prompts if not (p.id in seen or seen.add(p.id))]


def _check_layout(ids: Sequence[str], G: int, where: str) -> None:
    if len(ids) % G or any(ids[i] != ids[i - i % G] for i in range(len(ids))):
        raise RuntimeError(f"broken group layout from {where}: expected each prompt {G} times in a row, got "
                           f"{list(ids[: 2 * G])}...; the adapter needs TRL's RepeatSampler")


# ---------------------------------------------------------------------------------- the trainer


class RollsiftMixin:
    """Adds rollsift to ``GRPOTrainer`` or a subclass of it: ``class T(RollsiftMixin, MyGRPOTrainer)``.

    The constructor takes one more keyword, ``rollsift=RollsiftConfig(...)``; the adapter is then
    ``trainer.rollsift`` (its ledger: ``trainer.rollsift.ledger``).
    """

    def __init__(self, *args: Any, rollsift: RollsiftConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollsift = TRLRollsift(self, rollsift if rollsift is not None else RollsiftConfig())

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        inputs = self.rollsift.before_generation(inputs)
        return self.rollsift.after_generation(super()._generate_and_score_completions(inputs))

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:
            self.rollsift.capture(completions, completion_ids_list, rewards)
        return rewards

    def _compute_loss(self, model, inputs):
        keep = inputs.get(KEEP_KEY)
        if keep is None:
            return super()._compute_loss(model, inputs)
        inputs, rows = self.rollsift.loss_inputs(inputs, keep)
        scale = self.rollsift.loss_scale(rows)
        loss = super()._compute_loss(model, inputs)
        return loss * scale if scale != 1.0 else loss

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.rollsift.save(folder)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.rollsift.load(checkpoint)


class RollsiftGRPOTrainer(RollsiftMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with rollsift selection, ledger, filters and metrics (see the module docs)."""


__all__ = ["RollsiftConfig", "RollsiftGRPOTrainer", "RollsiftMixin", "RollsiftReward", "SUPPORTED_TRL_VERSIONS",
           "TRLRollsift", "content_id", "to_trl_dataset"]
