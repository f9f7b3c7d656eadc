"""DOTS's attention-based difficulty predictor (arXiv 2506.05316; the authors' code in
ASTRAL-Group/data-efficient-llm-rl, ``adaptive_difficulty_prediction/`` and ``teacher_utils.py``).

A query prompt's success under the current policy is predicted from K reference prompts that were
just rolled out under it (observed success rates y_j [K]), through frozen prompt embeddings e:

    q = A_q(e_query) [h],  r_j = A_r(e_j) [h]           two adapters (3-layer MLPs ending in LayerNorm)
    w = softmax_j(<q, r_j> / sqrt(h))                    scaled dot-product attention over the references
    base = sum_j w_j y_j                                 attention-weighted mean of reference success
    T, b = head(mean(y), std(y))                         calibration head, T in [0.01, 10], b in (-1, 1)
    p = sigmoid(logit(clamp(base, 1e-4, 1 - 1e-4)) / T + b)

Trained with binary cross-entropy against observed success rates (soft labels), Adam 1e-3. The
selector then fits ``y ~ a p + c`` on the references and applies it to the whole pool
(``fit_linear``). A reference predicted as a query never sees its own label (leave-one-out), so
that fit and the reported correlation are honest.

Also here: the embeddings (mean-pooled last hidden state over the prompt tokens, batched, cached
in a ``.npy`` file whose name hashes the encoder and the pool's ids) and the predictor file
format (``DotsPredictor.save`` / ``load``), so a predictor trained offline can be handed to a run.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-4  # the authors' clamp of the base prediction before the logit
FORMAT = "rollsift.dots_predictor/1"
CHUNK = 4096  # pool rows per forward pass: the [CHUNK, K] attention stays in cache


def normalize(emb: Any, chunk: int = 65536) -> np.ndarray:
    """Row-standardised float32 copy [N, d] of the embeddings.

    The authors' adapters open with LayerNorm(d); its affine part folds into the first Linear, so
    the normalisation itself is done once here instead of at every refresh over the whole pool.
    """
    out = np.array(emb, dtype=np.float32)
    if out.ndim != 2 or not len(out):
        raise ValueError(f"embeddings must be a non-empty [N, d] matrix, got shape {out.shape}")
    for lo in range(0, len(out), chunk):
        x = out[lo:lo + chunk]
        x -= x.mean(1, keepdims=True)
        x /= np.sqrt((x * x).mean(1, keepdims=True) + 1e-5)
    return out


class Adapter(nn.Sequential):
    """Linear -> GELU -> Dropout -> ... -> Linear -> LayerNorm (the authors' projection tower)."""

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float) -> None:
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dim if i == 0 else hidden, hidden))
            if i < layers - 1:
                mods += [nn.GELU(), nn.Dropout(dropout)]
        super().__init__(*mods, nn.LayerNorm(hidden))


