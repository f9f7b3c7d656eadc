"""GRPO/DAPO group advantages and the clipped policy loss, as pure torch functions.

Shapes: ``G`` groups of ``n`` completions; ``B`` completions (rows) of a batch, right-padded to
``L`` tokens; ``mask`` [B, L] marks the real completion tokens. Padding positions may hold any
value (even inf or NaN): they are replaced before any arithmetic, so they contribute nothing to
the loss, its gradient or the metrics.

The objective, per valid token t of completion b (docs/loss.md has the long form)::

    u   = exp(logp - old_logp)                      ratio to the pre-update ("old", proximal) policy
    pg  = max(-A_b * u, -A_b * clip(u, 1 - clip_low, 1 + clip_high))
    w   = exp(old_logp - behaviour_logp)            only when behaviour_logp is given (AReaL)
    loss = agg(w * pg) + kl_coef * agg(KL_k3(logp || ref_logp))

Defaults follow verl (the framework GRESO, DAPO and DOTS are built on) unless stated otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor

SCALES = ("group", "none")
STD_KINDS = ("unbiased", "population")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
AGG_ALIASES = {"seq-mean": "seq-mean-token-mean"}  # the name LearnerConfig.loss_agg uses
IS_MODES = ("mask", "clamp")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")

# verl clamps log-ratios to [-20, 20] before exp() so that a wild token cannot overflow.
_LOG_RATIO_LIMIT = 20.0
# verl's low_var_kl clamps the per-token k3 value to [-10, 10].
_KL_LIMIT = 10.0


def _choose(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


def group_advantages(
    rewards: Any,
    scale: str = "group",
    std: str = "unbiased",
    eps: float = 1e-6,
) -> Tensor | list[Tensor]:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std + eps.

    ``rewards`` is either a 2-D tensor/array [G, n] (equal group sizes; returns a tensor [G, n])
    or a sequence of per-group reward sequences of any sizes, e.g. ``[g.rewards for g in groups]``
    (returns a list of 1-D tensors [n_i]). Floating tensors keep their dtype; anything else
    becomes torch's default dtype.

    scale: "group" divides by the group std (GRPO, DAPO, PODS); "none" only centres
        (Dr. GRPO; TRL ``scale_rewards="none"``, verl ``norm_adv_by_std_in_grpo=False``).
    std: "unbiased" (divide by n - 1) is torch's ``Tensor.std`` default, which TRL, verl, the PODS
        code and the DOTS code all call; "population" (divide by n) is ``Group.std``. For binary
        rewards the two differ by the factor sqrt(n / (n - 1)), a global rescale of the step size.
    eps: added to the std. The default 1e-6 is verl's (``compute_grpo_outcome_advantage``, also in
        the GRESO, DAPO and DOTS forks); TRL's GRPOTrainer and the PODS code use 1e-4.

    A group whose rewards are all equal gets exactly zero advantages (no signal; TRL and verl give
    0 up to rounding), and so does a group of one completion (TRL treats its std as 0; verl
    instead uses mean 0 and std 1, i.e. A = r).
    """
    _choose("scale", scale, SCALES)
    _choose("std", std, STD_KINDS)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if hasattr(rewards, "ndim"):
        r = _as_float(rewards)
        if r.ndim != 2:
            raise ValueError(
                f"rewards as a tensor/array must be 2-D [G, n], got shape {tuple(r.shape)}; "
                "pass a list of 1-D groups for groups of different sizes"
            )
        return _advantages_2d(r, scale, std, eps)
    return [_advantages_2d(_as_float(g).reshape(1, -1), scale, std, eps)[0] for g in rewards]


