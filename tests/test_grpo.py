"""rollsift.grpo against numbers computed by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest
import torch

from rollsift.trainer.grpo import group_advantages, policy_loss

f64 = torch.float64


def t(x, **kw):
    return torch.tensor(x, dtype=f64, **kw)


def close(a, b, tol=1e-12):
    torch.testing.assert_close(torch.as_tensor(a, dtype=f64), torch.as_tensor(b, dtype=f64), rtol=0, atol=tol)


# ----------------------------------------------------------------------------- advantages


def test_advantages_unbiased_std_is_the_default():
    # rewards 1,0,0,1: mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.57735...
    # A = +-0.5 / (sqrt(1/3) + 1e-6)
    a = group_advantages(t([[1.0, 0.0, 0.0, 1.0]]))
    d = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    close(a, [[d, -d, -d, d]])
    assert a.dtype == f64 and a.shape == (1, 4)


def test_advantages_population_std_and_eps():
    # population std of 1,0,0,1 is 0.5, so with eps = 0 the advantages are exactly +-1
    a = group_advantages(t([[1.0, 0.0, 0.0, 1.0]]), std="population", eps=0.0)
    close(a, [[1.0, -1.0, -1.0, 1.0]])
    # TRL / PODS epsilon: +-0.5 / (0.5 + 1e-4)
    a = group_advantages(t([[1.0, 0.0, 0.0, 1.0]]), std="population", eps=1e-4)
    close(a, [[0.5 / 0.5001, -0.5 / 0.5001, -0.5 / 0.5001, 0.5 / 0.5001]])


def test_advantages_without_std_scaling():
    # Dr. GRPO: only centred. rewards 3,1,2: mean 2 -> 1,-1,0 (and never divided by the std 1)
    close(group_advantages(t([[3.0, 1.0, 2.0], [0.0, 0.0, 4.0]]), scale="none"),
          [[1.0, -1.0, 0.0], [-4 / 3, -4 / 3, 8 / 3]])


def test_advantages_of_groups_of_different_sizes():
    # group 1: 1,0 -> mean 0.5, unbiased std sqrt(0.5) -> +-0.5/sqrt(0.5) = +-0.70710678
    # group 2: 2,0,1 -> mean 1, unbiased std sqrt((1+1+0)/2) = 1 -> 1,-1,0
    # group 3: a single completion -> 0 (no baseline to compare with)
    # group 4: all equal -> 0 (no signal), not NaN
    out = group_advantages([(1.0, 0.0), np.array([2.0, 0.0, 1.0]), [5.0], (1, 1, 1)], eps=0.0)
    assert isinstance(out, list) and [len(o) for o in out] == [2, 3, 1, 3]
    close(out[0], [math.sqrt(0.5), -math.sqrt(0.5)], tol=1e-6)  # default dtype float32
    close(out[1], [1.0, -1.0, 0.0], tol=1e-6)
    close(out[2], [0.0])
    close(out[3], [0.0, 0.0, 0.0])


def test_all_equal_groups_get_exact_zeros():
    # float32 mean of seven 0.1s is 0.1 + 7.5e-9; divided by (std ~ 1e-8) + 1e-6 that rounding
    # would leave a nonzero advantage. An all-equal group carries no signal: exactly 0.
    for scale in ("group", "none"):
        close(group_advantages(torch.full((2, 7), 0.1), scale=scale), torch.zeros(2, 7))


def test_advantages_reject_bad_knobs():
    with pytest.raises(ValueError, match=r"std='sample'.*'unbiased', 'population'"):
        group_advantages(t([[1.0, 0.0]]), std="sample")
    with pytest.raises(ValueError, match=r"scale='batch'"):
        group_advantages(t([[1.0, 0.0]]), scale="batch")
    with pytest.raises(ValueError, match=r"2-D \[G, n\]"):
        group_advantages(t([1.0, 0.0]))


# ----------------------------------------------------------------------------- clipping


def one_token_each(ratios, adv, **kw):
    """B sequences of one token each with the given ratios u = exp(logp - old_logp)."""
    logp = torch.log(t(ratios)).reshape(-1, 1).requires_grad_(True)
    old = torch.zeros_like(logp)
    mask = torch.ones_like(logp, dtype=torch.bool)
    loss, metrics = policy_loss(logp, old, t(adv), mask, **kw)
    loss.backward()
    return loss, metrics, logp.grad.reshape(-1)


def test_clip_on_positive_and_negative_advantages():
    # clip_low 0.2, clip_high 0.28 -> u is clipped to [0.8, 1.28]
    # A=+1 u=1.5: max(-1.5, -1.28) = -1.28 (clipped: no gradient)
    # A=+1 u=0.5: max(-0.5, -0.8)  = -0.5  (unclipped: d/dlogp = -A*u = -0.5)
    # A=-1 u=0.5: max( 0.5,  0.8)  =  0.8  (clipped: no gradient)
    # A=-1 u=1.5: max( 1.5,  1.28) =  1.5  (unclipped: d/dlogp = -A*u = 1.5)
    # token-mean over 4 tokens: (-1.28 - 0.5 + 0.8 + 1.5) / 4 = 0.52 / 4 = 0.13
    loss, m, grad = one_token_each([1.5, 0.5, 0.5, 1.5], [1.0, 1.0, -1.0, -1.0], clip_low=0.2, clip_high=0.28)
    close(loss, 0.13)
    close(grad, [0.0, -0.5 / 4, 0.0, 1.5 / 4])
    assert m["loss/clip_frac"] == pytest.approx(0.5)
    # approx_kl = mean(old - logp) = -(ln1.5 + ln0.5 + ln0.5 + ln1.5) / 4
    assert m["loss/approx_kl"] == pytest.approx(-(2 * math.log(1.5) + 2 * math.log(0.5)) / 4)
    assert m["loss/policy"] == pytest.approx(0.13)


def test_low_and_high_bounds_are_separate():
    # A=+1, u=1.25 is inside clip_high=0.28 (1.25 < 1.28): loss -1.25, gradient -1.25
    loss, m, grad = one_token_each([1.25], [1.0], clip_low=0.2, clip_high=0.28)
    close(loss, -1.25)
    close(grad, [-1.25])
    assert m["loss/clip_frac"] == 0.0
    # ... but outside clip_high=0.2: max(-1.25, -1.2) = -1.2, gradient 0
    loss, m, grad = one_token_each([1.25], [1.0], clip_low=0.2, clip_high=0.2)
    close(loss, -1.2)
    close(grad, [0.0])
    assert m["loss/clip_frac"] == 1.0
    # A=-1, u=0.85 is inside clip_low=0.2 (0.85 > 0.8): loss 0.85
    loss, _, grad = one_token_each([0.85], [-1.0], clip_low=0.2, clip_high=0.28)
    close(loss, 0.85)
    close(grad, [0.85])
    # ... but outside clip_low=0.1: max(0.85, 0.9) = 0.9, gradient 0
    loss, _, grad = one_token_each([0.85], [-1.0], clip_low=0.1, clip_high=0.28)
    close(loss, 0.9)
    close(grad, [0.0])


# ----------------------------------------------------------------------------- aggregation


def unequal_lengths():
    # sequence 0 has 1 token, sequence 1 has 3; u = 1 everywhere, A = (2, -1)
    # token losses -A*u: seq0: -2; seq1: 1, 1, 1. Padding holds garbage that must not matter.
    logp = t([[-1.0, float("nan"), float("inf")], [-0.5, -0.7, -0.9]]).requires_grad_(True)
    old = t([[-1.0, float("-inf"), 3.0], [-0.5, -0.7, -0.9]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    return logp, old, t([2.0, -1.0]), mask


@pytest.mark.parametrize(
    "agg, expected, grads",
    [
        # all 4 tokens: (-2 + 1 + 1 + 1) / 4 = 0.25; d/dlogp = -A*u / 4
        ("token-mean", 0.25, [[-0.5, 0, 0], [0.25, 0.25, 0.25]]),
        # per sequence mean (-2, 1), then over 2 sequences: -0.5; d = -A / len / 2
        ("seq-mean-token-mean", -0.5, [[-1.0, 0, 0], [1 / 6, 1 / 6, 1 / 6]]),
        ("seq-mean", -0.5, [[-1.0, 0, 0], [1 / 6, 1 / 6, 1 / 6]]),
        # per sequence sum (-2, 3), then over 2 sequences: 0.5; d = -A / 2
        ("seq-mean-token-sum", 0.5, [[-1.0, 0, 0], [0.5, 0.5, 0.5]]),
    ],
)
def test_aggregation_on_unequal_lengths(agg, expected, grads):
    logp, old, adv, mask = unequal_lengths()
    loss, m = policy_loss(logp, old, adv, mask, agg=agg)
    loss.backward()
    close(loss, expected)
    close(logp.grad, grads)  # padding gets an exact 0, not NaN
    assert all(math.isfinite(v) for v in m.values())


def test_micro_batches_sum_to_the_full_batch():
    torch.manual_seed(0)
    logp = torch.randn(4, 5, dtype=f64, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(4, 5, dtype=f64)
    adv = torch.randn(4, dtype=f64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        full, _ = policy_loss(logp, old, adv, mask, agg=agg)
        (g_full,) = torch.autograd.grad(full, logp)
        kw = {"agg": agg, "total_tokens": int(mask.sum()), "total_seqs": 4}
        part = sum(policy_loss(logp[s], old[s], adv[s], mask[s], **kw)[0] for s in (slice(0, 1), slice(1, 4)))
        (g_part,) = torch.autograd.grad(part, logp)
        close(part, full)
        close(g_part, g_full)


# ----------------------------------------------------------------------------- KL to a reference


def test_k3_kl_penalty():
    # x = ref - logp = (ln 2, -ln 2); k3 = e^x - x - 1 = (1 - ln 2, ln 2 - 1/2), mean = 0.25
    # A = 0, so loss = 0.1 * 0.25 = 0.025.
    # d k3 / d logp = 1 - e^x = (-1, 0.5); times 0.1 / 2 tokens = (-0.05, 0.025)
    logp = t([[-1.0, -2.0]]).requires_grad_(True)
    ref = logp.detach() + t([[math.log(2), -math.log(2)]])
    loss, m = policy_loss(logp, logp.detach(), t([0.0]), torch.ones(1, 2), kl_coef=0.1, ref_logp=ref)
    loss.backward()
    close(loss, 0.025)
    close(logp.grad, [[-0.05, 0.025]])
    assert m["loss/kl_ref"] == pytest.approx(0.25)
    assert m["loss/policy"] == 0.0


def test_k3_is_clamped_like_verl_low_var_kl():
    # x = 5: e^5 - 6 = 142.4 is clamped to 10 (and has no gradient there)
    logp = t([[0.0]]).requires_grad_(True)
    loss, _ = policy_loss(logp, logp.detach(), t([0.0]), torch.ones(1, 1), kl_coef=1.0,
                          ref_logp=t([[5.0]]), kl_estimator="low_var_kl")
    loss.backward()
    close(loss, 10.0)
    close(logp.grad, [[0.0]])


def test_kl_metric_without_penalty_and_missing_reference():
    logp = t([[-1.0]])
    loss, m = policy_loss(logp, logp, t([1.0]), torch.ones(1, 1), ref_logp=logp - math.log(2), kl_estimator="k1")
    close(loss, -1.0)  # kl_coef = 0: only reported
    assert m["loss/kl_ref"] == pytest.approx(math.log(2))  # k1 = logp - ref
    with pytest.raises(ValueError, match="kl_coef=0.1 needs ref_logp"):
        policy_loss(logp, logp, t([1.0]), torch.ones(1, 1), kl_coef=0.1)


# ----------------------------------------------------------------------------- decoupled loss


def random_batch(seed=0, b=3, length=6):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(b, length, generator=g, dtype=f64) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(b, length, generator=g, dtype=f64)
    adv = torch.randn(b, generator=g, dtype=f64)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return logp, old, adv, mask


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_decoupled_equals_ppo_when_behaviour_is_old(agg):
    logp, old, adv, mask = random_batch()
    kw = {"clip_low": 0.2, "clip_high": 0.28, "agg": agg}
    ppo, m_ppo = policy_loss(logp, old, adv, mask, **kw)
    (g_ppo,) = torch.autograd.grad(ppo, logp)
    dec, m_dec = policy_loss(logp, old, adv, mask, behaviour_logp=old.clone(), **kw)
    (g_dec,) = torch.autograd.grad(dec, logp)
    assert torch.equal(ppo, dec) and torch.equal(g_ppo, g_dec)
    assert m_ppo["loss/clip_frac"] > 0  # the comparison covered clipped tokens too
    assert m_dec["loss/is_weight_mean"] == 1.0 and m_dec["loss/is_masked_frac"] == 0.0


def test_importance_weight_and_cap():
    # two tokens, u = 1, A = 1; w = exp(old - behaviour) = (2, e^2 = 7.39)
    # mask mode, cap 5: token losses (-2 * 1, dropped); token-mean keeps both tokens in the
    # denominator (AReaL): loss = -2 / 2 = -1; gradient (-A*w/2, 0) = (-1, 0)
    logp = t([[-1.0, -1.0]]).requires_grad_(True)
    behaviour = logp.detach() - t([[math.log(2), 2.0]])
    loss, m = policy_loss(logp, logp.detach(), t([1.0]), torch.ones(1, 2), behaviour_logp=behaviour)
    loss.backward()
    close(loss, -1.0)
    close(logp.grad, [[-1.0, 0.0]])
    assert m["loss/is_masked_frac"] == 0.5
    assert m["loss/is_weight_mean"] == pytest.approx((2 + math.exp(2)) / 2)
    # clamp mode: w = (2, 5): loss = (-2 - 5) / 2 = -3.5, gradient (-1, -2.5)
    logp.grad = None
    loss, m = policy_loss(logp, logp.detach(), t([1.0]), torch.ones(1, 2), behaviour_logp=behaviour, is_mode="clamp")
    loss.backward()
    close(loss, -3.5)
    close(logp.grad, [[-1.0, -2.5]])
    assert m["loss/is_clamped_frac"] == 0.5 and m["loss/is_masked_frac"] == 0.0
    # no cap (the DOTS code): loss = (-2 - e^2) / 2
    loss, _ = policy_loss(logp, logp.detach(), t([1.0]), torch.ones(1, 2), behaviour_logp=behaviour, is_cap=None)
    close(loss, (-2 - math.exp(2)) / 2)


def test_decoupled_clip_is_centred_on_old_not_behaviour():
    # u = pi/pi_old = 1.5 is clipped to 1.2 whatever the behaviour policy; w = 0.5
    # loss = 0.5 * max(-1.5, -1.2) = -0.6; the clipped token has no gradient
    logp = t([[math.log(1.5)]]).requires_grad_(True)
    old = t([[0.0]])
    loss, m = policy_loss(logp, old, t([1.0]), torch.ones(1, 1), behaviour_logp=old + math.log(2))
    loss.backward()
    close(loss, -0.6)
    close(logp.grad, [[0.0]])
    assert m["loss/clip_frac"] == 1.0


# ----------------------------------------------------------------------------- sanity, errors


def test_gradient_at_ratio_one_is_the_policy_gradient():
    # at u = 1 nothing is clipped and d loss / d logp[b, t] = -A_b * mask[b, t] / number of tokens
    logp, _, adv, mask = random_batch(seed=3)
    loss, m = policy_loss(logp, logp.detach(), adv, mask, clip_high=0.28)
    loss.backward()
    close(logp.grad, -adv[:, None] * mask / mask.sum())
    close(loss, -(adv[:, None] * mask).sum() / mask.sum())
    assert m["loss/clip_frac"] == 0.0 and m["loss/approx_kl"] == 0.0


def test_token_level_advantages_are_accepted():
    logp, old, adv, mask = random_batch(seed=4)
    a, _ = policy_loss(logp, old, adv, mask)
    b, _ = policy_loss(logp, old, adv[:, None].expand(mask.shape), mask)
    close(a, b)


def test_bad_knobs_name_the_value_and_what_is_allowed():
    logp, old, adv, mask = random_batch()
    with pytest.raises(ValueError, match=r"agg='mean' is not allowed; choose one of \['token-mean'"):
        policy_loss(logp, old, adv, mask, agg="mean")
    with pytest.raises(ValueError, match=r"is_mode='drop'"):
        policy_loss(logp, old, adv, mask, is_mode="drop")
    with pytest.raises(ValueError, match=r"clip_low must be in \[0, 1\), got 1.5"):
        policy_loss(logp, old, adv, mask, clip_low=1.5)
    with pytest.raises(ValueError, match=r"is_cap must be > 0 or None, got 0"):
        policy_loss(logp, old, adv, mask, is_cap=0)
    with pytest.raises(ValueError, match=r"old_logp has shape \(3, 5\)"):
        policy_loss(logp, old[:, :5], adv, mask)
    with pytest.raises(ValueError, match=r"advantages has shape \(2,\)"):
        policy_loss(logp, old, adv[:2], mask)
