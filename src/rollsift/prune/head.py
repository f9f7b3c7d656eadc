"""The quality head and its numerics: features, training, AUC, the survivor rule, the step's
estimates from survivors, saving and voting (the strategy itself is ``quality_head.py``).

Features: the policy's last-layer hidden state (after the final norm, ``hidden_states[-1]``) at
the last token of ``prompt ids + the completion's first c tokens``, from a plain left-padded,
no-grad forward pass with ``position_ids`` from the mask, as the generator lays rows out. At the
generator's poll after c tokens, ``PartialBatch.hidden`` is that same vector (up to float
rounding), so a head trained on recomputed features scores in-flight rows.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "rollsift.quality_head/1"


class QualityHead(nn.Module):
    """Logit of P(correct) [N] from features [N, H]: per-dimension standardisation (statistics of
    the training features, refreshed at every fit), then a linear layer (``hidden = 0``) or a
    one-hidden-layer MLP. The output layer starts at zero: an untrained head says 0.5 for all."""

    def __init__(self, dim: int, hidden: int = 0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        if hidden:
            first = nn.Linear(dim, hidden)
            with torch.no_grad():
                first.weight.normal_(0.0, dim ** -0.5, generator=generator)
                first.bias.zero_()
            self.net = nn.Sequential(first, nn.GELU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(dim, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def set_normalization(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.scale.copy_(x.std(0, unbiased=False).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() - self.mean) / self.scale).squeeze(-1)

    @torch.no_grad()
    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x.to(self.mean.device)))


def train_head(head: QualityHead, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, iters: int,
               batch: int, rng: torch.Generator) -> float:
    """Refresh the standardisation on x [N, H], then ``iters`` BCE steps on minibatches drawn
    with replacement by ``rng``; returns the mean minibatch loss."""
    head.set_normalization(x)
    head.train()
    total = 0.0
    for _ in range(iters):
        idx = torch.randint(len(y), (min(batch, len(y)),), generator=rng).to(x.device)
        loss = nn.functional.binary_cross_entropy_with_logits(head(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    head.eval()
    return total / iters


def token_list(ids: Any) -> list[int]:
    return [int(t) for t in (ids.tolist() if hasattr(ids, "tolist") else ids)]


@torch.no_grad()
def policy_features(model: Any, sequences: Sequence[Sequence[int]], pad_id: int, batch_rows: int = 64) -> torch.Tensor:
    """Last-layer hidden state [N, H] (float32, on the model's device) at each sequence's last token."""
    dev = next(model.parameters()).device
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    was_training = model.training
    model.eval()
    out = []
    try:
        for lo in range(0, len(sequences), batch_rows):
            seqs = sequences[lo:lo + batch_rows]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
                mask[r, width - len(s):] = 1
            ids, mask = ids.to(dev), mask.to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            h = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                      use_cache=False, **keep).hidden_states[-1]
            out.append(h[:, -1].float())
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, 0), device=dev)
    return torch.cat(out)


def completion_sequences(prompt_ids: Sequence[int], completions: Sequence[Any], checkpoint: int) -> list[list[int]]:
    """``prompt ids + first checkpoint tokens`` of each completion (shorter ones end at their last token)."""
    return [list(prompt_ids) + token_list(c.token_ids)[:checkpoint] for c in completions]


def auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN with a single class."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    ranks = mid_rank[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def within_group_auc(scores: Any, labels: Any, group_ids: Any) -> float:
    """AUC over the pairs (correct, wrong) of the SAME group, pooled over groups (each group weighs
    by its pairs); NaN when no group has both classes. What the survivor rule needs: it ranks rows
    inside a group, so telling easy prompts from hard ones (which the pooled AUC rewards) does not help it."""
    s, y, gid = (np.asarray(a).ravel() for a in (scores, labels, group_ids))
    y = y.astype(bool)
    num = den = 0.0
    for g in np.unique(gid):
        sel = gid == g
        pairs = int(y[sel].sum()) * int((~y[sel]).sum())
        if pairs:
            num += pairs * auc(s[sel], y[sel])
            den += pairs
    return num / den if den else float("nan")


def expected_sq_gap(p: Any, target: float) -> float:
    """E[(survivors' positive ratio - target)^2] when survivor i is correct with probability p[i]."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return 0.0
    return float((p.mean() - target) ** 2 + (p * (1 - p)).sum() / p.size**2)


def choose_survivors(p_active: Any, m: int, p_fixed: Any, target: float, tol: float = 1e-12) -> np.ndarray:
    """Indices (ascending) of the ``m`` active rows to keep beside the ``p_fixed`` rows that stay.

    Minimises ``expected_sq_gap`` of the survivors over every m-subset. Writing S = sum p and
    Q = sum p^2 over the M survivors, M^2 * gap = (S - M*target)^2 + S - Q; swapping a kept row
    for a dropped row with a higher score changes that by d*A, for a lower one by -d'*A (same A),
    so one of the two never hurts: some optimum is the k highest plus the m - k lowest scores.
    Scan k = 0..m with prefix sums; ties go to the smaller k. Scores tie by index (lower = higher).
    """
    p = np.asarray(p_active, dtype=np.float64)
    fixed = np.asarray(p_fixed, dtype=np.float64)
    if m >= len(p):
        return np.arange(len(p))
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-p, kind="stable")
    sp = p[order]
    top_s = np.concatenate([[0.0], np.cumsum(sp)])
    top_v = np.concatenate([[0.0], np.cumsum(sp * (1 - sp))])
    low_s = np.concatenate([[0.0], np.cumsum(sp[::-1])])  # sums of the j lowest
    low_v = np.concatenate([[0.0], np.cumsum((sp * (1 - sp))[::-1])])
    k = np.arange(m + 1)
    big_m = len(fixed) + m
    s = fixed.sum() + top_s[k] + low_s[m - k]
    v = (fixed * (1 - fixed)).sum() + top_v[k] + low_v[m - k]
    gap = (s / big_m - target) ** 2 + v / big_m**2
    best = int(np.flatnonzero(gap <= gap.min() + tol)[0])
    chosen = np.concatenate([order[:best], order[len(p) - (m - best):]])
    return np.sort(chosen)


def mean_remaining(groups: Sequence[Any], checkpoint: int, fair: np.ndarray) -> float:
    """Mean tokens past the checkpoint of finished rollouts that were running at it: the unbiased
    ones (audit groups) when there are any, else all. What one pruned row is estimated to save."""
    lengths = np.array([c.num_tokens for g in groups for c in g.completions])
    past = lengths > checkpoint
    pick = past & fair if (past & fair).any() else past
    return float((lengths[pick] - checkpoint).mean()) if pick.any() else 0.0


def mean_or_nan(a: Any) -> float:
    return float(np.mean(a)) if len(a) else math.nan


def audit_ratio(groups: Sequence[Any], recs: Sequence[Any], c: int) -> float:
    """Positive ratio of all started rows, estimated from the audit groups: their running rows were
    kept uniformly at random, so each kept one stands for active / kept of them."""
    pos = total = 0.0
    for g, r in zip(groups, recs):
        if r and r["audit"]:
            w = r["active"] / r["kept"] if r["kept"] else 0.0
            pos += sum(ok * (w if x.num_tokens > c else 1.0) for x, ok in zip(g.completions, g.correct))
            total += r["finished"] + r["active"]
    return pos / total if total else math.nan


def save_head(head: QualityHead, checkpoint: int, path: str | Path, meta: dict | None = None) -> Path:
    """Write the head (CPU tensors) atomically: a voting run never reads half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "dim": head.dim, "hidden": head.hidden, "checkpoint": int(checkpoint),
            "state": {k: v.detach().cpu() for k, v in head.state_dict().items()}, "meta": dict(meta or {})}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _run_checkpoint(ckpt_dir: Path) -> int:
    """``pruner.checkpoint`` from the run's resolved config (checkpoints written before the
    pruner's state carried it): OUT/config.toml beside OUT/checkpoints/step_N."""
    from ..configlib import load_toml

    cfg = ckpt_dir.parent.parent / "config.toml"
    try:
        return int(load_toml(cfg)["pruner"]["checkpoint"])
    except (OSError, KeyError, ValueError) as e:  # ConfigError (missing, not TOML) is a ValueError
        raise ValueError(f"{ckpt_dir}: cannot tell the head's checkpoint position ({cfg}: {e!r})") from None


class HeadScorer:
    """A saved head bound to a policy: ``score_completions`` gives P(correct) of each completion."""

    def __init__(self, head: QualityHead, checkpoint: int, model: Any, batch_rows: int = 64) -> None:
        self.head, self.checkpoint, self.model, self.batch_rows = head, checkpoint, model, batch_rows

    def score_completions(self, prompt: Any, completions: Sequence[Any], generator: Any) -> list[float]:
        if not completions:
            return []
        seqs = completion_sequences(generator.encode(prompt), completions, self.checkpoint)
        feats = policy_features(self.model, seqs, generator.pad_id, self.batch_rows)
        return self.head.prob(feats).cpu().tolist()


def load_head(path: str | Path, model: Any) -> HeadScorer:
    """The head of a pruning run, on ``model``'s device: ``OUT/quality_head.pt`` (the newest head,
    written after every step) or a checkpoint directory ``OUT/checkpoints/step_N`` (the head of
    that step, which matches the policy saved beside it; its ``state.pt`` is a full pickle: load
    only checkpoints you trust)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "state.pt").is_file():
            raise ValueError(f"{path}: a directory without state.pt is not a rollsift checkpoint")
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        pr = (state.get("pipeline") or {}).get("pruner")
        if not pr or pr.get("head") is None:
            raise ValueError(f"{path}: this checkpoint holds no trained quality head (was a pruner configured?)")
        hidden = pr["head"]["net.0.weight"].shape[0] if "net.2.weight" in pr["head"] else 0
        blob = {"dim": pr["dim"], "hidden": hidden, "checkpoint": pr.get("checkpoint") or _run_checkpoint(path),
                "state": pr["head"]}
    else:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != FORMAT:
            raise ValueError(f"{path}: not a rollsift quality head (format {blob.get('format')!r}, expected {FORMAT!r})")
    head = QualityHead(blob["dim"], blob["hidden"])
    head.load_state_dict(blob["state"])
    head.to(next(model.parameters()).device).eval()
    return HeadScorer(head, blob["checkpoint"], model)