class PredictorNet(nn.Module):
    def __init__(self, dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.query = Adapter(dim, hidden, layers, dropout)
        self.ref = Adapter(dim, hidden, layers, dropout)
        self.head = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 2))
        nn.init.zeros_(self.head[2].weight)  # start as the identity: T = softplus(0.5413) = 1, b = 0
        with torch.no_grad():
            self.head[2].bias.copy_(torch.tensor([math.log(math.e - 1), 0.0]))
        self.scale = hidden ** -0.5

    def calibration(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temperature and bias [] from the reference labels y [K]."""
        t, b = self.head(torch.stack([y.mean(), y.std(correction=0)]))
        return F.softplus(t).clamp(0.01, 10.0), torch.tanh(b)

    def keys(self, r: torch.Tensor) -> torch.Tensor:
        """Reference projections, transposed and scaled [h, K]."""
        return self.ref(r).T * self.scale

    def forward(self, q: torch.Tensor, keys: torch.Tensor, y: torch.Tensor, mask: Any = None,
                calib: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Calibrated success logits [Q] for query embeddings q [Q, d].

        ``mask`` = (query indices, reference columns) whose attention is removed (a reference's own
        label); ``calib`` = a precomputed ``calibration(y)``.
        """
        att = self.query(q) @ keys  # [Q, K]
        if mask is not None and len(mask[0]):
            att[mask] = -math.inf
        base = torch.softmax(att, -1) @ y
        t, b = calib if calib is not None else self.calibration(y)
        return torch.logit(base.clamp(EPS, 1 - EPS)) / t + b


@dataclass
class Round:
    """Observations under one refresh's policy: references (keys) and prompts whose success was seen
    (queries: the references themselves, leave-one-out, then the round's training prompts).
    Rows index the embedding matrix; ``query_self[i]`` is query i's column among the keys or -1."""

    key_rows: np.ndarray  # [K] int64
    key_y: np.ndarray  # [K] float32
    query_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [Q]
    query_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [Q]
    query_self: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [Q]

    def __post_init__(self) -> None:
        self.key_rows, self.key_y = np.asarray(self.key_rows, np.int64), np.asarray(self.key_y, np.float32)

    def add(self, rows: np.ndarray, y: np.ndarray) -> None:
        """More observed queries: their rows [Q'] and success rates [Q']."""
        col = {int(r): j for j, r in enumerate(self.key_rows)}
        self.query_rows = np.concatenate([self.query_rows, rows]).astype(np.int64)
        self.query_y = np.concatenate([self.query_y, y]).astype(np.float32)
        self.query_self = np.concatenate([self.query_self, [col.get(int(r), -1) for r in rows]]).astype(np.int64)


class DotsPredictor:
    """The network, its optimiser, prediction over a pool and online training.

    ``dim`` is the embedding width; ``hidden`` the adapters' (the authors: 896 over 1536-dim
    embeddings; we default smaller so a refresh over a million prompts stays near a second on CPU).
    Initialisation and dropout draw from seeded generators, never from torch's global one.
    """

    def __init__(self, dim: int, hidden: int = 32, layers: int = 3, dropout: float = 0.1,
                 lr: float = 1e-3, seed: int = 0) -> None:
        self.shape = {"dim": int(dim), "hidden": int(hidden), "layers": int(layers), "dropout": float(dropout)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PredictorNet(dim, hidden, layers, dropout).eval()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)

    @torch.inference_mode()
    def predict(self, emb: np.ndarray, ref_rows: np.ndarray, ref_y: np.ndarray,
                rows: np.ndarray | None = None) -> np.ndarray:
        """Calibrated success [P] of embedding rows ``rows`` (every row when None), given references
        (rows into ``emb``, success ``ref_y`` [K]). References are predicted leave-one-out."""
        self.net.eval()
        ref_rows = np.asarray(ref_rows, np.int64)
        y = torch.as_tensor(np.asarray(ref_y, np.float32))
        keys = self.net.keys(torch.from_numpy(emb[ref_rows]))
        calib = self.net.calibration(y)
        col = {int(r): j for j, r in enumerate(ref_rows)} if len(ref_rows) > 1 else {}
        n = len(emb) if rows is None else len(rows)
        out = np.empty(n, np.float32)
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            if rows is None:
                x = torch.from_numpy(emb[lo:hi])
                inside = np.flatnonzero((ref_rows >= lo) & (ref_rows < hi) & (len(ref_rows) > 1))
                mask = (torch.from_numpy(ref_rows[inside] - lo), torch.from_numpy(inside))
            else:
                part = rows[lo:hi]
                x = torch.from_numpy(emb[part])
                pairs = [(i, col[int(r)]) for i, r in enumerate(part) if int(r) in col]
                mask = tuple(torch.tensor(v, dtype=torch.long) for v in zip(*pairs)) if pairs else None
            out[lo:hi] = torch.sigmoid(self.net(x, keys, y, mask, calib)).numpy()
        return out

    def fit(self, emb: np.ndarray, rounds: Sequence[Round], steps: int, batch: int,
            rng: np.random.Generator) -> float | None:
        """``steps`` Adam steps, each on up to ``batch`` queries of one round drawn at random, with that
        round's references as keys; BCE against observed success. Returns the mean loss."""
        rounds = [r for r in rounds if len(r.query_rows) and len(r.key_rows) >= 2]
        if not rounds or steps <= 0:
            return None
        losses = []
        self.net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            for _ in range(steps):
                rd = rounds[int(rng.integers(len(rounds)))]
                pick = rng.choice(len(rd.query_rows), min(batch, len(rd.query_rows)), replace=False)
                own = rd.query_self[pick]
                hit = np.flatnonzero(own >= 0)
                mask = (torch.from_numpy(hit), torch.from_numpy(own[hit]))
                y = torch.from_numpy(rd.key_y)
                logits = self.net(torch.from_numpy(emb[rd.query_rows[pick]]),
                                  self.net.keys(torch.from_numpy(emb[rd.key_rows])), y, mask)
                loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(rd.query_y[pick]))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                losses.append(loss.item())
        self.net.eval()
        return float(np.mean(losses))

    def recalibration(self, emb: np.ndarray, rows: np.ndarray, y: np.ndarray,
                      rng: np.random.Generator) -> tuple[float, float, float | None]:
        """The round's linear recalibration ``y ~ a p + c`` and the Pearson correlation of the
        recalibrated predictions with y, both from held-out predictions of the references: each half
        is predicted with the other half as references. (Leave-one-out would be anti-correlated with
        the labels by construction: with flat attention it predicts the mean of the others.)"""
        perm = rng.permutation(len(rows))
        half = (perm[: len(rows) // 2], perm[len(rows) // 2:])
        held = [self.predict(emb, rows[o], y[o], rows[i]) for i, o in (half, half[::-1])]
        a, c = fit_linear(np.concatenate(held), y[np.concatenate(half)])
        r = [x for x in (pearson(h, y[i]) for h, i in zip(held, half)) if x is not None]
        return a, c, (float(np.sign(a) * np.mean(r)) if r and a else None)

    # ------------------------------------------------------------------ state and files
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "opt": copy.deepcopy(self.opt.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> None:
        """A predictor file: the network's shape and weights (``meta``: e.g. which encoder made the embeddings)."""
        torch.save({"format": FORMAT, "shape": dict(self.shape), "net": self.net.state_dict(),
                    "meta": dict(meta or {})}, path)

    @classmethod
    def load(cls, path: str | Path, lr: float = 1e-3, seed: int = 0) -> DotsPredictor:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a DOTS predictor file (expected format {FORMAT!r}); "
                             f"write one with DotsPredictor.save")
        pred = cls(**blob["shape"], lr=lr, seed=seed)
        pred.net.load_state_dict(blob["net"])
        return pred


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares ``y ~ a x + c`` (the authors' per-round recalibration); a = 0 for constant x.
    The slope may be negative: held-out anti-correlation (e.g. untrained adapters) is then used."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    vx = x.var()
    a = float(((x - x.mean()) * (y - y.mean())).mean() / vx) if vx > 1e-12 else 0.0
    return a, float(y.mean() - a * x.mean())


def pearson(x: Any, y: Any) -> float | None:
    """Pearson correlation, or None when it is undefined (fewer than 3 points, or a constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() < 1e-12 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


# ---------------------------------------------------------------------- embeddings
@torch.inference_mode()
def embed_token_ids(model: Any, token_ids: Sequence[Sequence[int]], batch_size: int = 32,
                    pad_id: int = 0) -> np.ndarray:
    """Mean over the prompt tokens of the model's last hidden state [N, H] float32.

    Works for a causal LM (its ``base_model`` skips the vocabulary projection) and for an encoder.
    Prompts are batched by length (right padding; the mean covers real tokens only).
    """
    base = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    out: np.ndarray | None = None
    try:
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            width = max(len(token_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for b, i in enumerate(idx):
                ids[b, :len(token_ids[i])] = torch.as_tensor(list(token_ids[i]), dtype=torch.long)
                mask[b, :len(token_ids[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # [B, L, H]
            m = mask.unsqueeze(-1).float()
            pooled = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
            if out is None:
                out = np.empty((len(token_ids), pooled.shape[1]), np.float32)
            out[idx] = pooled
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("embed_token_ids: no prompts")
    return out


def embed_with_encoder(path: str, texts: Sequence[str], batch_size: int = 32, max_tokens: int = 512,
                       device: Any = None) -> np.ndarray:
    """Embeddings [N, H] from a local Hugging Face model (nothing is downloaded)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    if device is not None:
        model.to(device)
    ids = [tok(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return embed_token_ids(model, ids, batch_size, pad)


def prompt_text(prompt: Any) -> str:
    """The text an external encoder embeds: the plain text, or the messages' contents."""
    if prompt.text is not None:
        return prompt.text
    return "\n".join(m["content"] for m in prompt.messages)


def embed_pool(pool: Sequence[Any], encoder: str, *, model: Any, tokenizer: Any, encode: Callable,
               cache_dir: str | Path, batch: int = 32, max_tokens: int = 512, device: Any = None) -> np.ndarray:
    """The pool's embeddings [N, H], cached: ``encoder`` "policy" pools ``model`` (the run's starting
    checkpoint) over the token ids generation sees (``encode``); else it names a local HF model."""
    if encoder == "policy":
        name = f"policy:{getattr(model.config, '_name_or_path', '')}:{max_tokens}"
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        compute = lambda: embed_token_ids(model, [encode(p)[:max_tokens] for p in pool], batch, pad)
    else:
        name = f"{Path(encoder).resolve()}:{max_tokens}"
        compute = lambda: embed_with_encoder(encoder, [prompt_text(p) for p in pool], batch, max_tokens, device)
    return cached_embeddings(cache_dir, name, [p.id for p in pool], compute)


def cached_embeddings(cache_dir: str | Path, encoder: str, ids: Sequence[str],
                      compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``cache_dir/dots-embeddings-<hash>.npy`` or compute and write it; the hash covers the
    encoder's name and the pool's ids in order, so another pool or encoder never reuses it."""
    h = hashlib.sha256(encoder.encode())
    for pid in ids:
        h.update(b"\n" + pid.encode())
    path = Path(cache_dir) / f"dots-embeddings-{h.hexdigest()[:16]}.npy"
    if path.exists():
        emb = np.load(path)
        if len(emb) == len(ids):
            return emb
    emb = np.asarray(compute(), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb
