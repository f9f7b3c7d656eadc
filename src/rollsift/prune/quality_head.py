"""Prune partial rollouts with a quality head trained online (ARRoL, arXiv 2603.24840).

ARRoL's code is not public: the design is ours (docs/strategies/pruning.md). One training step:

1. generation starts ``ceil(n * over_sample)`` rollouts per prompt (just n while warming up);
2. at the poll after ``checkpoint`` generated tokens, the head scores each running row from its
   hidden state. Per group, rows that already finished stay; of the running rows exactly enough
   are kept for n survivors: the k highest and the rest lowest scored, k chosen so that the
   survivors' positive ratio is closest, in expected square, to ``target_ratio``
   (``head.choose_survivors``). The others stop there (status "pruned"). A random
   ``audit_frac`` of the groups keeps a uniformly random subset instead: their survivors are an
   unbiased sample, which keeps the measured AUC and the unpruned ratio honest;
3. after the update, ``observe`` recomputes the features of every finished rollout under the
   updated policy, measures the head's AUC on the unbiased ones BEFORE training on them, then
   trains the head with BCE on the last ``replay_steps`` steps of (feature, correct) pairs.
   The reward enters only as the label; the head never sees the reference answer.

Warm-up: no pruning and no over-sampling until the AUC (``gate``: by default the within-group
AUC, since the rule only ranks rows of one group) was >= ``min_auc`` for
``warmup_patience`` consecutive measured steps and ``min_warmup_steps`` steps have passed;
``drop_patience`` consecutive measured steps below ``min_auc`` send it back to warm-up.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configlib import ConfigError, check_positive, check_range, doc
from ..records import Context, Group
from .head import (
    HeadScorer,
    QualityHead,
    auc,
    audit_ratio,
    choose_survivors,
    completion_sequences,
    load_head,
    mean_or_nan,
    mean_remaining,
    policy_features,
    save_head,
    train_head,
    within_group_auc,
)

P = "prune/quality_head/"


@dataclass
class QualityHeadConfig:
    type: str = doc("Pruner name in the registry.", "quality_head")
    over_sample: float = doc("Rollouts started per prompt = ceil(n * over_sample) once warm-up is over.", 1.5)
    checkpoint: int = doc("Generated tokens after which rows are scored and pruned (the only poll that prunes).", 16)
    target_ratio: float = doc("Positive ratio the survivors of a group are steered toward (ARRoL: about 0.5).", 0.5)
    hidden: int = doc("Hidden width of the head's MLP; 0 makes it a linear (logistic) probe.", 0)
    lr: float = doc("AdamW learning rate of the head.", 1e-2)
    weight_decay: float = doc("AdamW weight decay of the head.", 1e-2)
    train_iters: int = doc("Optimiser steps on the replay after each training step.", 100)
    batch_size: int = doc("(feature, label) pairs per optimiser step.", 256)
    replay_steps: int = doc("Training steps whose pairs the head trains on (older features are staler).", 4)
    replay_size: int = doc("At most this many pairs are kept (oldest dropped first).", 4096)
    min_auc: float = doc("AUC (see gate) the head must reach on unbiased finished rollouts before pruning.", 0.7)
    gate: str = doc("AUC that ends warm-up: 'within' (pairs of one group: what the survivor rule ranks) or "
                    "'pooled' (all pairs: prompt difficulty alone can push it high).", "within")
    warmup_patience: int = doc("Consecutive measured steps at >= min_auc that end warm-up.", 2)
    min_warmup_steps: int = doc("Warm-up lasts at least this many steps (0 with patience 0: prune from the start).", 3)
    drop_patience: int = doc("Consecutive measured steps below min_auc that restart warm-up.", 2)
    audit_frac: float = doc("Share of groups pruned at random instead of by the rule (unbiased AUC and ratios).", 0.25)
    min_auc_samples: int = doc("Fewer unbiased rollouts than this (or one class only): AUC not measured.", 16)
    feature_batch: int = doc("Rows per forward pass when recomputing features.", 64)
    save_head: bool = doc("Write OUT/quality_head.pt after every step (for `rollsift eval --vote quality`).", True)

    strategy = "rollsift.prune.quality_head:QualityHeadPruner"

    def __post_init__(self) -> None:
        if self.type != "quality_head":
            raise ConfigError(f"pruner.type must be 'quality_head', got {self.type!r}")
        if not 1.0 <= self.over_sample <= 16.0:
            raise ConfigError(f"pruner.over_sample must be in [1, 16] (1 = no extra rollouts), got {self.over_sample!r}")
        lows = {"checkpoint": 1, "train_iters": 1, "batch_size": 1, "replay_steps": 1, "replay_size": 1,
                "feature_batch": 1, "drop_patience": 1, "hidden": 0, "warmup_patience": 0, "min_warmup_steps": 0,
                "min_auc_samples": 0}
        for name, lo in lows.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"pruner.{name} must be an integer >= {lo}, got {v!r}")
        if self.gate not in ("within", "pooled"):
            raise ConfigError(f"pruner.gate must be 'within' or 'pooled', got {self.gate!r}")
        check_range("pruner.target_ratio", self.target_ratio, 0.0, 1.0)
        check_range("pruner.min_auc", self.min_auc, 0.0, 1.0)
        check_range("pruner.audit_frac", self.audit_frac, 0.0, 1.0)
        check_positive("pruner.lr", self.lr)
        check_positive("pruner.weight_decay", self.weight_decay, allow_zero=True)


class QualityHeadPruner:
    """``RolloutPruner`` with a learned quality head (see the module docstring)."""

    def __init__(self, cfg: QualityHeadConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or QualityHeadConfig()
        self.seed = seed
        self.poll_every = self.cfg.checkpoint
        self.model = self.encode = self.out = None
        self.pad_id, self.device = 0, torch.device("cpu")
        self.head: QualityHead | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.rng = torch.Generator().manual_seed(seed)
        self.warming_up = not (self.cfg.warmup_patience == 0 and self.cfg.min_warmup_steps == 0)
        self.streak = self.below = self.steps = 0
        self.replay: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per step: x [N,H], y [N], early [N]
        self.prior = 0.5  # P(correct) of a row that finished before the checkpoint (no features at the poll)
        self.auc_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per step: unbiased scores, labels, groups
        self._groups: dict[tuple[int, int, int], dict[str, Any]] = {}  # (step, round, group) -> prune record
        self._last: dict[str, float] = {}

    # ------------------------------------------------------------------ protocol
    @property
    def over_sample(self) -> float:
        return 1.0 if self.warming_up else self.cfg.over_sample

    @property
    def needs_hidden_states(self) -> bool:
        return not self.warming_up

    def bind(self, *, model: Any, tokenizer: Any, encode: Any, out: Any = None, device: Any = None, **_: Any) -> None:
        """Features are recomputed with ``model``; ``encode(prompt)`` must give the generator's prompt ids."""
        self.model, self.encode, self.out = model, encode, Path(out) if out is not None else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.head is not None:  # built before bind (a loaded state): move it to the device
            self.load_state_dict(self.state_dict())

    def prune(self, partial: Any, ctx: Context) -> torch.Tensor:
        keep = torch.ones(len(partial.active), dtype=torch.bool)
        _need_n(ctx)
        if self.warming_up or partial.step_tokens != self.cfg.checkpoint or partial.hidden is None or self.head is None:
            return keep
        active = partial.active.cpu().numpy().astype(bool)
        group_of = partial.group_of.cpu().numpy()
        p = np.zeros(len(active))
        if active.any():
            p[active] = self.head.prob(partial.hidden[torch.as_tensor(active, device=partial.hidden.device)]).cpu().numpy()
        for g in np.unique(group_of):
            rows = np.flatnonzero(group_of == g)
            act, fin = rows[active[rows]], rows[~active[rows]]
            m = min(max(ctx.n - len(fin), 0), len(act))
            rng = self._audit_rng(ctx, int(g))
            chosen = (np.sort(rng.permutation(len(act))[:m]) if rng is not None
                      else choose_survivors(p[act], m, [self.prior] * len(fin), self.cfg.target_ratio))
            keep[torch.as_tensor(act[np.setdiff1d(np.arange(len(act)), chosen)], dtype=torch.long)] = False
            self._groups[(ctx.step, ctx.round, int(g))] = {  # for observe's accounting
                "started": len(rows), "finished": len(fin), "active": len(act), "kept": m, "audit": rng is not None,
                "pred": mean_or_nan(np.concatenate([p[act[chosen]], [self.prior] * len(fin)]))}
        return keep

    def observe(self, groups: Sequence[Group], ctx: Context) -> None:
        """After the update: measure the head on the step's finished rollouts, then train it on them."""
        if self.model is None:
            raise RuntimeError("QualityHeadPruner.observe needs bind(model=..., tokenizer=..., encode=...) first")
        c, k = self.cfg.checkpoint, math.ceil(_need_n(ctx) * self.over_sample)  # k: rows a prompt started
        recs, seen = [], defaultdict(int)
        for g in groups:  # prune records are keyed by the group's position in its generation round
            recs.append(self._groups.pop((ctx.step, g.round, seen[g.round]), None))
            seen[g.round] += 1
        self._groups = {key: r for key, r in self._groups.items() if key[0] > ctx.step}
        seqs = [s for g in groups for s in completion_sequences(self.encode(g.prompt), g.completions, c)]
        y = np.array([ok for g in groups for ok in g.correct], dtype=bool)
        early = np.array([x.num_tokens <= c for g in groups for x in g.completions], dtype=bool)
        ruled = np.repeat([r is not None and not r["audit"] for r in recs], [g.n for g in groups]).astype(bool)
        feats = policy_features(self.model, seqs, self.pad_id, self.cfg.feature_batch) if seqs else None
        gid = np.repeat(np.arange(len(groups)), [g.n for g in groups])
        m = self.learn(feats, y, ~ruled, early, gid) if seqs else {}
        pruned = sum(r["active"] - r["kept"] for r in recs if r)  # stopped by the head's rule at the checkpoint
        starts = [r["started"] if r else max(k, g.n) for r, g in zip(recs, groups)]
        started = sum(starts)
        # every started rollout that is not in its group: the rule's, and the generator's cap at n survivors
        m[P + "pruned_frac"] = sum(s - g.n for s, g in zip(starts, groups)) / started if started else 0.0
        m[P + "rule_pruned_frac"] = pruned / started if started else 0.0
        m[P + "tokens_saved"] = pruned * mean_remaining(groups, c, ~ruled)
        m[P + "survivor_pos_ratio"] = mean_or_nan(y[ruled] if ruled.any() else y)
        m[P + "unpruned_pos_ratio"] = audit_ratio(groups, recs, c) if pruned or ruled.any() else mean_or_nan(y)
        m[P + "pred_survivor_pos_ratio"] = mean_or_nan([r["pred"] for r in recs if r and not r["audit"]])
        self._last.update(m)
        if self.cfg.save_head and self.out is not None and self.head is not None:
            self.save_head(self.out / "quality_head.pt")

    def learn(self, x: torch.Tensor, y: Any, unbiased: Any = None, early: Any = None,
              group_ids: Any = None) -> dict[str, float]:
        """One step of the head on features x [N, H] with correctness y [N]: measure, move the
        warm-up phase, add to the replay, train. ``unbiased`` [N] marks rows for the AUC (default
        all); ``early`` [N] rows that finished before the checkpoint (they set ``prior``);
        ``group_ids`` [N] the group of each row (for ``auc_within``)."""
        cfg = self.cfg
        x = x.float().to(self.device)
        y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=self.device)
        fair = np.ones(len(y), bool) if unbiased is None else np.asarray(unbiased, bool)
        if self.head is None:
            self._build(x.shape[1])
        scores = self.head.prob(x).cpu().numpy()
        labels = y.cpu().numpy() > 0.5
        enough = fair.sum() >= cfg.min_auc_samples
        measured = auc(scores[fair], labels[fair]) if enough else math.nan
        within = (within_group_auc(scores[fair], labels[fair], np.asarray(group_ids)[fair])
                  if enough and group_ids is not None else math.nan)
        self._move_phase(within if cfg.gate == "within" and group_ids is not None else measured)
        # the same measures over the unbiased rows of the last replay_steps steps: after warm-up only the
        # audit groups are unbiased, too few in one step of a small batch to measure
        gids = np.asarray(group_ids if group_ids is not None else np.zeros(len(labels)), np.int64)
        self.auc_rows = (self.auc_rows + [(scores[fair], labels[fair], gids[fair] + 1_000_000 * self.steps)]
                         )[-cfg.replay_steps:]
        ws, wl, wg = (np.concatenate(t) for t in zip(*self.auc_rows))
        wide = len(ws) >= cfg.min_auc_samples
        e = torch.as_tensor(np.zeros(len(y), bool) if early is None else np.asarray(early, bool), device=self.device)
        self.replay = (self.replay + [(x, y, e)])[-cfg.replay_steps:]
        xs, ys, es = (torch.cat(t) for t in zip(*self.replay))
        xs, ys, es = xs[-cfg.replay_size:], ys[-cfg.replay_size:], es[-cfg.replay_size:]
        self.prior = float((ys[es].sum() + 1) / (es.sum() + 2))
        loss = train_head(self.head, self.opt, xs, ys, cfg.train_iters, cfg.batch_size, self.rng)
        return {P + "auc": measured, P + "auc_all": auc(scores, labels), P + "auc_within": within, P + "train_loss": loss,
                P + "auc_window": auc(ws, wl) if wide else math.nan,
                P + "auc_within_window": within_group_auc(ws, wl, wg) if wide else math.nan,
                P + "warming_up": float(self.warming_up), P + "early_prior": self.prior}

    def score_completions(self, prompt: Any, completions: Sequence[Any], generator: Any) -> list[float]:
        """P(correct) of finished completions under the bound policy (what voting uses)."""
        scorer = HeadScorer(self.head, self.cfg.checkpoint, self.model, self.cfg.feature_batch)
        return scorer.score_completions(prompt, completions, generator)

    def save_head(self, path: str | Path) -> Path:
        return save_head(self.head, self.cfg.checkpoint, path, {"steps": self.steps, "warming_up": self.warming_up})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        head = self.head
        return {
            "dim": head.dim if head is not None else None, "hidden": self.cfg.hidden, "checkpoint": self.cfg.checkpoint,
            "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()} if head is not None else None,
            "opt": copy.deepcopy(self.opt.state_dict()) if self.opt is not None else None,  # a snapshot, not live
            "rng": self.rng.get_state(), "seed": self.seed, "warming_up": self.warming_up, "streak": self.streak,
            "below": self.below, "steps": self.steps, "prior": self.prior,
            "replay": [tuple(t.cpu() for t in r) for r in self.replay],
            "auc_rows": [tuple(a.copy() for a in r) for r in self.auc_rows],
            "groups": dict(self._groups), "last": dict(self._last),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.head = self.opt = None
        if state["dim"] is not None:
            self._build(int(state["dim"]))
            self.head.load_state_dict(state["head"])
            self.opt.load_state_dict(state["opt"])
        self.rng.set_state(state["rng"])
        self.seed = int(state.get("seed", self.seed))  # the audit draws are keyed on it
        self.warming_up, self.prior = bool(state["warming_up"]), float(state["prior"])
        self.streak, self.below, self.steps = int(state["streak"]), int(state["below"]), int(state["steps"])
        self.replay = [tuple(t.to(self.device) for t in r) for r in state["replay"]]
        self.auc_rows = [tuple(np.asarray(a) for a in r) for r in state.get("auc_rows", [])]
        self._groups, self._last = dict(state["groups"]), dict(state["last"])

    def metrics(self) -> dict[str, float]:
        return dict(self._last)

    # ------------------------------------------------------------------ pieces
    def _build(self, dim: int) -> None:
        self.head = QualityHead(dim, self.cfg.hidden, generator=self.rng).to(self.device)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def _move_phase(self, measured: float) -> None:
        cfg = self.cfg
        self.steps += 1
        if self.warming_up:
            if not math.isnan(measured):
                self.streak = self.streak + 1 if measured >= cfg.min_auc else 0
            if self.streak >= cfg.warmup_patience and self.steps >= cfg.min_warmup_steps:
                self.warming_up, self.below = False, 0
        elif not math.isnan(measured):
            self.below = self.below + 1 if measured < cfg.min_auc else 0
            if self.below >= cfg.drop_patience:
                self.warming_up, self.streak, self.below = True, 0, 0

    def _audit_rng(self, ctx: Context, group: int) -> np.random.Generator | None:
        """A fixed draw per (seed, step, round, group): audit groups need no state to replay."""
        if self.cfg.audit_frac <= 0:
            return None
        rng = np.random.default_rng([self.seed, ctx.step, ctx.round, group])
        return rng if rng.random() < self.cfg.audit_frac else None


__all__ = ["HeadScorer", "QualityHeadConfig", "QualityHeadPruner", "load_head", "save_head"]


def _need_n(ctx: Context) -> int:
    if ctx.n is None:
        raise ValueError("the quality-head pruner needs the group size: pass Context(n=...) (the pipeline does)")
    return ctx.n
