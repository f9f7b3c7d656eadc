"""DOTS: roll out the prompts whose predicted success is closest to 1/2 (arXiv 2506.05316).

The rule, as in the authors' code (ASTRAL-Group/data-efficient-llm-rl, ``ray_trainer.py`` and
``teacher_utils.py``):

1. at the first step and then every ``mu`` = 2 steps (a round), ``probe`` draws K = 256 reference
   prompts uniformly from the pool; the pipeline rolls them out under the current policy (counted
   in ``cost/probe_rollouts``, never trained on) and hands them to ``tell``;
2. the attention predictor (``dots_predictor``) predicts every pool prompt's success from the
   references' observed success; a linear recalibration fitted on the references gives p_hat;
3. the round's prompts are drawn without replacement from softmax(-|p_hat - 0.5| / tau),
   tau = 1e-3: nearly greedy (a gap of 0.01 in |p_hat - 0.5| is a factor e^10 in odds).

Where we differ: the adapters and calibration head are trained online, each refresh, on the
success rates observed in past rounds (the authors train offline and freeze; ``online = false``
with a ``predictor_path`` does that). Embeddings come from the run's starting checkpoint or any
local encoder. The recalibration is fitted on held-out predictions of the references (each half
predicted from the other), not on predictions that saw their own labels. A round's prompts are
drawn call by call by Gumbel top-k, excluding its earlier picks, instead of mu * B at once and
split: the same without-replacement law, and it serves dynamic sampling's refills.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..configlib import ConfigError, check_positive, check_range, doc
from ..records import Context, Decision, Group, Prompt, Selection
from . import dots_predictor as dp


@dataclass
class DotsConfig:
    type: str = doc("Selector name in the registry.", "dots")
    target: float = doc("Success rate selection aims at (the authors: 0.5, where p(1 - p) peaks).", 0.5)
    tau: float = doc("Temperature of softmax(-|p_hat - target| / tau); 1e-3 is nearly greedy.", 1e-3)
    mu: int = doc("Training steps per round: references and predictions are refreshed every mu steps.", 2)
    ref_size: int = doc("Reference prompts rolled out per refresh (the authors: 256 with batches of 512).", 256)
    encoder: str = doc("'policy' (mean-pooled last hidden state of the starting checkpoint) or a local HF model.",
                       "policy")
    embed_batch: int = doc("Prompts per forward pass when computing embeddings.", 32)
    embed_max_tokens: int = doc("Prompt tokens embedded; longer prompts are truncated.", 512)
    cache_dir: str = doc("Directory of the embeddings cache (.npy); empty: the run directory.", "")
    hidden: int = doc("Adapter width (the authors: 896 over 1536-dim embeddings; small keeps refreshes fast).", 32)
    layers: int = doc("Linear layers per adapter (the authors: 3).", 3)
    dropout: float = doc("Adapter dropout while training.", 0.1)
    online: bool = doc("Train adapters and calibration head during the run on observed success rates.", True)
    train_steps: int = doc("Adam steps per refresh when online.", 50)
    train_batch: int = doc("Query prompts per Adam step (the authors: 256).", 256)
    lr: float = doc("Adam learning rate (the authors: 1e-3).", 1e-3)
    window: int = doc("Past rounds kept as online training data.", 8)
    predictor_path: str = doc("Predictor file trained offline (DotsPredictor.save); empty: random adapters.", "")

    strategy = "rollsift.select.dots:DotsSelector"

    def __post_init__(self) -> None:
        check_range("selector.target", self.target, 0.0, 1.0)
        check_positive("selector.tau", self.tau)
        check_positive("selector.lr", self.lr)
        check_range("selector.dropout", self.dropout, 0.0, 0.99)
        check_positive("selector.train_steps", self.train_steps, allow_zero=True)
        for name in ("mu", "hidden", "layers", "embed_batch", "embed_max_tokens", "train_batch", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"selector.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.ref_size < 4:
            raise ConfigError(f"selector.ref_size must be >= 4 (two held-out halves of two), got {self.ref_size!r}")


def target_sample(pred: np.ndarray, k: int, tau: float, target: float, rng: np.random.Generator,
                  exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw k indices without replacement from softmax(-|pred - target| / tau), first drawn first.

    Gumbel top-k: the k largest of logit + Gumbel noise follow the law of drawing one at a time and
    renormalising. Also returns each pick's inclusion probability given the other keys,
    ``1 - exp(-exp(logit - kappa))`` with kappa the (k+1)-th largest key (Kool et al., 2019), so
    that ``E[1{i drawn} / prob_i] = 1``.
    """
    logits = -np.abs(np.asarray(pred, np.float64) - target) / tau
    keys = logits + rng.gumbel(size=len(logits))
    if exclude is not None:
        keys[exclude] = -np.inf
    k = min(int(k), len(keys) - (int(exclude.sum()) if exclude is not None else 0))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    part = np.argpartition(-keys, k) if k < len(keys) else np.arange(len(keys))
    top, kappa = part[:k], keys[part[k]] if k < len(keys) else -np.inf
    top = top[np.argsort(-keys[top], kind="stable")]
    with np.errstate(over="ignore"):
        return top.astype(np.int64), -np.expm1(-np.exp(logits[top] - kappa))