def _as_float(x: Any) -> Tensor:
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _advantages_2d(r: Tensor, scale: str, std: str, eps: float) -> Tensor:  # r [G, n]
    n = r.shape[1]
    if n == 0:
        return r.clone()
    # An all-equal group gets exact zeros: its float mean can be off by an ulp, and with a tiny
    # eps that rounding error would be blown up into a sizeable advantage.
    flat = (r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True))  # [G, 1]
    centred = torch.where(flat, 0.0, r - r.mean(dim=1, keepdim=True))  # [G, n]
    if scale == "none" or n == 1:  # one value: the unbiased std is undefined, centred is 0
        return centred
    s = r.std(dim=1, keepdim=True, correction=1 if std == "unbiased" else 0)  # [G, 1]
    return torch.where(flat, 0.0, centred / (s + eps))


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    behaviour_logp: Tensor | None = None,
    is_cap: float | None = 5.0,
    is_mode: str = "mask",
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    kl_estimator: str = "k3",
    total_tokens: int | None = None,
    total_seqs: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Token-level PPO-clip loss (GRPO/DAPO) with the optional AReaL decoupled correction.

    logp [B, L]: log-probs of the sampled tokens under the policy being trained (with grad).
    old_logp [B, L]: the same under the pre-update policy (detached; PPO's pi_old, AReaL's
        "proximal" policy). The clip is centred here.
    advantages [B] (one per completion, broadcast over its tokens) or [B, L].
    mask [B, L]: 1/True for completion tokens, 0/False for padding and prompt.
    clip_low, clip_high: u is clipped to [1 - clip_low, 1 + clip_high]; 0.2 / 0.2 is PPO and
        verl's default, DAPO's clip-higher uses clip_high = 0.28.
    agg: "token-mean" = sum over all valid tokens / their number (DAPO, verl's default, TRL's
        "dapo"); "seq-mean-token-mean" (alias "seq-mean") = each sequence's token mean, then the
        mean over sequences (original GRPO, the PODS code); "seq-mean-token-sum" = each sequence's
        token sum, then the mean over sequences (Dr. GRPO-like). Sequences without valid tokens do
        not count.
    behaviour_logp [B, L]: log-probs under the policy that sampled the tokens, when it differs
        from old_logp (replayed groups, asynchronous rollouts). Each token's loss is multiplied by
        w = exp(old_logp - behaviour_logp). None means w = 1: plain PPO.
    is_cap, is_mode: tokens with w > is_cap are dropped from the loss ("mask"; AReaL's default,
        cap 5.0) or have w clamped to is_cap ("clamp"). None disables the cap (the DOTS code).
        A masked token still counts in the denominator (AReaL keeps the original token count).
    kl_coef, ref_logp, kl_estimator: a KL penalty to a reference policy, aggregated like the
        policy term and added with weight kl_coef (off by default, as in DAPO/DOTS). "k3" and
        its verl name "low_var_kl" are exp(x) - x - 1 with x = ref_logp - logp clamped to
        [-20, 20] and the result clamped to [-10, 10] as verl does; "k1" is logp - ref_logp,
        "k2" is (logp - ref_logp)^2 / 2. The KL term is not importance-weighted.
    total_tokens, total_seqs: denominators of the whole batch when it is split into micro-batches
        (token-mean uses total_tokens, the seq-mean modes total_seqs), so that the micro-batch
        losses sum to the full-batch loss. None uses this call's own counts.

    Returns ``(loss, metrics)``; ``loss`` is a scalar tensor, metrics are floats:
    ``loss/policy`` (the policy term), ``loss/clip_frac`` (valid tokens where the clipped branch
    is active), ``loss/approx_kl`` (token mean of old_logp - logp: the k1 estimate of
    KL(pi_old || pi_theta), verl's ppo_kl), ``loss/is_weight_mean`` (token mean of w before the
    cap; 1 when not decoupled), ``loss/is_masked_frac`` / ``loss/is_clamped_frac`` (valid tokens
    whose w exceeded the cap), and ``loss/kl_ref`` when ref_logp is given.
    """
    agg = AGG_ALIASES.get(agg, agg)
    _choose("agg", agg, AGG_MODES)
    _choose("is_mode", is_mode, IS_MODES)
    _choose("kl_estimator", kl_estimator, KL_ESTIMATORS)
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high!r}")
    if is_cap is not None and not is_cap > 0:
        raise ValueError(f"is_cap must be > 0 or None, got {is_cap!r}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}")
    if kl_coef > 0 and ref_logp is None:
        raise ValueError(f"kl_coef={kl_coef!r} needs ref_logp (the reference policy's log-probs)")
    shape = tuple(logp.shape)
    if len(shape) != 2:
        raise ValueError(f"logp must be [B, L], got shape {shape}")
    for name, t in (("old_logp", old_logp), ("mask", mask), ("behaviour_logp", behaviour_logp),
                    ("ref_logp", ref_logp)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} like logp")
    if tuple(advantages.shape) not in ((shape[0],), shape):
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)}, expected [{shape[0]}] or {list(shape)}"
        )

    dtype = torch.promote_types(logp.dtype, torch.float32)
    valid = mask.bool()  # [B, L]
    zero = torch.zeros((), dtype=dtype, device=logp.device)

    def clean(t: Tensor) -> Tensor:  # padding -> 0 before any arithmetic: no NaN can leak into grads
        return torch.where(valid, t.to(dtype), zero)

    lp = clean(logp)
    old = clean(old_logp.detach())
    adv = advantages.detach().to(dtype)
    adv = clean(adv.unsqueeze(1).expand(shape) if adv.dim() == 1 else adv)  # [B, L]

    ratio = torch.exp(torch.clamp(lp - old, -_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))  # u [B, L]
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(unclipped, clipped)  # [B, L]; pessimistic bound of PPO

    with torch.no_grad():
        # log w [B, L]; 0 (w = 1) when the old policy sampled the tokens itself
        log_w = torch.zeros_like(old) if behaviour_logp is None else old - clean(behaviour_logp.detach())
        w_raw = torch.exp(torch.clamp(log_w, -_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT))  # [B, L]
        over = valid & (log_w > math.log(is_cap)) if is_cap is not None else torch.zeros_like(valid)
        if is_mode == "mask":
            w = torch.where(over, zero, w_raw)
        else:
            w = torch.clamp(w_raw, max=is_cap) if is_cap is not None else w_raw
        w = torch.where(valid, w, zero)
    # w is exactly 1 on valid tokens when behaviour_logp is None, so the product is plain PPO.
    pg_loss = _aggregate(pg * w, valid, agg, total_tokens, total_seqs)
    loss = pg_loss

    kl_loss = None
    if ref_logp is not None:
        kl = torch.where(valid, _kl(lp, clean(ref_logp.detach()), kl_estimator), zero)  # [B, L]
        kl_loss = _aggregate(kl, valid, agg, total_tokens, total_seqs)
        if kl_coef > 0:
            loss = loss + kl_coef * kl_loss

    with torch.no_grad():
        n_valid = valid.sum().clamp(min=1).to(dtype)

        def token_mean(x: Tensor) -> Tensor:
            return torch.where(valid, x.to(dtype), zero).sum() / n_valid

        stats = {
            "loss/policy": pg_loss.detach(),
            "loss/clip_frac": token_mean(clipped > unclipped),
            "loss/approx_kl": token_mean(old - lp),
            "loss/is_weight_mean": token_mean(w_raw),
            "loss/is_masked_frac": token_mean(over) if is_mode == "mask" else zero,
            "loss/is_clamped_frac": token_mean(over) if is_mode == "clamp" else zero,
        }
        if kl_loss is not None:
            stats["loss/kl_ref"] = kl_loss.detach()
        # one device-to-host copy for all metrics instead of one sync each
        metrics = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
    return loss, metrics


def _aggregate(
    x: Tensor, valid: Tensor, agg: str, total_tokens: int | None, total_seqs: int | None
) -> Tensor:
    """One number from token values x [B, L] that are already 0 outside ``valid`` [B, L]."""
    if agg == "token-mean":
        if total_tokens is not None:
            return x.sum() / max(total_tokens, 1)
        return x.sum() / valid.sum().clamp(min=1).to(x.dtype)
    lengths = valid.sum(dim=1)  # [B]
    per_seq = x.sum(dim=1)  # [B]
    if agg == "seq-mean-token-mean":
        per_seq = per_seq / lengths.clamp(min=1).to(x.dtype)
    if total_seqs is not None:
        return per_seq.sum() / max(total_seqs, 1)
    return per_seq.sum() / (lengths > 0).sum().clamp(min=1).to(x.dtype)


def _kl(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from the sampled tokens' log-probs [B, L]."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k2":
        return 0.5 * (logp - ref_logp).square()
    x = torch.clamp(ref_logp - logp, -_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)
    return torch.clamp(torch.exp(x) - x - 1.0, -_KL_LIMIT, _KL_LIMIT)


__all__ = ["AGG_MODES", "group_advantages", "policy_loss"]
