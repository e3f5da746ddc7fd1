"""rlhfctl.ppo.functional against values worked out by hand (arithmetic in the comments).

Every tensor is float64 so the hand values compare at default tolerances. Padded positions hold a garbage
value (99) wherever the function reads them, so a result that leaks padding fails loudly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlhfctl.ppo.functional import (
    AdaptiveKLController,
    FixedKLController,
    aggregate_loss,
    approx_kl,
    cispo_surrogate,
    clipped_surrogate,
    compute_advantages,
    discounted_returns,
    dynamic_filter_keep,
    entropy_from_logits,
    gae_advantages_and_returns,
    group_baseline,
    is_correction_weights,
    kl_loss,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    overlong_penalty,
    policy_loss,
    policy_ratio,
    stop_properly_penalty,
    value_loss,
)

torch.set_num_threads(1)

G = 99.0  # garbage in padded positions


def T(*rows) -> torch.Tensor:
    """A float64 tensor from nested lists."""
    return torch.tensor(rows[0] if len(rows) == 1 else list(rows), dtype=torch.float64)


def M(*rows) -> torch.Tensor:
    """A bool action mask from 0/1 lists."""
    return torch.tensor(list(rows), dtype=torch.bool)


# ------------------------------------------------------------------------------------------------ masked_mean


def test_masked_mean_all_dims():
    x = T([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = M([1, 1, 0], [0, 1, 1])
    # dim=None: (1 + 2 + 5 + 6) / 4 = 3.5  (a plain mean would be 21 / 6 = 3.5 too, so also check rows)
    assert_close(masked_mean(x, mask), T(3.5))
    # rows: (1 + 2) / 2 = 1.5 ; (5 + 6) / 2 = 5.5
    assert_close(masked_mean(x, mask, dim=1), T([1.5, 5.5]))
    # columns: 1 / 1 ; (2 + 5) / 2 = 3.5 ; 6 / 1
    assert_close(masked_mean(x, mask, dim=0), T([1.0, 3.5, 6.0]))
    # 0/1 float mask behaves like the bool one
    assert_close(masked_mean(x, mask.double(), dim=1), T([1.5, 5.5]))


def test_masked_mean_no_mask_and_empty_row():
    x = T([1.0, 2.0], [3.0, 10.0])
    assert_close(masked_mean(x, None), T(4.0))  # 16 / 4
    # An empty row gives 0, not NaN: row 0 -> 0 ; row 1 -> 10 / 1
    assert_close(masked_mean(x, M([0, 0], [0, 1]), dim=1), T([0.0, 10.0]))


def test_masked_mean_shape_mismatch():
    with pytest.raises(ValueError, match="mask has shape"):
        masked_mean(T([[1.0, 2.0]]), M([1, 1, 1]))


# ---------------------------------------------------------------------------------------------- masked_whiten


def test_masked_whiten_uses_biased_variance_and_ignores_padding():
    x = T([[1.0, 2.0, 3.0, G]])
    mask = M([1, 1, 1, 0])
    # mean = (1 + 2 + 3) / 3 = 2 ; biased var = ((-1)^2 + 0^2 + 1^2) / 3 = 2/3 ; 1/std = sqrt(3/2) = 1.2247449
    # (the unbiased variance would be 2/2 = 1 and give [-1, 0, 1])
    s = math.sqrt(1.5)
    assert_close(masked_whiten(x, mask), T([[-s, 0.0, s, 0.0]]))
    # shift_mean=False rescales only: whitened + mean
    assert_close(masked_whiten(x, mask, shift_mean=False), T([[2.0 - s, 2.0, 2.0 + s, 0.0]]))


def test_masked_whiten_constant_is_zero_not_nan():
    # var = 0 is clamped to eps, (x - mean) = 0 -> 0
    assert_close(masked_whiten(T([[4.0, 4.0, G]]), M([1, 1, 0])), T([[0.0, 0.0, 0.0]]))


# -------------------------------------------------------------------------------------------------- approx_kl

LP = T([[-1.0, -2.0, -0.5]])
REF = T([[-1.5, -1.0, -0.5]])
# log r = log_probs - ref_log_probs = [0.5, -1.0, 0.0]


def test_approx_kl_k1():
    assert_close(approx_kl(LP, REF, estimator="k1"), T([[0.5, -1.0, 0.0]]))


def test_approx_kl_k2():
    # (log r)^2 / 2 = [0.25/2, 1/2, 0] = [0.125, 0.5, 0]
    assert_close(approx_kl(LP, REF, estimator="k2"), T([[0.125, 0.5, 0.0]]))


def test_approx_kl_k3():
    # exp(-log r) - 1 + log r:
    #   exp(-0.5) - 1 + 0.5 = 0.6065306597 - 0.5 = 0.1065306597
    #   exp(1)   - 1 - 1   = 2.7182818285 - 2   = 0.7182818285
    #   exp(0)   - 1 + 0   = 0
    assert_close(approx_kl(LP, REF, estimator="k3"), T([[0.1065306597, 0.7182818285, 0.0]]))


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_approx_kl_mask_zeroes_padding(estimator):
    full = approx_kl(LP, REF, estimator=estimator)
    masked = approx_kl(LP, REF, M([1, 0, 1]), estimator=estimator)
    assert masked[0, 1].item() == 0.0
    assert_close(masked[0, [0, 2]], full[0, [0, 2]])


def test_approx_kl_clamped_to_plus_minus_10():
    # log r = [-20, 20]:
    #   k1 = [-20, 20]                       -> clamp -> [-10, 10]
    #   k2 = [200, 200]                      -> clamp -> [10, 10]
    #   k3 = [exp(20) - 21, exp(-20) + 19]   -> clamp -> [10, 10]
    lp, ref = T([[-20.0, 0.0]]), T([[0.0, -20.0]])
    assert_close(approx_kl(lp, ref, estimator="k1"), T([[-10.0, 10.0]]))
    assert_close(approx_kl(lp, ref, estimator="k2"), T([[10.0, 10.0]]))
    assert_close(approx_kl(lp, ref, estimator="k3"), T([[10.0, 10.0]]))


def test_approx_kl_bf16_is_computed_in_float32():
    out = approx_kl(LP.bfloat16(), REF.bfloat16(), estimator="k3")
    assert out.dtype == torch.float32


def test_approx_kl_invalid():
    with pytest.raises(ValueError, match="KL estimator"):
        approx_kl(LP, REF, estimator="k4")
    with pytest.raises(ValueError, match="ref_log_probs"):
        approx_kl(LP, REF[:, :2])
    with pytest.raises(ValueError, match="action_mask"):
        approx_kl(LP, REF, M([1, 1]))


# --------------------------------------------------------------------------------------- kl_penalized_rewards

KL = T([0.1, 0.2, G, G], [G, 0.6, 0.7, 0.8])
MASK_RL = M([1, 1, 0, 0], [0, 1, 1, 1])  # row 0 right-padded, row 1 left-padded


def test_kl_penalized_rewards_left_and_right_padding():
    # kl_coef = 0.5:
    # row 0: [-0.05, -0.1 + 1.0, 0, 0]            (last action token is index 1)
    # row 1: [0, -0.3, -0.35, -0.4 + 2.0 = 1.6]   (last action token is index 3)
    out = kl_penalized_rewards(T([1.0, 2.0]), KL, MASK_RL, kl_coef=0.5)
    assert_close(out, T([-0.05, 0.9, 0.0, 0.0], [0.0, -0.3, -0.35, 1.6]))


def test_kl_penalized_rewards_interior_hole_and_clip():
    # mask [1, 0, 1, 0]: last action token is index 2 ; reward 5 clipped to 1.5 ; kl_coef = 1
    # [-0.1, 0, -0.3 + 1.5 = 1.2, 0]
    out = kl_penalized_rewards(T([5.0]), T([[0.1, G, 0.3, G]]), M([1, 0, 1, 0]), 1.0, reward_clip_range=(-1.5, 1.5))
    assert_close(out, T([[-0.1, 0.0, 1.2, 0.0]]))


def test_kl_penalized_rewards_negative_coef_means_no_penalty():
    out = kl_penalized_rewards(T([1.0, 2.0]), KL, MASK_RL, kl_coef=-3.0)
    assert_close(out, T([0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]))


def test_kl_penalized_rewards_invalid():
    with pytest.raises(ValueError, match="no action token"):
        kl_penalized_rewards(T([1.0, 2.0]), KL, M([1, 1, 0, 0], [0, 0, 0, 0]), 0.1)
    with pytest.raises(ValueError, match="one scalar per sequence"):
        kl_penalized_rewards(T([[1.0], [2.0]]), KL, MASK_RL, 0.1)
    with pytest.raises(ValueError, match="kl has shape"):
        kl_penalized_rewards(T([1.0, 2.0]), KL[:, :3], MASK_RL, 0.1)
    with pytest.raises(ValueError, match="low <= high"):
        kl_penalized_rewards(T([1.0, 2.0]), KL, MASK_RL, 0.1, reward_clip_range=(1.0, -1.0))


# ------------------------------------------------------------------------------------------------------- GAE
# The 1x3 example: gamma = 0.9, lambd = 0.95 (gamma * lambd = 0.855)
#   values  V = [0.5, 0.4, 0.3]   rewards r = [0.0, -0.1, 1.0]
#   t=2: delta = 1.0 + 0.9*0   - 0.3 =  0.7    A2 = 0.7
#   t=1: delta = -0.1 + 0.9*0.3 - 0.4 = -0.23   A1 = -0.23 + 0.855*0.7    = 0.3685
#   t=0: delta = 0.0 + 0.9*0.4 - 0.5 = -0.14   A0 = -0.14 + 0.855*0.3685 = -0.14 + 0.3150675 = 0.1750675
#   returns = A + V = [0.6750675, 0.7685, 1.0]
GAE_V = [0.5, 0.4, 0.3]
GAE_R = [0.0, -0.1, 1.0]
GAE_A = [0.1750675, 0.3685, 0.7]
GAE_RET = [0.6750675, 0.7685, 1.0]


def test_gae_hand_example():
    adv, ret = gae_advantages_and_returns(T([GAE_V]), T([GAE_R]), M([1, 1, 1]), gamma=0.9, lambd=0.95)
    assert_close(adv, T([GAE_A]))
    assert_close(ret, T([GAE_RET]))


@pytest.mark.parametrize(
    "mask, spread",
    [
        ([0, 1, 1, 1], lambda xs: [G, *xs]),  # left padding
        ([1, 1, 1, 0], lambda xs: [*xs, G]),  # right padding: the pad's value must not be bootstrapped
        ([1, 0, 1, 1], lambda xs: [xs[0], G, xs[1], xs[2]]),  # an interior hole is stepped over
    ],
    ids=["left", "right", "hole"],
)
def test_gae_padding_does_not_change_results(mask, spread):
    adv, ret = gae_advantages_and_returns(T([spread(GAE_V)]), T([spread(GAE_R)]), M(mask), 0.9, 0.95)
    zero_pad = lambda xs: [x if m else 0.0 for x, m in zip(spread(xs), mask)]  # noqa: E731
    assert_close(adv, T([zero_pad(GAE_A)]))
    assert_close(ret, T([zero_pad(GAE_RET)]))


def test_gae_gamma_lambda_one_is_monte_carlo():
    # gamma = lambd = 1: A_t = (sum of rewards from t) - V_t ; returns = sum of rewards from t
    #   reward-to-go = [0 - 0.1 + 1, -0.1 + 1, 1] = [0.9, 0.9, 1.0]
    #   A = [0.9 - 0.5, 0.9 - 0.4, 1.0 - 0.3] = [0.4, 0.5, 0.7]
    adv, ret = gae_advantages_and_returns(T([GAE_V]), T([GAE_R]), M([1, 1, 1]), 1.0, 1.0)
    assert_close(adv, T([[0.4, 0.5, 0.7]]))
    assert_close(ret, T([[0.9, 0.9, 1.0]]))


def test_gae_batch_rows_are_independent():
    # row 1 is the hand example; row 0 (one token): A = 2 - 1 = 1, returns = 2
    values = T([1.0, G, G, G], [G, *GAE_V])
    rewards = T([2.0, G, G, G], [G, *GAE_R])
    adv, ret = gae_advantages_and_returns(values, rewards, M([1, 0, 0, 0], [0, 1, 1, 1]), 0.9, 0.95)
    assert_close(adv, T([1.0, 0.0, 0.0, 0.0], [0.0, *GAE_A]))
    assert_close(ret, T([2.0, 0.0, 0.0, 0.0], [0.0, *GAE_RET]))


def test_gae_invalid():
    with pytest.raises(ValueError, match="gamma"):
        gae_advantages_and_returns(T([GAE_V]), T([GAE_R]), M([1, 1, 1]), 1.5, 0.95)
    with pytest.raises(ValueError, match="lambd"):
        gae_advantages_and_returns(T([GAE_V]), T([GAE_R]), M([1, 1, 1]), 0.9, -0.1)
    with pytest.raises(ValueError, match="values has shape"):
        gae_advantages_and_returns(T([GAE_V[:2]]), T([GAE_R]), M([1, 1, 1]), 0.9, 0.95)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        gae_advantages_and_returns(T(GAE_V), T(GAE_R), torch.ones(3, dtype=torch.bool), 0.9, 0.95)


# ---------------------------------------------------------------------------------------- discounted_returns


def test_discounted_returns_with_padding():
    # gamma = 0.5, rewards [1, 2, 3]: G2 = 3 ; G1 = 2 + 0.5*3 = 3.5 ; G0 = 1 + 0.5*3.5 = 2.75
    rewards = T([1.0, 2.0, 3.0, G], [G, 1.0, 2.0, 3.0], [1.0, G, 2.0, 3.0])
    mask = M([1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1])
    assert_close(
        discounted_returns(rewards, mask, 0.5),
        T([2.75, 3.5, 3.0, 0.0], [0.0, 2.75, 3.5, 3.0], [2.75, 0.0, 3.5, 3.0]),
    )


def test_discounted_returns_invalid():
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(T([[1.0]]), M([1]), 2.0)
    with pytest.raises(ValueError, match="rewards has shape"):
        discounted_returns(T([[1.0, 2.0]]), M([1]), 1.0)


# -------------------------------------------------------------------------------------------- group_baseline
# Two prompts, n = 3, contiguous: group 0 = [1, 2, 6] (mean 3, sum 9), group 1 = [3, 3, 3] (mean 3)
GROUP_R = T([1.0, 2.0, 6.0, 3.0, 3.0, 3.0])


def test_group_baseline_reinforce_unchanged():
    assert_close(group_baseline(GROUP_R, 3, "reinforce"), GROUP_R)


def test_group_baseline_rloo():
    # r - (sum - r) / (n - 1):  1 - 8/2 = -3 ; 2 - 7/2 = -1.5 ; 6 - 3/2 = 4.5 ; 3 - 6/2 = 0 (x3)
    assert_close(group_baseline(GROUP_R, 3, "rloo"), T([-3.0, -1.5, 4.5, 0.0, 0.0, 0.0]))


def test_group_baseline_reinforce_baseline():
    # r - mean: [1-3, 2-3, 6-3, 0, 0, 0]
    assert_close(group_baseline(GROUP_R, 3, "reinforce_baseline"), T([-2.0, -1.0, 3.0, 0.0, 0.0, 0.0]))


def test_group_baseline_group_norm_uses_unbiased_std():
    # group 0: deviations [-2, -1, 3], squares sum 14, unbiased var 14/2 = 7, std = sqrt(7) = 2.6457513
    #   -> [-2/sqrt7, -1/sqrt7, 3/sqrt7] = [-0.7559289, -0.3779645, 1.1338934]
    # group 1: std 0 -> 0 / (0 + 1e-9) = 0
    assert_close(
        group_baseline(GROUP_R, 3, "group_norm"),
        T([-0.7559289460, -0.3779644730, 1.1338934190, 0.0, 0.0, 0.0]),
    )


def test_group_norm_equal_scores_give_zero_advantages_not_rounding_noise():
    # Eight equal reward-model scores: their float32 mean is not exactly 3.2, so (r - mean) / (std + 1e-9)
    # turns rounding residue into advantages of order 1. A group with nothing to compare must give 0, also when
    # the scores differ only by the batch noise of a served model (1e-7 relative here); a real difference is
    # still normalised.
    same = torch.full((8,), 3.2)
    assert ((same - same.mean()) / (same.std() + 1e-9)).abs().max() > 0.5  # what the naive formula gives
    noisy = same + torch.tensor([0, 3e-7, -3e-7, 0, 1e-7, 0, 0, -1e-7])
    real = T([3.2, 3.3, 3.2, 3.2, 3.2, 3.2, 3.2, 3.2])
    out = group_baseline(torch.cat([same, noisy, real]), 8, "group_norm")
    assert torch.equal(out[:16], torch.zeros(16))
    # one sample 0.1 above seven equal ones: deviation 0.1 * 7/8, unbiased std 0.1 / sqrt(8) -> 7 / sqrt(8)
    assert out[17].item() == pytest.approx(7 / 8 ** 0.5, rel=1e-4)


def test_group_baseline_invalid():
    with pytest.raises(ValueError, match="do not split into groups"):
        group_baseline(T([1.0, 2.0, 3.0, 4.0, 5.0]), 3, "rloo")
    with pytest.raises(ValueError, match="n_samples_per_prompt >= 2"):
        group_baseline(T([1.0, 2.0]), 1, "group_norm")
    with pytest.raises(ValueError, match="n_samples_per_prompt must be >= 1"):
        group_baseline(T([1.0, 2.0]), 0, "reinforce")
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        group_baseline(T([[1.0, 2.0]]), 2, "rloo")
    with pytest.raises(ValueError, match="advantage estimator"):
        group_baseline(T([1.0, 2.0]), 2, "gae")


# ----------------------------------------------------------------------------------------------- policy_loss


def test_policy_loss_clipped():
    # eps_clip = 0.2, log ratios log(1.5), log(0.5), log(1.1) ; the 4th token is padding
    #   t0: ratio 1.5, A =  1: surr1 =  1.5, surr2 = 1.2 *  1 =  1.2 -> min  1.2, loss -1.2, clipped
    #   t1: ratio 0.5, A = -1: surr1 = -0.5, surr2 = 0.8 * -1 = -0.8 -> min -0.8, loss  0.8, clipped
    #   t2: ratio 1.1, A =  2: surr1 =  2.2, surr2 = 1.1 *  2 =  2.2 -> min  2.2, loss -2.2, not clipped
    #   loss = (-1.2 + 0.8 - 2.2) / 3 = -0.8666667 ; clip_ratio = 2 / 3
    log_probs = T([[math.log(1.5), math.log(0.5), math.log(1.1), G]]).requires_grad_()
    old = T([[0.0, 0.0, 0.0, 0.0]])
    adv = T([[1.0, -1.0, 2.0, G]])
    loss, clip_ratio = policy_loss(log_probs, old, adv, M([1, 1, 1, 0]), eps_clip=0.2)
    assert_close(loss, T(-2.6 / 3))
    assert_close(clip_ratio, T(2 / 3))
    # the clip cuts the gradient: d loss / d log_prob = -ratio * A / 3 on unclipped tokens, 0 on clipped / pads
    loss.backward()
    assert_close(log_probs.grad, T([[0.0, 0.0, -1.1 * 2 / 3, 0.0]]))


def test_policy_loss_unclipped_side():
    # Ratios outside [0.8, 1.2] but on the side where the unclipped term is the smaller (pessimistic) one:
    #   t0: ratio 1.5, A = -1: surr1 = -1.5, surr2 = -1.2 -> min -1.5, loss  1.5, not clipped
    #   t1: ratio 0.5, A =  1: surr1 =  0.5, surr2 =  0.8 -> min  0.5, loss -0.5, not clipped
    #   loss = (1.5 - 0.5) / 2 = 0.5 ; clip_ratio = 0   (left padding with garbage at index 0)
    log_probs = T([[G, math.log(1.5), math.log(0.5)]])
    loss, clip_ratio = policy_loss(log_probs, torch.zeros_like(log_probs), T([[G, -1.0, 1.0]]), M([0, 1, 1]), 0.2)
    assert_close(loss, T(0.5))
    assert_close(clip_ratio, T(0.0))


def test_policy_loss_clip_high():
    # eps_clip_high = 0.6: ratio 1.5, A = 1 is inside [0.8, 1.6] -> loss -1.5, not clipped
    loss, clip_ratio = policy_loss(T([[math.log(1.5)]]), T([[0.0]]), T([[1.0]]), M([1]), 0.2, eps_clip_high=0.6)
    assert_close(loss, T(-1.5))
    assert_close(clip_ratio, T(0.0))


def test_policy_loss_is_a_token_mean_over_the_batch():
    # ratio 1 everywhere; row 0 has 1 token with A = 1, row 1 has 3 tokens with A = 2
    #   token mean = (-1 - 2 - 2 - 2) / 4 = -1.75   (a mean of row means would be (-1 - 2) / 2 = -1.5)
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    loss, _ = policy_loss(zeros, zeros, T([1.0, G, G], [2.0, 2.0, 2.0]), M([1, 0, 0], [1, 1, 1]), 0.2)
    assert_close(loss, T(-1.75))


def test_policy_loss_invalid():
    x = T([[0.0, 0.0]])
    with pytest.raises(ValueError, match="advantages has shape"):
        policy_loss(x, x, T([[1.0]]), M([1, 1]), 0.2)
    with pytest.raises(ValueError, match="eps_clip"):
        policy_loss(x, x, x, M([1, 1]), -0.1)


# ------------------------------------------------------------------------------------------------ value_loss
# V = [1.0, 2.0, 0.0], old V = [0.5, 2.1, 0.5], returns R = [2.0, 1.0, 0.2], 4th token padding
VL_V = T([[1.0, 2.0, 0.0, G]])
VL_OLD = T([[0.5, 2.1, 0.5, -G]])
VL_R = T([[2.0, 1.0, 0.2, 0.0]])
VL_MASK = M([1, 1, 1, 0])


def test_value_loss_clipped():
    # value_clip = 0.2:
    #   t0: V - old = 0.5 -> 0.2, V_clip = 0.7: (1 - 2)^2 = 1.0, (0.7 - 2)^2 = 1.69 -> max 1.69
    #   t1: V - old = -0.1 (inside), V_clip = 2.0: both (2 - 1)^2 = 1.0          -> 1.0
    #   t2: V - old = -0.5 -> -0.2, V_clip = 0.3: (0 - 0.2)^2 = 0.04, (0.3 - 0.2)^2 = 0.01 -> max 0.04
    #   loss = 0.5 * (1.69 + 1.0 + 0.04) / 3 = 0.5 * 0.91 = 0.455
    assert_close(value_loss(VL_V, VL_OLD, VL_R, VL_MASK, value_clip=0.2), T(0.455))


def test_value_loss_unclipped():
    # 0.5 * (1.0 + 1.0 + 0.04) / 3 = 0.5 * 0.68 = 0.34
    assert_close(value_loss(VL_V, VL_OLD, VL_R, VL_MASK, value_clip=None), T(0.34))


def test_value_loss_invalid():
    with pytest.raises(ValueError, match="returns has shape"):
        value_loss(VL_V, VL_OLD, VL_R[:, :3], VL_MASK, 0.2)
    with pytest.raises(ValueError, match="value_clip"):
        value_loss(VL_V, VL_OLD, VL_R, VL_MASK, -1.0)


# -------------------------------------------------------------------------------------------- KL controllers


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=10)
    assert ctl.value == 0.05


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(init_kl_coef=0.1, kl_target=6.0, horizon=10000)
    # KL 9 vs target 6: error 9/6 - 1 = 0.5 -> clipped 0.2 ; mult = 1 + 0.2 * 256 / 10000 = 1.00512
    ctl.update(current_kl=9.0, n_steps=256)
    assert ctl.value == pytest.approx(0.100512)
    # KL 5.4: error 0.9 - 1 = -0.1 ; mult = 1 - 0.1 * 1000 / 10000 = 0.99 -> 0.100512 * 0.99 = 0.09950688
    ctl.update(current_kl=5.4, n_steps=1000)
    assert ctl.value == pytest.approx(0.09950688)
    # KL 0: error -1 -> clipped -0.2 ; mult = 1 - 0.2 * 0.1 = 0.98 -> 0.0975167424
    ctl.update(current_kl=0.0, n_steps=1000)
    assert ctl.value == pytest.approx(0.0975167424)


def test_kl_controllers_invalid():
    with pytest.raises(ValueError, match="kl_target"):
        AdaptiveKLController(0.1, 0.0, 10000)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, 6.0, 0)
    with pytest.raises(ValueError, match="init_kl_coef"):
        AdaptiveKLController(-0.1, 6.0, 10000)
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-1.0)


# ---------------------------------------------------------------------------------------- compute_advantages


def _masked_stats(x, mask):
    m = mask.double()
    n = m.sum()
    mean = (x * m).sum() / n
    return mean, (((x - mean) ** 2) * m).sum() / n


def test_compute_advantages_gae_hand_example():
    # sequence reward 1.0, kl = [0, 0.2, 0], kl_coef = 0.5 -> token rewards [0, -0.1, 1.0] = GAE_R
    adv, ret = compute_advantages(
        "gae", T([1.0]), T([[0.0, 0.2, 0.0]]), M([1, 1, 1]),
        values=T([GAE_V]), gamma=0.9, lambd=0.95, kl_coef=0.5, whiten=False,
    )  # fmt: skip
    assert_close(adv, T([GAE_A]))
    assert_close(ret, T([GAE_RET]))


def test_compute_advantages_gae_whitens_by_default_and_padding_is_ignored():
    # Same batch twice: right-padded and left-padded with garbage; two rows, the second is the hand example.
    kw = dict(gamma=0.9, lambd=0.95, kl_coef=0.5)
    right = compute_advantages(
        "gae", T([2.0, 1.0]), T([0.0, G, G], [0.0, 0.2, 0.0]), M([1, 0, 0], [1, 1, 1]),
        values=T([1.0, G, G], GAE_V), **kw,
    )  # fmt: skip
    left = compute_advantages(
        "gae", T([2.0, 1.0]), T([G, G, 0.0], [0.0, 0.2, 0.0]), M([0, 0, 1], [1, 1, 1]),
        values=T([G, G, 1.0], GAE_V), **kw,
    )  # fmt: skip
    # Returns are not whitened: row 0 = 2 (one token, V = 1, A = 1), row 1 = the hand example
    assert_close(right[1], T([2.0, 0.0, 0.0], GAE_RET))
    assert_close(left[1], T([0.0, 0.0, 2.0], GAE_RET))
    # Advantages [1 | 0.1750675, 0.3685, 0.7] whitened over the 4 action tokens (biased variance):
    #   mean = 2.2435675 / 4 = 0.560891875
    raw = T([1.0, 0.1750675, 0.3685, 0.7])
    mean = 2.2435675 / 4
    std = math.sqrt(((raw - mean) ** 2).sum().item() / 4)
    expected = (raw - mean) / std
    # (boolean indexing reads row-major: row 0's token, then row 1's three)
    assert_close(right[0][M([1, 0, 0], [1, 1, 1])], expected)
    assert_close(left[0][M([0, 0, 1], [1, 1, 1])], expected)
    assert right[0][0, 1:].eq(0).all() and left[0][0, :2].eq(0).all()
    mean_w, var_w = _masked_stats(right[0], M([1, 0, 0], [1, 1, 1]))
    assert_close(mean_w, T(0.0))
    assert_close(var_w, T(1.0))


def test_compute_advantages_gae_needs_values():
    with pytest.raises(ValueError, match="needs the critic's values"):
        compute_advantages("gae", T([1.0]), None, M([1, 1]))


def test_compute_advantages_reinforce_gamma_and_kl():
    # reinforce, n = 1, gamma = 0.5, kl_coef = 0.5, kl = [0.2, 0.4], reward 1.0:
    #   token rewards = [-0.1, -0.2 + 1.0] = [-0.1, 0.8]
    #   returns: G1 = 0.8 ; G0 = -0.1 + 0.5 * 0.8 = 0.3   (no whitening: advantages = returns)
    adv, ret = compute_advantages(
        "reinforce", T([1.0]), T([[0.2, 0.4, G]]), M([1, 1, 0]), gamma=0.5, kl_coef=0.5, whiten=False
    )
    assert_close(ret, T([[0.3, 0.8, 0.0]]))
    assert_close(adv, ret)


def test_compute_advantages_reinforce_whitens_by_default():
    # returns [[1, 1], [0, 0]] (gamma 1, no KL) ; whiten: mean 0.5, biased std 0.5 -> [[1, 1], [-1, -1]]
    adv, ret = compute_advantages("reinforce", T([1.0, 0.0]), None, M([1, 1], [1, 1]))
    assert_close(ret, T([1.0, 1.0], [0.0, 0.0]))
    assert_close(adv, T([1.0, 1.0], [-1.0, -1.0]))


def test_compute_advantages_rloo_not_whitened_by_default():
    # n = 2: prompt 0 rewards [1, 0] -> rloo [1 - 0, 0 - 1] = [1, -1] ; prompt 1 [0.5, 0.5] -> [0, 0]
    # kl_coef = 0.5 on row 0: kl [0.1, 0.2, 0.3] -> token rewards [-0.05, -0.1, -0.15 + 1] = [-0.05, -0.1, 0.85]
    #   returns (gamma 1): [-0.05 - 0.1 + 0.85, -0.1 + 0.85, 0.85] = [0.7, 0.75, 0.85]
    # rows 1-3 have kl 0: their shaped reward on every action token; row 3 is left-padded
    kl = T([0.1, 0.2, 0.3], [0.0, 0.0, G], [0.0, 0.0, 0.0], [G, 0.0, 0.0])
    mask = M([1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 1, 1])
    adv, ret = compute_advantages("rloo", T([1.0, 0.0, 0.5, 0.5]), kl, mask, kl_coef=0.5, n_samples_per_prompt=2)
    expected = T([0.7, 0.75, 0.85], [-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert_close(ret, expected)
    assert_close(adv, expected)


def test_compute_advantages_reinforce_baseline_whitened():
    # n = 2, rewards [3, 1 | 2, 2] -> minus group mean -> [1, -1, 0, 0] ; one token each
    # whiten: mean 0, biased var (1 + 1 + 0 + 0) / 4 = 0.5 -> / sqrt(0.5) -> [1.4142136, -1.4142136, 0, 0]
    adv, ret = compute_advantages("reinforce_baseline", T([3.0, 1.0, 2.0, 2.0]), None, M([1], [1], [1], [1]),
                                  n_samples_per_prompt=2)  # fmt: skip
    r2 = math.sqrt(2.0)
    assert_close(ret, T([1.0], [-1.0], [0.0], [0.0]))
    assert_close(adv, T([r2], [-r2], [0.0], [0.0]))


def test_compute_advantages_group_norm_not_rewhitened():
    # n = 2, rewards [1, 0]: mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 0.7071068 -> [0.7071068, -0.7071068]
    # on every action token; no batch whitening by default
    s = math.sqrt(0.5)
    adv, ret = compute_advantages("group_norm", T([1.0, 0.0]), None, M([1, 1, 0], [0, 1, 1]), n_samples_per_prompt=2)
    expected = T([s, s, 0.0], [0.0, -s, -s])
    assert_close(ret, expected)
    assert_close(adv, expected)


def test_compute_advantages_whiten_overrides():
    mask = M([1, 1], [1, 0])
    # group_norm forced on: [s, s, -s] over 3 tokens: mean s/3, not zero -> whitening changes it
    adv, _ = compute_advantages("group_norm", T([1.0, 0.0]), None, mask, n_samples_per_prompt=2, whiten=True)
    mean_w, var_w = _masked_stats(adv, mask)
    assert_close(mean_w, T(0.0))
    assert_close(var_w, T(1.0))
    # reinforce, whiten_std=False: returns [[1, 1], [0, -]] minus mean 2/3 -> [[1/3, 1/3], [-2/3, 0]]
    adv, _ = compute_advantages("reinforce", T([1.0, 0.0]), None, mask, whiten_std=False)
    assert_close(adv, T([1 / 3, 1 / 3], [-2 / 3, 0.0]))
    # reinforce, whiten=False: advantages are the returns
    adv, ret = compute_advantages("reinforce", T([1.0, 0.0]), None, mask, whiten=False)
    assert_close(adv, T([1.0, 1.0], [0.0, 0.0]))


def test_compute_advantages_group_estimators_force_gamma_one():
    # rloo with gamma 0.5 warns and uses gamma 1: returns are the shaped reward [1 | -1] on every token
    with pytest.warns(UserWarning, match="gamma=1.0"):
        adv, ret = compute_advantages("rloo", T([1.0, 0.0]), None, M([1, 1], [1, 1]), gamma=0.5, n_samples_per_prompt=2)
    assert_close(ret, T([1.0, 1.0], [-1.0, -1.0]))


def test_compute_advantages_reward_clip_applies_after_shaping():
    # n = 2, rewards [10, 0] -> reinforce_baseline [5, -5] -> clip (-1, 1) -> [1, -1]
    _, ret = compute_advantages("reinforce_baseline", T([10.0, 0.0]), None, M([1], [1]),
                                n_samples_per_prompt=2, reward_clip_range=(-1.0, 1.0), whiten=False)  # fmt: skip
    assert_close(ret, T([1.0], [-1.0]))


def test_compute_advantages_invalid():
    mask = M([1, 1], [1, 1])
    with pytest.raises(ValueError, match="advantage estimator"):
        compute_advantages("ppo", T([1.0, 0.0]), None, mask)
    with pytest.raises(ValueError, match="one scalar per sequence"):
        compute_advantages("reinforce", T([1.0]), None, mask)
    with pytest.raises(ValueError, match="n_samples_per_prompt >= 2"):
        compute_advantages("rloo", T([1.0, 0.0]), None, mask)
    with pytest.raises(ValueError, match="do not split into groups"):
        compute_advantages("group_norm", T([1.0, 0.0]), None, mask, n_samples_per_prompt=3)
    with pytest.raises(ValueError, match="kl has shape"):
        compute_advantages("reinforce", T([1.0, 0.0]), T([[0.0], [0.0]]), mask)


# ------------------------------------------------------------------------------------ Dr.GRPO's group baseline


def test_dr_grpo_subtracts_the_group_mean_and_is_not_whitened():
    # n = 4, rewards [1, 0, 0, 0 | 1, 1, 0, 0]: group means 0.25 and 0.5, no division by the std
    #   -> [0.75, -0.25, -0.25, -0.25 | 0.5, 0.5, -0.5, -0.5] on every token (gamma 1, one token per row here)
    rewards = T([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    mask = M(*[[1]] * 8)
    adv, ret = compute_advantages("dr_grpo", rewards, None, mask, n_samples_per_prompt=4)
    expected = T([[0.75], [-0.25], [-0.25], [-0.25], [0.5], [0.5], [-0.5], [-0.5]])
    assert_close(adv, expected)
    assert_close(ret, expected)
    # group_norm would divide by the unbiased std: group 1 std = 0.5 -> 0.75 / 0.5 = 1.5
    assert_close(group_baseline(rewards, 4, "group_norm")[0], T(1.5), atol=1e-6, rtol=0)
    # reinforce_baseline shapes the same way but whitens: batch mean 0, biased variance
    #   (0.5625 + 3 * 0.0625 + 4 * 0.25) / 8 = 0.21875 -> 0.75 / sqrt(0.21875) = 1.6035675
    adv_rb, _ = compute_advantages("reinforce_baseline", rewards, None, mask, n_samples_per_prompt=4)
    assert_close(adv_rb[0, 0], T(0.75 / math.sqrt(0.21875)), atol=1e-6, rtol=0)


def test_no_advantage_std_norm_only_centres():
    # reinforce, rewards [4, 0], one token each: centred [2, -2]; with the std norm (biased std 2) [1, -1]
    mask = M([1], [1])
    adv, _ = compute_advantages("reinforce", T([4.0, 0.0]), None, mask, whiten_std=False)
    assert_close(adv, T([2.0], [-2.0]))
    adv, _ = compute_advantages("reinforce", T([4.0, 0.0]), None, mask)
    assert_close(adv, T([1.0], [-1.0]))


# ------------------------------------------------------------------------------------------- loss aggregation
AGG_LOSS = T([1.0, 2.0, G], [3.0, G, G])
AGG_MASK = M([1, 1, 0], [1, 0, 0])


def test_aggregate_loss_modes():
    # token-mean: (1 + 2 + 3) / 3 = 2
    assert_close(aggregate_loss(AGG_LOSS, AGG_MASK, "token-mean"), T(2.0))
    # seq-mean-token-mean: ((1 + 2) / 2 + 3 / 1) / 2 = (1.5 + 3) / 2 = 2.25
    assert_close(aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-mean"), T(2.25))
    # seq-mean-token-sum-norm (Dr.GRPO), max_len 4: (1 + 2 + 3) / (2 rows * 4) = 0.75
    assert_close(aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum-norm", max_len=4), T(0.75))


def test_aggregate_loss_invalid():
    with pytest.raises(ValueError, match="loss aggregation"):
        aggregate_loss(AGG_LOSS, AGG_MASK, "sum")
    with pytest.raises(ValueError, match="needs max_len"):
        aggregate_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum-norm")


# ------------------------------------------------------------------------------------------------- GSPO


def test_gspo_ratio_is_the_geometric_mean_per_sequence():
    # row 0: log ratios [ln 2, 0] -> mean ln 2 / 2 -> s = sqrt(2) on both tokens ; row 1: [ln 0.5] -> 0.5
    lp = T([math.log(2.0), 0.0, G], [math.log(0.5), G, G])
    ratio = policy_ratio(lp, torch.zeros_like(lp), AGG_MASK, "sequence")
    assert_close(ratio, T([math.sqrt(2.0), math.sqrt(2.0), 0.0], [0.5, 0.0, 0.0]))
    # token level: [2, 1 | 0.5], 0 on padding
    assert_close(policy_ratio(lp, torch.zeros_like(lp), AGG_MASK), T([2.0, 1.0, 0.0], [0.5, 0.0, 0.0]))


def test_gspo_loss_clips_whole_sequences_and_averages_per_sequence():
    # eps 0.2; row 0 s = sqrt(2) = 1.414, A = 1: min(1.414, 1.2) = 1.2 -> loss -1.2 on both tokens (clipped)
    #          row 1 s = 0.5, A = -1: min(-0.5, 0.8 * -1 = -0.8) = -0.8 -> loss 0.8 (clipped)
    # seq-mean-token-mean (GSPO's default): (-1.2 + 0.8) / 2 = -0.2 ; clip_ratio = 3 / 3
    lp = T([math.log(2.0), 0.0, G], [math.log(0.5), G, G])
    adv = T([1.0, 1.0, G], [-1.0, G, G])
    loss, clip_ratio = policy_loss(lp, torch.zeros_like(lp), adv, AGG_MASK, 0.2, loss_type="gspo")
    assert_close(loss, T(-0.2))
    assert_close(clip_ratio, T(1.0))


def test_gspo_gradient_flows_through_the_sequence_mean():
    # one row [ln 1.1, 0], A = 1: s = sqrt(1.1) = 1.0488 inside [0.8, 1.2]; loss = mean over tokens of -s = -s
    #   d loss / d lp_t = -s * d(mean)/d lp_t = -s / 2 = -0.5244044 on each token
    lp = T([[math.log(1.1), 0.0]]).requires_grad_()
    loss, _ = policy_loss(lp, torch.zeros(1, 2, dtype=torch.float64), T([[1.0, 1.0]]), M([1, 1]), 0.2,
                          loss_type="gspo")
    loss.backward()
    assert_close(loss, T(-math.sqrt(1.1)))
    assert_close(lp.grad, T([[-math.sqrt(1.1) / 2, -math.sqrt(1.1) / 2]]))


# ----------------------------------------------------------------------------------------- dual clip, CISPO


def test_dual_clip_bounds_negative_advantages():
    # eps 0.2, dual_clip c = 2; both tokens ratio 3
    #   A = -1: min(-3, 1.2 * -1 = -1.2) = -3, then max(-3, c * A = -2) = -2 -> loss 2 (plain PPO: 3)
    #   A = +1: min(3, 1.2) = 1.2, dual clip does not apply -> loss -1.2
    #   token mean: (2 - 1.2) / 2 = 0.4 ; without dual clip (3 - 1.2) / 2 = 0.9
    lp = T([[math.log(3.0), math.log(3.0)]])
    adv = T([[-1.0, 1.0]])
    loss, _ = policy_loss(lp, torch.zeros_like(lp), adv, M([1, 1]), 0.2, dual_clip=2.0)
    assert_close(loss, T(0.4))
    loss, _ = policy_loss(lp, torch.zeros_like(lp), adv, M([1, 1]), 0.2)
    assert_close(loss, T(0.9))
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        clipped_surrogate(T([1.0]), T([1.0]), 0.2, 0.2, dual_clip=1.0)


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    # eps 0.2 / 0.2; ratios 1.5 and 0.5 (old log-probs 0), A = [1, -1]
    #   weights sg(clamp) = [1.2, 0.8]; per-token loss -w * A * lp = [-1.2 * ln 1.5, -0.8 * ln 0.5]
    #   = [-0.4865581, -0.5545177] ; token mean = -0.5205379
    #   d loss / d lp = -w * A / 2 = [-0.6, 0.4]  (PPO's clip gives 0 on both: see test_policy_loss_clipped)
    lp = T([[math.log(1.5), math.log(0.5)]]).requires_grad_()
    loss, clip_ratio = policy_loss(lp, torch.zeros(1, 2, dtype=torch.float64), T([[1.0, -1.0]]), M([1, 1]), 0.2,
                                   loss_type="cispo")
    assert_close(loss, T((-1.2 * math.log(1.5) + 0.8 * math.log(0.5)) / 2))
    assert_close(clip_ratio, T(1.0))
    loss.backward()
    assert_close(lp.grad, T([[-0.6, 0.4]]))
    # inside the bounds the weight is the ratio itself and nothing counts as clipped
    per_token, clipped = cispo_surrogate(T([1.1]), T([0.5]), T([2.0]), 0.2, 0.2)
    assert_close(per_token, T([-1.1 * 2.0 * 0.5]))
    assert not bool(clipped.any())


def test_policy_loss_type_invalid():
    x = T([[0.0]])
    with pytest.raises(ValueError, match="policy loss type"):
        policy_loss(x, x, x, M([1]), 0.2, loss_type="trpo")


# ---------------------------------------------------------------------------------------------- IS correction
# old - rollout log-probs: row 0 [ln 0.25, ln 2, ln 8, pad], row 1 [ln 8, ln 8, pad, pad]; bounds [0.5, 5]
IS_OLD = T([math.log(0.25), math.log(2.0), math.log(8.0), G], [math.log(8.0), math.log(8.0), G, G])
IS_MASK = M([1, 1, 1, 0], [1, 1, 0, 0])


def test_is_correction_tis_icepop_and_seq_mask_tis():
    rollout = torch.zeros_like(IS_OLD)
    # tis: clamp(w, 0.5, 5): [0.5, 2, 5 | 5, 5]
    assert_close(is_correction_weights(IS_OLD, rollout, IS_MASK, "tis", 0.5, 5.0),
                 T([0.5, 2.0, 5.0, 0.0], [5.0, 5.0, 0.0, 0.0]))
    # icepop: w inside [0.5, 5] kept, others 0: [0, 2, 0 | 0, 0]
    assert_close(is_correction_weights(IS_OLD, rollout, IS_MASK, "icepop", 0.5, 5.0),
                 T([0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]))
    # seq-mask-tis: row 0 geometric mean (0.25 * 2 * 8)^(1/3) = 4^(1/3) = 1.587 inside -> tis weights;
    #               row 1 geometric mean 8 > 5 -> the whole row is 0
    assert_close(is_correction_weights(IS_OLD, rollout, IS_MASK, "seq-mask-tis", 0.5, 5.0),
                 T([0.5, 2.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("kind", ["tis", "icepop", "seq-mask-tis"])
def test_is_correction_is_the_identity_when_the_rollout_log_probs_are_the_actors_own(kind):
    """HF generate samples with the actor: rollout log-probs = old log-probs, so every weight is 1 and the
    corrected loss equals the plain one (what train-ppo does until vLLM engines generate)."""
    old = T([math.log(0.3), math.log(0.9), G], [math.log(0.5), G, G])
    w = is_correction_weights(old, old.clone(), AGG_MASK, kind, 0.5, 5.0)
    assert_close(w, AGG_MASK.double())
    lp = T([math.log(0.4), math.log(0.8), G], [math.log(0.6), G, G])
    adv = T([1.0, -2.0, G], [0.5, G, G])
    plain, _ = policy_loss(lp, old, adv, AGG_MASK, 0.2)
    corrected, _ = policy_loss(lp, old, adv, AGG_MASK, 0.2, is_weights=w)
    assert_close(corrected, plain)


def test_is_weights_scale_the_per_token_loss():
    # the tokens of test_policy_loss_clipped: per-token losses [-1.2, 0.8, -2.2], weights [2, 1, 0.5]
    #   -> [-2.4, 0.8, -1.1], token mean -2.7 / 3 = -0.9
    log_probs = T([[math.log(1.5), math.log(0.5), math.log(1.1), G]])
    weights = T([[2.0, 1.0, 0.5, 0.0]])
    loss, _ = policy_loss(log_probs, torch.zeros_like(log_probs), T([[1.0, -1.0, 2.0, G]]), M([1, 1, 1, 0]), 0.2,
                          is_weights=weights)
    assert_close(loss, T(-0.9))


def test_is_correction_invalid():
    with pytest.raises(ValueError, match="IS correction type"):
        is_correction_weights(IS_OLD, IS_OLD, IS_MASK, "clip", 0.5, 5.0)
    with pytest.raises(ValueError, match="0 <= low <= high"):
        is_correction_weights(IS_OLD, IS_OLD, IS_MASK, "tis", 5.0, 0.5)


# -------------------------------------------------------------------------------------- KL loss, entropy


def test_kl_loss_k3_and_k2_with_gradient():
    # log ratios [0.5, 0.1], 3rd token padding
    #   k3 = exp(-x) - 1 + x: [0.1065307, 0.0048374] -> mean 0.0556840
    #   k2 = x^2 / 2: [0.125, 0.005] -> mean 0.065 ; d/dx = x / 2 per token = [0.25, 0.05]
    lp = T([[0.5, 0.1, G]]).requires_grad_()
    ref = T([[0.0, 0.0, -G]])
    mask = M([1, 1, 0])
    k3 = (math.exp(-0.5) - 1 + 0.5 + math.exp(-0.1) - 1 + 0.1) / 2
    assert_close(kl_loss(lp, ref, mask, "k3"), T(k3))
    loss = kl_loss(lp, ref, mask, "k2")
    assert_close(loss, T(0.065))
    loss.backward()
    assert_close(lp.grad, T([[0.25, 0.05, 0.0]]))


def test_entropy_from_logits():
    # uniform over 2: ln 2 = 0.6931472 ; logits [0, ln 3]: p = [0.25, 0.75],
    #   H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3465736 + 0.2157616 = 0.5623351
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], dtype=torch.float64)
    expected = [math.log(2.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert_close(entropy_from_logits(logits), torch.tensor(expected, dtype=torch.float32))


# ---------------------------------------------------------------------------------------- length penalties


def test_overlong_penalty_is_linear_in_the_buffer():
    # L_max 16, buffer 4 -> free up to 12 tokens; 13 -> -(1 / 4) ; 16 -> -1 ; factor 0.5 halves it
    lengths = torch.tensor([10, 12, 13, 16])
    assert_close(overlong_penalty(lengths, 16, 4), torch.tensor([0.0, 0.0, -0.25, -1.0]))
    assert_close(overlong_penalty(lengths, 16, 4, factor=0.5), torch.tensor([0.0, 0.0, -0.125, -0.5]))
    with pytest.raises(ValueError, match="overlong buffer length"):
        overlong_penalty(lengths, 16, 20)


def test_stop_properly_penalty_scales_or_replaces_truncated_rewards():
    rewards = T([1.0, 1.0, 0.5])
    truncated = torch.tensor([False, True, True])
    assert_close(stop_properly_penalty(rewards, truncated, 0.5), T([1.0, 0.5, 0.25]))
    assert_close(stop_properly_penalty(rewards, truncated, -0.5), T([1.0, -0.5, -0.5]))
    with pytest.raises(ValueError, match="in \\[0, 1\\] or negative"):
        stop_properly_penalty(rewards, truncated, 2.0)


# -------------------------------------------------------------------------------------- dynamic filtering


def test_dynamic_filter_keeps_groups_with_mean_strictly_inside_the_range():
    # n = 4: group means [0.25, 1, 0, 0.75]; (0, 1) keeps the mixed groups; (0.3, 1) only the last
    scores = T([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    assert dynamic_filter_keep(scores, 4, 0.0, 1.0).tolist() == [True, False, False, True]
    assert dynamic_filter_keep(scores, 4, 0.3, 1.0).tolist() == [False, False, False, True]