class DotsSelector:
    scope = "pool"

    def __init__(self, cfg: DotsConfig | None = None, seed: int = 0) -> None:
        self.cfg, self.seed = cfg or DotsConfig(), seed
        self.rng = np.random.default_rng(seed)
        self.ids: list[str] = []
        self.index: dict[str, int] = {}  # prompt id -> embedding row
        self.emb: np.ndarray | None = None  # [N, d] normalised embeddings
        self.predictor: dp.DotsPredictor | None = None
        self.pred: np.ndarray | None = None  # [N] p_hat of the last refresh
        self.taken = np.zeros(0, bool)  # [N] chosen since the last refresh (a round draws without replacement)
        self.step_pred: dict[str, float] = {}  # chosen this step -> p_hat at selection
        self.rounds: list[dp.Round] = []  # online training data, newest last
        self.recal, self.refresh_step, self.refreshes = (1.0, 0.0), -1, 0
        self._pool_key: Any = None
        self._pool_rows: np.ndarray | None = None
        self._round_metrics: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._pending: Mapping[str, Any] | None = None

    # ------------------------------------------------------------------ embeddings
    def bind(self, *, model: Any, tokenizer: Any, encode: Any, out: Any, pool: Sequence[Prompt],
             device: Any = None, **_: Any) -> None:
        """Embed the pool once before training (from the starting checkpoint), cached under ``out``."""
        cfg = self.cfg
        emb = dp.embed_pool(pool, cfg.encoder, model=model, tokenizer=tokenizer, encode=encode,
                            cache_dir=cfg.cache_dir or out, batch=cfg.embed_batch, max_tokens=cfg.embed_max_tokens,
                            device=device)
        self.set_embeddings([p.id for p in pool], emb)

    def set_embeddings(self, ids: Sequence[str], matrix: Any) -> None:
        """Frozen embeddings [N, d], one row per prompt id (tests, hosts without ``bind``)."""
        if len(ids) != len(matrix) or len(set(ids)) != len(ids):
            raise ValueError(f"set_embeddings: need one row per distinct id, got {len(ids)} ids "
                             f"({len(set(ids))} distinct) and {len(matrix)} rows")
        cfg = self.cfg
        self.ids, self.index = list(ids), {pid: i for i, pid in enumerate(ids)}
        self.emb = dp.normalize(matrix)
        self.predictor = (dp.DotsPredictor.load(cfg.predictor_path, cfg.lr, self.seed) if cfg.predictor_path else
                          dp.DotsPredictor(self.emb.shape[1], cfg.hidden, cfg.layers, cfg.dropout, cfg.lr, self.seed))
        if self.predictor.shape["dim"] != self.emb.shape[1]:
            raise ValueError(f"predictor {cfg.predictor_path} expects {self.predictor.shape['dim']}-dim embeddings, "
                             f"the encoder gives {self.emb.shape[1]}")
        self.taken, self._pool_key = np.zeros(len(ids), bool), None
        if self._pending is not None:
            state, self._pending = self._pending, None
            self.load_state_dict(state)

    def _rows(self, ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self.index[i] for i in ids), np.int64, len(ids))
        except KeyError as e:
            raise ValueError(f"DOTS: prompt {e.args[0]!r} has no embedding; embed the whole pool "
                             f"(bind or set_embeddings) before training") from None

    def _pool(self, pool: Sequence[Prompt]) -> np.ndarray | None:
        """Embedding rows of the pool's prompts; None when the pool is the embedded list, in order."""
        if self.emb is None:
            raise RuntimeError("DotsSelector has no prompt embeddings: call bind(...) or set_embeddings(ids, matrix)")
        key = (id(pool), len(pool), pool[0].id, pool[-1].id)
        if key != self._pool_key:
            same = len(pool) == len(self.ids) and all(p.id == i for p, i in zip(pool, self.ids))
            self._pool_rows, self._pool_key = None if same else self._rows([p.id for p in pool]), key
        return self._pool_rows

    # ------------------------------------------------------------------ the loop
    def probe(self, pool: Sequence[Prompt], ledger: Any, ctx: Context) -> list[Prompt]:
        """At a refresh step (the first, then every mu): K reference prompts drawn uniformly."""
        if not pool or (self.refresh_step >= 0 and 0 <= ctx.step - self.refresh_step < self.cfg.mu):
            return []
        self._pool(pool)
        pick = self.rng.choice(len(pool), size=min(self.cfg.ref_size, len(pool)), replace=False)
        return [pool[i] for i in pick]

    def ask(self, candidates: Sequence[Prompt], budget: int, ledger: Any, ctx: Context) -> Selection:
        if budget <= 0 or not candidates:
            return Selection((), ())
        rows = self._pool(candidates)
        at = slice(None) if rows is None else rows
        pred = np.full(len(candidates), self.cfg.target) if self.pred is None else self.pred[at]
        taken = self.taken[at]
        if len(candidates) - taken.sum() < budget:  # the round used up the pool: exclude this step's picks only
            mine = np.zeros(len(self.ids), bool)
            mine[self._rows(list(self.step_pred))] = True
            taken = mine[at]
        pick, prob = target_sample(pred, budget, self.cfg.tau, self.cfg.target, self.rng, taken)
        self.taken[pick if rows is None else rows[pick]] = True
        chosen = [candidates[i] for i in pick]
        self.step_pred.update((p.id, float(pred[i])) for p, i in zip(chosen, pick))
        reason = "target" if self.pred is not None else "no_prediction"
        return Selection(tuple(chosen), tuple(Decision(p.id, True, reason, float(q)) for p, q in zip(chosen, prob)))

    def tell(self, groups: Sequence[Group], ledger: Any, ctx: Context) -> None:
        """Probe groups (``ctx.purpose == "probe"``) refresh the predictions. A step's training groups
        are scored against the predictions they were chosen with and join the round's training data."""
        if ctx.purpose == "probe":
            if groups:
                self._refresh(groups, ctx.step)
            return
        known = [g for g in groups if g.prompt_id in self.index]
        m = dict(self._round_metrics, **{"select/dots/refreshes": float(self.refreshes)})
        seen = np.array([(self.step_pred[g.prompt_id], g.accuracy) for g in known if g.prompt_id in self.step_pred])
        if len(seen):
            p, a = seen.T
            m.update({"select/dots/chosen_pred_mean": float(p.mean()),
                      "select/dots/chosen_success_mean": float(a.mean()),
                      "select/dots/chosen_abs_err": float(np.abs(p - a).mean())})
            if (r := dp.pearson(p, a)) is not None:
                m["select/dots/chosen_pearson"] = r  # range-restricted: every p is near the target
        if groups:
            m["select/dots/chosen_informative_frac"] = float(np.mean([not g.is_zero_variance for g in groups]))
        if self.rounds and known:
            self.rounds[-1].add(self._rows([g.prompt_id for g in known]), np.array([g.accuracy for g in known]))
        self._last, self.step_pred = m, {}

    def _refresh(self, groups: Sequence[Group], step: int) -> None:
        cfg, net, emb = self.cfg, self.predictor, self.emb
        assert net is not None and emb is not None
        rows = self._rows([g.prompt_id for g in groups])
        y = np.array([g.accuracy for g in groups], np.float32)
        t0 = time.perf_counter()
        loss = net.fit(emb, self.rounds, cfg.train_steps, cfg.train_batch, self.rng) if cfg.online else None
        t1 = time.perf_counter()
        a, c, r = net.recalibration(emb, rows, y, self.rng)  # trained on past rounds only: held out
        pred = net.predict(emb, rows, y)
        self.pred = np.clip(pred * np.float32(a) + np.float32(c), 0.0, 1.0)
        self.recal, self.refresh_step, self.refreshes = (a, c), step, self.refreshes + 1
        self.rounds = (self.rounds + [dp.Round(rows, y)])[-cfg.window:]
        self.rounds[-1].add(rows, y)
        self.taken[:] = False
        self._round_metrics = {
            "select/dots/pred_mean": float(self.pred.mean()), "select/dots/pred_std": float(self.pred.std()),
            "select/dots/ref_success_mean": float(y.mean()),
            "select/dots/recal_slope": a, "select/dots/recal_intercept": c,
            "time/dots/train": t1 - t0, "time/dots/predict": time.perf_counter() - t1,
            **({"select/dots/pearson": r} if r is not None else {}),
            **({"select/dots/train_loss": loss} if loss is not None else {}),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state, "pool_size": len(self.ids),
            "predictor": self.predictor.state_dict() if self.predictor is not None else None,
            "pred": None if self.pred is None else self.pred.copy(), "taken": np.flatnonzero(self.taken),
            "step_pred": dict(self.step_pred), "rounds": [asdict(r) for r in self.rounds],
            "recal": tuple(self.recal), "refresh_step": self.refresh_step, "refreshes": self.refreshes,
            "round_metrics": dict(self._round_metrics), "last": dict(self._last),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.predictor is None:  # the embeddings come later (bind): apply the state then
            self._pending = state
            return
        if state["pool_size"] != len(self.ids):
            raise ValueError(f"DOTS state is for a pool of {state['pool_size']} prompts, this one has {len(self.ids)}")
        self.rng.bit_generator.state = state["rng"]
        if state["predictor"] is not None:
            self.predictor.load_state_dict(state["predictor"])
        self.pred = None if state["pred"] is None else np.array(state["pred"], np.float32)
        self.taken = np.zeros(len(self.ids), bool)
        self.taken[np.asarray(state["taken"], np.int64)] = True
        self.step_pred = dict(state["step_pred"])
        self.rounds = [dp.Round(**{k: np.array(v) for k, v in r.items()}) for r in state["rounds"]]
        self.recal, self.refresh_step, self.refreshes = tuple(state["recal"]), state["refresh_step"], state["refreshes"]
        self._round_metrics, self._last = dict(state["round_metrics"]), dict(state["last"])

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
