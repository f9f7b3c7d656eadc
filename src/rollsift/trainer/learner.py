"""The policy learner: clipped GRPO/DAPO updates of a causal LM from a TrainBatch.

Layout of a forward pass (the same as generation, so positions and log-probs match): prompts are
left-padded to a common length P and completions right-padded after them; ``position_ids`` come
from the attention mask. Log-probs of completion token j are read from the logits at P - 1 + j,
divided by the sampling temperature as the generator did.

What is computed where:
* fresh groups were sampled by the current policy, so their behaviour log-probs *are* pi_old
  (no extra forward pass; the generator's log-probs equal a teacher-forced pass to about 2e-4;
  ``old_logprobs = "recompute"`` does the forward pass anyway and logs the largest gap);
* carried and replayed groups were sampled by older policies: pi_old is recomputed under the
  current weights before the first optimiser step, and the decoupled loss weights each token by
  pi_old / pi_behaviour, masking tokens above ``is_cap`` (AReaL);
* completions with zero advantage (all-equal groups) get no forward/backward pass: their policy
  gradient is exactly zero, and they still count in the token-mean denominator, so the update is
  identical to computing them (unless a KL term is on, which needs them);
* a step whose loss, gradient norm or resulting weights are not finite is undone from a copy of the
  weights and optimiser state taken before it (``undo_nonfinite``), reported as
  ``train/nonfinite_skipped = 1``, and the policy version does not advance.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..config import LearnerConfig
from .grpo import group_advantages, policy_loss
from ..records import TrainBatch


@dataclass(eq=False)
class _Row:
    prompt_ids: list[int]
    completion_ids: torch.Tensor  # [T]
    behaviour: torch.Tensor  # [T]
    advantage: float
    off_policy: bool
    old: torch.Tensor | None = None  # [T], filled for off-policy rows


def batch_advantages(groups: Sequence[Any], scale: str = "group") -> tuple[tuple[float, ...], ...]:
    """GRPO advantages of each group, from its own rewards."""
    advs = group_advantages([list(g.rewards) for g in groups], scale=scale)
    return tuple(tuple(a.tolist()) for a in advs)


class PolicyLearner:
    def __init__(self, model, encode_prompt, cfg: LearnerConfig, *, temperature: float = 1.0,
                 pad_id: int = 0, seed: int = 0) -> None:
        self.model, self.encode_prompt, self.cfg = model, encode_prompt, cfg
        self.temperature = temperature if temperature > 0 else 1.0
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
        self.rng = torch.Generator().manual_seed(seed)
        self.policy_version = 0

    # ------------------------------------------------------------------ update
    def update(self, batch: TrainBatch, ctx: Any = None) -> dict[str, float]:
        cfg = self.cfg
        rows = [
            _Row(self.encode_prompt(g.prompt), c.token_ids, c.logprobs, a, off)
            for g, advs, off in zip(batch.groups, batch.advantages, batch.replayed)
            for c, a in zip(g.completions, advs)
            if c.num_tokens > 0
        ]
        total_tokens = sum(r.completion_ids.numel() for r in rows)
        active = [r for r in rows if r.advantage != 0.0 or self.ref is not None]
        active_ids = {id(r) for r in active}
        self._set_lr()
        self.model.train()
        recompute = [r for r in active if r.off_policy or cfg.old_logprobs == "recompute"]
        if recompute:
            t_old = time.perf_counter()
            self._fill_old(recompute)
            gap = max((float((r.old - r.behaviour).abs().max()) for r in recompute if not r.off_policy
                       and r.completion_ids.numel()), default=None)
            old_s = time.perf_counter() - t_old
        else:
            gap, old_s = None, 0.0
        snapshot = self._snapshot() if cfg.undo_nonfinite and active else None
        sums: dict[str, float] = {}
        count = 0
        grad_norms = []
        finite = True
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rows), generator=self.rng).tolist()
            for part in _split(order, cfg.minibatches):
                mb = [rows[i] for i in part]
                mb_tokens = sum(r.completion_ids.numel() for r in mb)
                mb_active = [r for r in mb if id(r) in active_ids]
                for micro in self._micro_batches(mb_active):
                    loss, metrics = self._loss(micro, mb_tokens, len(mb))
                    finite = finite and bool(torch.isfinite(loss))
                    if not finite:
                        break
                    loss.backward()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                      cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                finite = finite and bool(torch.isfinite(norm))
                if not finite:
                    self.optimizer.zero_grad(set_to_none=True)
                    break
                if cfg.grad_clip > 0:
                    grad_norms.append(float(norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if not finite:
                break
        if finite and snapshot is not None:
            finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if not finite:
            if snapshot is not None:
                self._restore(snapshot)
            return {"train/nonfinite_skipped": 1.0, "train/lr": self.optimizer.param_groups[0]["lr"],
                    "train/tokens": float(total_tokens), "train/completions": float(len(rows))}
        self.policy_version += 1
        out = {k: v / max(count, 1) for k, v in sums.items() if k != "loss/policy"}
        out["loss/policy"] = sums.get("loss/policy", 0.0)  # micro-batch terms sum to the loss
        out.update({
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "train/tokens": float(total_tokens),
            "train/completions": float(len(rows)),
            "train/skipped_zero_adv_frac": 1.0 - len(active) / max(len(rows), 1),
            "train/nonfinite_skipped": 0.0,
            "train/off_policy_frac": sum(r.off_policy for r in rows) / max(len(rows), 1),
            "time/old_logprobs": old_s,
        })
        if gap is not None:  # recomputed pi_old against the behaviour log-probs of fresh rows
            out["train/old_behaviour_gap"] = gap
        if grad_norms:
            out["train/grad_norm"] = sum(grad_norms) / len(grad_norms)
        return out

    def _snapshot(self) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """Weights and optimiser state before the update, to undo a step that went non-finite."""
        return ([p.detach().clone() for p in self.model.parameters()], copy.deepcopy(self.optimizer.state_dict()))

    def _restore(self, snapshot: tuple[list[torch.Tensor], dict[str, Any]]) -> None:
        params, opt = snapshot
        with torch.no_grad():
            for p, saved in zip(self.model.parameters(), params):
                p.copy_(saved)
        self.optimizer.load_state_dict(opt)
        self.optimizer.zero_grad(set_to_none=True)

    def _set_lr(self) -> None:
        w = self.cfg.warmup_steps
        scale = min(1.0, (self.policy_version + 1) / w) if w > 0 else 1.0
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr * scale

    def _loss(self, micro: list[_Row], mb_tokens: int, mb_seqs: int):
        ids, mask, pos, comp, cmask, P = self._layout(micro)
        logp, entropy = self._logprobs(self.model, ids, mask, pos, comp, P, with_entropy=True)
        dev = self.device
        behaviour = _pad([r.behaviour for r in micro], 0.0).to(dev)
        old = _pad([r.old if r.old is not None else r.behaviour for r in micro], 0.0).to(dev)
        adv = torch.tensor([r.advantage for r in micro], dtype=torch.float32, device=dev)
        ref = None
        if self.ref is not None:
            with torch.no_grad():
                ref, _ = self._logprobs(self.ref, ids, mask, pos, comp, P)
        loss, metrics = policy_loss(
            logp, old, adv, cmask,
            clip_low=self.cfg.clip_low, clip_high=self.cfg.clip_high,
            agg="token-mean" if self.cfg.loss_agg == "token-mean" else "seq-mean",
            behaviour_logp=behaviour if any(r.off_policy for r in micro) else None,
            is_cap=self.cfg.is_cap, kl_coef=self.cfg.kl_coef, ref_logp=ref,
            total_tokens=mb_tokens, total_seqs=mb_seqs,
        )
        metrics["train/entropy"] = float((entropy * cmask).sum() / cmask.sum().clamp(min=1))
        return loss, metrics

    def _fill_old(self, rows: list[_Row]) -> None:
        """pi_old of off-policy rows: their log-probs under the weights before this update."""
        with torch.no_grad():
            for micro in self._micro_batches(rows):
                ids, mask, pos, comp, cmask, P = self._layout(micro)
                logp, _ = self._logprobs(self.model, ids, mask, pos, comp, P)
                for r, lp in zip(micro, logp.cpu()):
                    r.old = lp[: r.completion_ids.numel()]

    # ------------------------------------------------------------------ tensors
    def _micro_batches(self, rows: list[_Row]) -> list[list[_Row]]:
        rows = sorted(rows, key=lambda r: len(r.prompt_ids) + r.completion_ids.numel())
        out, cur, width = [], [], 0
        for r in rows:
            w = max(width, len(r.prompt_ids) + r.completion_ids.numel())
            if cur and w * (len(cur) + 1) > self.cfg.max_tokens_per_forward:
                out.append(cur)
                cur, w = [], len(r.prompt_ids) + r.completion_ids.numel()
            cur.append(r)
            width = w
        if cur:
            out.append(cur)
        return out

    def _layout(self, rows: list[_Row]):
        """ids/mask/pos [B, P + Lc]: left-padded prompts then right-padded completions."""
        P = max(len(r.prompt_ids) for r in rows)
        Lc = max(r.completion_ids.numel() for r in rows)
        B = len(rows)
        ids = torch.full((B, P + Lc), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, P + Lc), dtype=torch.long)
        for i, r in enumerate(rows):
            p, c = r.prompt_ids, r.completion_ids
            ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
            ids[i, P : P + c.numel()] = c
            mask[i, P - len(p) : P + c.numel()] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        comp = ids[:, P:]
        cmask = mask[:, P:]
        dev = self.device
        return ids.to(dev), mask.to(dev), pos.to(dev), comp.to(dev), cmask.to(dev), P

    def _logprobs(self, model, ids, mask, pos, comp, P, with_entropy=False):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # [B, P+Lc, V]
        logits = logits[:, P - 1 : -1].float() / self.temperature  # [B, Lc, V]
        logsm = torch.log_softmax(logits, dim=-1)
        logp = logsm.gather(-1, comp.unsqueeze(-1)).squeeze(-1)  # [B, Lc]
        entropy = None
        if with_entropy:
            with torch.no_grad():
                entropy = -(logsm.exp() * logsm).sum(-1)
        return logp, entropy

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "policy_version": self.policy_version,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.policy_version = int(state["policy_version"])


def _split(order: list[int], parts: int) -> list[list[int]]:
    parts = max(1, min(parts, len(order)))
    size, extra = divmod(len(order), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(order[start:end])
        start = end
    return out


def _pad(seqs: Sequence[torch.Tensor], value: float) -> torch.Tensor:
    L = max(s.numel() for s in seqs)
    out = torch.full((len(seqs), L), value, dtype=torch.float32)
    for i, s in enumerate(seqs):
        out[i, : s.numel()] = torch.as_tensor(s, dtype=torch.float32)
    return out
