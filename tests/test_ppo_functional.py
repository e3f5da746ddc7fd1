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
    approx_kl,
    compute_advantages,
    discounted_returns,
    gae_advantages_and_returns,
    group_baseline,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
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
