"""The PPO family of RLHF algorithms as pure tensor functions.

Everything the training loop needs to turn a rollout into a loss lives here, free of models, Ray and
DeepSpeed, so that it can be checked against numbers worked out by hand. Vocabulary and semantics follow
the PPO paper and OpenRLHF (``openrlhf/models/utils.py``, ``openrlhf/models/loss.py``,
``openrlhf/trainer/ppo_utils/experience_maker.py``, ``kl_controller.py``).

Shapes: ``B`` rows (sequences), ``T`` response positions. ``action_mask`` is a bool or 0/1 tensor ``[B, T]``
that is 1 on generated (action) tokens; it may be padded on the left, on the right, or both. Positions where
it is 0 never influence a result on positions where it is 1, and token-level outputs are 0 there.

Pipeline (what :func:`compute_advantages` does, in OpenRLHF's order)::

    sequence reward r [B] --group_baseline--> shaped r [B]
      --kl_penalized_rewards(kl from approx_kl)--> token rewards [B, T]
      --gae_advantages_and_returns | discounted_returns--> advantages, returns [B, T]
      --masked_whiten (gae / reinforce / reinforce_baseline only)--> advantages
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

import torch
from torch import Tensor

from rlhfctl.models.actor import entropy_from_logits  # computed beside the log-probs; part of the loss here

__all__ = [
    "AdvantageEstimator",
    "KLEstimator",
    "KL_CLAMP",
    "masked_mean",
    "masked_whiten",
    "approx_kl",
    "kl_penalized_rewards",
    "gae_advantages_and_returns",
    "discounted_returns",
    "group_baseline",
    "LossAggregation",
    "PolicyLossType",
    "ISCorrection",
    "aggregate_loss",
    "policy_ratio",
    "clipped_surrogate",
    "cispo_surrogate",
    "is_correction_weights",
    "policy_loss",
    "kl_loss",
    "ptx_loss",
    "ema_update_",
    "entropy_from_logits",
    "overlong_penalty",
    "stop_properly_penalty",
    "dynamic_filter_keep",
    "value_loss",
    "FixedKLController",
    "AdaptiveKLController",
    "compute_advantages",
]

KLEstimator = Literal["k1", "k2", "k3"]
AdvantageEstimator = Literal["gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
PolicyLossType = Literal["ppo", "gspo", "cispo"]
ISCorrection = Literal["tis", "icepop", "seq-mask-tis"]

#: group_norm: rewards of one group whose spread (max - min) is within this fraction of max(1, |group mean|) count
#: as equal (advantages 0): an absolute 1e-5 for rewards of magnitude up to 1, relative beyond. Looser than float32
#: rounding, tight enough for any real difference; serve-rm's scores of one text agree within it across batches.
FLAT_GROUP_RTOL = 1e-5

#: approx_kl clamps every estimate into [-KL_CLAMP, KL_CLAMP], as OpenRLHF's compute_approx_kl does.
KL_CLAMP = 10.0

# Estimators whose advantages OpenRLHF normalises over the batch (_normalize_advantages). rloo and group_norm
# are left as they are: group_norm is already unit-scale per prompt, and current OpenRLHF excludes rloo too.
_WHITENED_BY_DEFAULT = ("gae", "reinforce", "reinforce_baseline")
# Estimators that subtract a per-prompt baseline and therefore need n_samples_per_prompt >= 2.
_GROUP_ESTIMATORS = ("rloo", "reinforce_baseline", "group_norm", "dr_grpo")


# --------------------------------------------------------------------------------------------- validation


def _check_mask(action_mask: Tensor, name: str = "action_mask") -> None:
    if action_mask.dim() != 2:
        raise ValueError(f"{name} must be [B, T], got shape {tuple(action_mask.shape)}")


def _check_same_shape(action_mask: Tensor, **tensors: Tensor | None) -> None:
    """Raise ValueError naming the first tensor whose shape differs from ``action_mask``'s [B, T]."""
    _check_mask(action_mask)
    for name, t in tensors.items():
        if t is not None and t.shape != action_mask.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but action_mask has {tuple(action_mask.shape)}; "
                "token-level tensors must be [B, T] over the same response positions"
            )


def _check_seq_rewards(reward: Tensor, batch: int, name: str = "rewards") -> None:
    if reward.dim() != 1 or reward.shape[0] != batch:
        raise ValueError(f"{name} must be one scalar per sequence, shape [{batch}], got {tuple(reward.shape)}")


def _check_choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


# ------------------------------------------------------------------------------------------------ masking


def masked_mean(x: Tensor, mask: Tensor | None, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (all positions when ``mask`` is None).

    Losses and statistics must ignore padding, or a batch's result would depend on how it was padded.
    ``dim=None`` reduces over every element (one token-weighted mean for the batch); an int reduces that dim.
    A slice with no masked-in element gives 0 rather than NaN (the count is clamped to 1), so an empty row
    cannot poison a loss; no data-dependent check is made, keeping this free of a device sync.
    """
    if mask is None:
        return x.mean() if dim is None else x.mean(dim=dim)
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but x has {tuple(x.shape)}")
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked-in elements of the whole tensor.

    Used to whiten advantages over a batch so the policy step size does not depend on the reward scale.
    The variance is the *biased* (population) one, sum((x - mean)^2) / n, exactly as OpenRLHF normalises
    advantages; it is clamped to ``eps`` before the reciprocal square root so a constant batch maps to 0.
    ``shift_mean=False`` only rescales (adds the mean back), keeping the sign of the original values.
    Positions where ``mask`` is 0 are 0 in the result.
    """
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but x has {tuple(x.shape)}")
    m = mask.to(x.dtype)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    whitened = (x - mean) * var.clamp(min=eps).rsqrt()
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


# ------------------------------------------------------------------------------------------------------ KL


def approx_kl(
    log_probs: Tensor,
    ref_log_probs: Tensor,
    action_mask: Tensor | None = None,
    estimator: KLEstimator = "k1",
) -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    With ``log r = log_probs - ref_log_probs`` (Schulman, "Approximating KL divergence"):
    ``k1 = log r`` (unbiased, can be negative), ``k2 = (log r)^2 / 2`` (non-negative, biased),
    ``k3 = exp(-log r) - 1 + log r`` (non-negative and unbiased).
    Every estimate is clamped into [-10, 10] (:data:`KL_CLAMP`), as OpenRLHF does for all three: k3's
    ``exp(-log r)`` explodes when the reference is far likelier than the policy on a token, and one such token
    would otherwise dominate the reward. Computed in at least float32 (bf16 log-probs lose the small
    differences). Positions where ``action_mask`` is 0 are 0.
    """
    _check_choice(estimator, get_args(KLEstimator), "KL estimator")
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(
            f"log_probs has shape {tuple(log_probs.shape)} but ref_log_probs has {tuple(ref_log_probs.shape)}"
        )
    dtype = torch.promote_types(log_probs.dtype, torch.float32)
    log_ratio = log_probs.to(dtype) - ref_log_probs.to(dtype)
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = log_ratio**2 / 2.0
    else:
        kl = torch.expm1(-log_ratio) + log_ratio
    kl = kl.clamp(min=-KL_CLAMP, max=KL_CLAMP)
    if action_mask is not None:
        _check_same_shape(action_mask, log_probs=log_probs)
        kl = kl * action_mask.to(dtype)
    return kl


def kl_penalized_rewards(
    reward: Tensor,
    kl: Tensor,
    action_mask: Tensor,
    kl_coef: float,
    reward_clip_range: tuple[float, float] | None = None,
) -> Tensor:
    """Token-level rewards: ``-kl_coef * kl`` on every action token, plus the sequence reward on the last one.

    The reward model scores the whole response, so its score belongs to the final action (the last index
    where ``action_mask`` is 1, wherever the padding is); the KL penalty keeps each token near the reference.
    ``kl_coef <= 0`` means no penalty (as in OpenRLHF). ``reward_clip_range=(lo, hi)`` clamps the sequence
    reward first. Returns ``[B, T]`` with 0 at padded positions. A row without any action token raises.
    """
    _check_same_shape(action_mask, kl=kl)
    _check_seq_rewards(reward, action_mask.shape[0], "reward")
    if reward_clip_range is not None:
        lo, hi = reward_clip_range
        if lo > hi:
            raise ValueError(f"reward_clip_range must be (low, high) with low <= high, got {reward_clip_range}")
        reward = reward.clamp(min=lo, max=hi)
    mask = action_mask.bool()
    if not bool(mask.any(dim=1).all()):
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} of action_mask have no action token; there is nowhere to put the reward")
    coef = max(float(kl_coef), 0.0)
    T = mask.shape[1]
    # Last index of a 1: flip, the first 1 in the flipped row (argmax returns the first maximum) is the last.
    last = T - 1 - mask.long().flip(dims=[1]).argmax(dim=1, keepdim=True)
    token_rewards = -coef * kl * mask.to(kl.dtype)
    return token_rewards.scatter_add(1, last, reward.to(kl.dtype).unsqueeze(1))


# ----------------------------------------------------------------------------------- advantages & returns


def gae_advantages_and_returns(
    values: Tensor,
    rewards: Tensor,
    action_mask: Tensor,
    gamma: float,
    lambd: float,
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016), as PPO for RLHF uses it.

    ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lambd * A_{t+1}``, with
    ``V`` and ``A`` after the last action token taken as 0 (the episode ends there);
    ``returns = advantages + values`` are the critic's regression targets.
    Masked positions are not time steps: the recursion steps over them, so the result on action tokens is
    that of the same row with its padding removed (left, right or interior), and it is 0 on masked positions.
    For left/right padding this equals OpenRLHF's ``get_advantages_and_returns`` on the action tokens.
    Runs without autograd: advantages and returns are targets, not part of the graph.
    """
    _check_same_shape(action_mask, values=values, rewards=rewards)
    _check_gamma(gamma, "gamma")
    _check_gamma(lambd, "lambd")
    with torch.no_grad():
        dtype = torch.promote_types(values.dtype, rewards.dtype)
        values = values.to(dtype)
        rewards = rewards.to(dtype)
        mask = action_mask.bool()
        B, T = mask.shape
        advantages = torch.zeros(B, T, dtype=dtype, device=values.device)
        next_value = torch.zeros(B, dtype=dtype, device=values.device)
        next_adv = torch.zeros(B, dtype=dtype, device=values.device)
        for t in reversed(range(T)):
            m = mask[:, t]
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            adv_t = delta + gamma * lambd * next_adv
            advantages[:, t] = torch.where(m, adv_t, torch.zeros_like(adv_t))
            next_adv = torch.where(m, adv_t, next_adv)
            next_value = torch.where(m, values[:, t], next_value)
        returns = (advantages + values) * mask.to(dtype)
    return advantages, returns


def discounted_returns(rewards: Tensor, action_mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` over action tokens, for critic-free (REINFORCE-style) estimators.

    These estimators use the return itself as the advantage. Masked positions are skipped like in
    :func:`gae_advantages_and_returns` and are 0 in the result.
    """
    _check_same_shape(action_mask, rewards=rewards)
    _check_gamma(gamma, "gamma")
    with torch.no_grad():
        mask = action_mask.bool()
        B, T = mask.shape
        returns = torch.zeros_like(rewards)
        running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
        for t in reversed(range(T)):
            m = mask[:, t]
            g_t = rewards[:, t] + gamma * running
            returns[:, t] = torch.where(m, g_t, torch.zeros_like(g_t))
            running = torch.where(m, g_t, running)
    return returns


def _check_gamma(x: float, name: str) -> None:
    if not (0.0 <= float(x) <= 1.0) or math.isnan(float(x)):
        raise ValueError(f"{name} must be in [0, 1], got {x}")


def group_baseline(
    rewards: Tensor,
    n_samples_per_prompt: int,
    estimator: Literal["reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo"],
    eps: float = 1e-9,
) -> Tensor:
    """Shape sequence rewards with a per-prompt baseline before the token-level step, as OpenRLHF does.

    Rewards are ``[N]`` with the ``n`` samples of one prompt contiguous (indices ``i*n .. i*n+n-1``).
    Subtracting a baseline built from the other samples of the same prompt cuts variance without a critic:

    - ``reinforce``: unchanged;
    - ``rloo``: ``r - mean of the other n-1 samples`` (leave-one-out, unbiased);
    - ``reinforce_baseline``: ``r - group mean`` (REINFORCE++-baseline);
    - ``dr_grpo``: ``r - group mean`` too (Dr.GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training"):
      GRPO without the division by the group std, which favours prompts that are nearly all right or all wrong;
      unlike reinforce_baseline its advantages are not whitened afterwards (OpenRLHF's experience_maker);
    - ``group_norm``: ``(r - group mean) / (group std + eps)`` (GRPO); the std is the *unbiased* one
      (Bessel, n-1), as ``torch.std`` in OpenRLHF; a group whose rewards are equal (within FLAT_GROUP_RTOL) gets 0.
    """
    _check_choice(estimator, ("reinforce", *_GROUP_ESTIMATORS), "advantage estimator")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one scalar per sample, shape [N], got {tuple(rewards.shape)}")
    n = int(n_samples_per_prompt)
    if n < 1:
        raise ValueError(f"n_samples_per_prompt must be >= 1, got {n_samples_per_prompt}")
    N = rewards.shape[0]
    if N % n != 0:
        raise ValueError(
            f"{N} rewards do not split into groups of n_samples_per_prompt={n}; "
            "the batch must hold all samples of each prompt"
        )
    if estimator == "reinforce":
        return rewards
    if n < 2:
        raise ValueError(
            f"{estimator} compares samples of the same prompt and needs n_samples_per_prompt >= 2, got {n}"
        )
    groups = rewards.reshape(-1, n)
    mean = groups.mean(dim=1, keepdim=True)
    if estimator == "rloo":
        shaped = groups - (groups.sum(dim=1, keepdim=True) - groups) / (n - 1)
    elif estimator in ("reinforce_baseline", "dr_grpo"):
        shaped = groups - mean
    else:
        shaped = (groups - mean) / (groups.std(dim=1, keepdim=True) + eps)
        # A group whose rewards agree to float precision carries no signal. Dividing its rounding residue
        # (r - mean is ~1e-7, not 0, for equal scores such as 3.2) by a std of ~1e-7 + eps makes advantages of
        # order 1 (up to ~100 seen with a served reward model) out of nothing, so such groups get 0.
        spread = groups.max(dim=1, keepdim=True).values - groups.min(dim=1, keepdim=True).values
        flat = spread <= FLAT_GROUP_RTOL * mean.abs().clamp(min=1.0)
        shaped = shaped.masked_fill(flat, 0.0)
    return shaped.reshape(-1)


# ---------------------------------------------------------------------------------------------------- losses


def aggregate_loss(loss: Tensor, action_mask: Tensor, mode: LossAggregation = "token-mean",
                   max_len: int | None = None) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar over the action tokens; the modes weigh tokens differently.

    - ``token-mean``: sum over all action tokens / their count (OpenRLHF's ``token_level_loss``, DAPO's
      token-level loss): every token weighs the same, so long responses weigh by their length.
    - ``seq-mean-token-mean``: the mean over rows of each row's token mean (GRPO's original form, OpenRLHF's
      ``token_level_loss=False``, forced there for GSPO): every response weighs the same.
    - ``seq-mean-token-sum-norm``: sum over all action tokens / (B * ``max_len``) (Dr.GRPO, Liu et al. 2025): a
      constant normaliser, so neither the length of a response nor of the batch's responses rescales its tokens.
    """
    _check_same_shape(action_mask, loss=loss)
    _check_choice(mode, get_args(LossAggregation), "loss aggregation")
    if mode == "token-mean":
        return masked_mean(loss, action_mask)
    if mode == "seq-mean-token-mean":
        return masked_mean(loss, action_mask, dim=1).mean()
    if max_len is None or max_len < 1:
        raise ValueError(f"seq-mean-token-sum-norm needs max_len >= 1 (the generation limit), got {max_len}")
    return (loss * action_mask.to(loss.dtype)).sum() / (action_mask.shape[0] * max_len)


def policy_ratio(log_probs: Tensor, old_log_probs: Tensor, action_mask: Tensor,
                 level: Literal["token", "sequence"] = "token") -> Tensor:
    """pi / pi_old per action token ``[B, T]``, either per token (PPO) or one per sequence (GSPO).

    ``token``: ``exp(log_probs - old_log_probs)``, the log ratio clamped into [-20, 20] as OpenRLHF v0.11 does
    (a ratio of e^20 is already meaningless and exp would overflow in bf16).
    ``sequence``: GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 7):
    ``s_i = exp(mean_t(log_probs - old_log_probs))``, the geometric mean of the token ratios, the same on every
    action token of row i, so the clip acts on whole responses. Gradients flow to every token through the mean.
    Positions where ``action_mask`` is 0 are 0.
    """
    _check_same_shape(action_mask, log_probs=log_probs, old_log_probs=old_log_probs)
    log_ratio = log_probs - old_log_probs
    m = action_mask.to(log_ratio.dtype)
    if level == "token":
        return log_ratio.clamp(-20.0, 20.0).exp() * m
    if level != "sequence":
        raise ValueError(f"unknown ratio level {level!r}; expected token or sequence")
    return masked_mean(log_ratio, action_mask, dim=1).exp().unsqueeze(1) * m


def clipped_surrogate(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float,
                      dual_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO's clipped objective per token, negated into a loss: ``-min(r A, clamp(r, 1 - eps_low, 1 + eps_high) A)``.

    ``eps_high > eps_low`` is DAPO's clip-higher (Yu et al. 2025): more room for unlikely tokens to grow.
    ``dual_clip = c > 1`` (Ye et al. 2020, "Mastering Complex Control in MOBA Games", as OpenRLHF's PolicyLoss):
    where ``A < 0`` the objective is also bounded below by ``c * A``, so a huge ratio on a bad token cannot make
    the loss unbounded. Returns (per-token loss, bool tensor of tokens where the clipped term is the smaller).
    """
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_clip must be >= 0, got low {eps_low}, high {eps_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages
    objective = torch.min(surr1, surr2)
    if dual_clip is not None:
        objective = torch.where(advantages < 0, torch.max(objective, dual_clip * advantages), objective)
    return -objective, surr2 < surr1


def cispo_surrogate(ratio: Tensor, log_probs: Tensor, advantages: Tensor, eps_low: float,
                    eps_high: float) -> tuple[Tensor, Tensor]:
    """CISPO (MiniMax-M1, 2025, eq. 4): ``-sg(clamp(r, 1 - eps_low, 1 + eps_high)) * A * log_probs`` per token.

    It clips the importance-sampling weight, not the update: the weight is a constant (detached), so every token
    keeps a gradient ``-w A`` on its log-prob, where PPO's clip drops the gradient of clipped tokens entirely
    (often the rare "fork" tokens that matter in reasoning). ``eps_low >= 1`` leaves the weight unbounded below,
    as MiniMax-M1 trains. The loss value is not comparable with PPO's; its gradient is the point.
    Returns (per-token loss, bool tensor of tokens whose weight was clipped).
    """
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_clip must be >= 0, got low {eps_low}, high {eps_high}")
    weight = ratio.clamp(1.0 - eps_low, 1.0 + eps_high).detach()
    return -weight * advantages * log_probs, weight != ratio.detach()


def is_correction_weights(old_log_probs: Tensor, rollout_log_probs: Tensor, action_mask: Tensor,
                          kind: ISCorrection, low: float, high: float) -> Tensor:
    """Importance weights pi_old / pi_rollout for samples drawn by another engine (vLLM), detached, ``[B, T]``.

    Training-time and rollout-time log-probs of the same policy differ (kernels, precision), so the rollout is
    slightly off-policy (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
    Training"; OpenRLHF's ``--vllm_is_correction_type``). With ``w = exp(old_log_probs - rollout_log_probs)``:

    - ``tis``: ``clamp(w, low, high)``, truncated IS per token;
    - ``icepop``: ``w`` where ``low <= w <= high``, else 0 (tokens that disagree too much are dropped);
    - ``seq-mask-tis``: rows whose geometric-mean weight ``exp(mean_t log w)`` is outside [low, high] get 0, the
      others ``clamp(w, low, high)`` per token. OpenRLHF's comment says TIS, its code leaves the token weight
      unclamped; this follows the comment.
    When the rollout log-probs are the trainer's own (HF generate), every weight is 1. Masked positions are 0.
    """
    _check_same_shape(action_mask, old_log_probs=old_log_probs, rollout_log_probs=rollout_log_probs)
    _check_choice(kind, get_args(ISCorrection), "IS correction type")
    if not 0 <= low <= high:
        raise ValueError(f"IS thresholds must satisfy 0 <= low <= high, got ({low}, {high})")
    with torch.no_grad():
        log_w = (old_log_probs - rollout_log_probs).clamp(-20.0, 20.0)
        w = log_w.exp()
        if kind == "tis":
            out = w.clamp(low, high)
        elif kind == "icepop":
            out = w * ((w >= low) & (w <= high)).to(w.dtype)
        else:
            seq = masked_mean(log_w, action_mask, dim=1).exp()
            keep = ((seq >= low) & (seq <= high)).to(w.dtype).unsqueeze(1)
            out = w.clamp(low, high) * keep
    return out * action_mask.to(out.dtype)


def policy_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    action_mask: Tensor,
    eps_clip: float,
    eps_clip_high: float | None = None,
    *,
    dual_clip: float | None = None,
    loss_type: PolicyLossType = "ppo",
    loss_agg: LossAggregation | None = None,
    max_len: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The actor's loss and the fraction of action tokens where clipping took effect (``clip_ratio``).

    ``loss_type``: ``ppo`` (:func:`policy_ratio` per token, :func:`clipped_surrogate`), ``gspo`` (the sequence
    ratio in the same clipped objective) or ``cispo`` (:func:`cispo_surrogate`). ``eps_clip`` is the lower clip,
    ``eps_clip_high`` the upper one (default: ``eps_clip``). ``is_weights`` (from :func:`is_correction_weights`)
    multiply the per-token loss before the reduction. ``loss_agg`` (:func:`aggregate_loss`; ``max_len`` for the
    Dr.GRPO mode) defaults as OpenRLHF: ``token-mean``, and ``seq-mean-token-mean`` for gspo.
    For GSPO with rollouts from another engine pass the rollout log-probs as ``old_log_probs``, as OpenRLHF does.
    """
    _check_same_shape(action_mask, log_probs=log_probs, old_log_probs=old_log_probs, advantages=advantages,
                      is_weights=is_weights)
    _check_choice(loss_type, get_args(PolicyLossType), "policy loss type")
    high = eps_clip if eps_clip_high is None else eps_clip_high
    ratio = policy_ratio(log_probs, old_log_probs, action_mask, "sequence" if loss_type == "gspo" else "token")
    if loss_type == "cispo":
        loss, clipped = cispo_surrogate(ratio, log_probs, advantages, eps_clip, high)
    else:
        loss, clipped = clipped_surrogate(ratio, advantages, eps_clip, high, dual_clip)
    if is_weights is not None:
        loss = loss * is_weights
    mode = loss_agg or ("seq-mean-token-mean" if loss_type == "gspo" else "token-mean")
    clip_ratio = masked_mean(clipped.to(ratio.dtype), action_mask).detach()
    return aggregate_loss(loss, action_mask, mode, max_len), clip_ratio


def kl_loss(log_probs: Tensor, ref_log_probs: Tensor, action_mask: Tensor, estimator: KLEstimator = "k3") -> Tensor:
    """KL to the reference as a loss term (GRPO, Shao et al. 2024, eq. 3; OpenRLHF ``--use_kl_loss``).

    The token-mean of :func:`approx_kl` over the action tokens, with gradient through ``log_probs``; the trainer
    adds ``kl_coef *`` this to the policy loss instead of putting the KL into the reward. k3 (GRPO's choice) and
    k2 have gradients that pull towards the reference; k1's expectation of the gradient is 0 on-policy.
    """
    return masked_mean(approx_kl(log_probs, ref_log_probs, action_mask, estimator), action_mask)


def ptx_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The pretraining term of PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2; OpenRLHF ``--ptx_coef``).

    Next-token negative log-likelihood of a batch of pretraining text, averaged over every predicted real token
    (token t+1 given 0..t, where both are inside ``attention_mask``), as OpenRLHF's GPTLMLoss averages it. ``logits``
    ``[B, L, V]`` are the policy's at temperature 1 (the text is not sampled); ``input_ids`` and ``attention_mask``
    ``[B, L]``, padded on either side. The trainer adds ``ptx_coef *`` this to the actor loss: minimising it raises
    the likelihood InstructGPT's objective adds as ``gamma * E[log pi(x)]``.
    """
    targets = input_ids[:, 1:]
    mask = attention_mask[:, 1:] * attention_mask[:, :-1]
    log_probs = logits[:, :-1].float().log_softmax(-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return masked_mean(nll, mask.to(nll.dtype))


@torch.no_grad()
def ema_update_(ema: Tensor, param: Tensor, beta: float) -> Tensor:
    """One step of the policy's exponential moving average, in place: ``ema = beta * ema + (1 - beta) * param``.

    OpenRLHF's ``moving_average`` (``--enable_ema``, ``--ema_beta`` 0.992), applied after every optimizer step, so
    after ``n`` steps the average weighs the weights of step ``k`` by ``(1 - beta) * beta^(n - k)`` and the initial
    weights by ``beta^n``. ``ema`` may be float32 beside a bf16 ``param`` (the sum stays in ``ema``'s dtype).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"ema beta must be in [0, 1], got {beta}")
    return ema.mul_(beta).add_(param.to(ema.dtype), alpha=1.0 - beta)


# ------------------------------------------------------------------------------------------ reward shaping


def overlong_penalty(lengths: Tensor, max_new_tokens: int, buffer_len: float, factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), one penalty <= 0 per response.

    With ``L_max = max_new_tokens`` and ``L_cache = buffer_len``: 0 while ``|y| <= L_max - L_cache``, then
    ``-(|y| - (L_max - L_cache)) / L_cache * factor``, reaching ``-factor`` at ``L_max`` (lengths are capped
    there, as OpenRLHF's apply_overlong_penalty does). Added to the reward before the group baseline.
    """
    if not 0 < buffer_len <= max_new_tokens:
        raise ValueError(f"overlong buffer length must be in (0, max_new_tokens={max_new_tokens}], got {buffer_len}")
    exceed = (lengths.to(torch.float32) - (max_new_tokens - buffer_len)).clamp(min=0.0, max=float(buffer_len))
    return -exceed / buffer_len * factor


def stop_properly_penalty(rewards: Tensor, truncated: Tensor, coef: float) -> Tensor:
    """ProRL's penalty for responses cut at the length limit (OpenRLHF ``--stop_properly_penalty_coef``).

    ``coef`` in [0, 1] scales the reward of a truncated response by ``coef``; a negative ``coef`` replaces it by
    ``coef`` (a fixed punishment). Responses that ended with EOS keep their reward.
    """
    if 1 < coef:
        raise ValueError(f"stop_properly_penalty_coef must be in [0, 1] or negative, got {coef}")
    truncated = truncated.bool()
    penalised = torch.full_like(rewards, coef) if coef < 0 else rewards * coef
    return torch.where(truncated, penalised, rewards)


def dynamic_filter_keep(scores: Tensor, n_samples_per_prompt: int, low: float, high: float) -> Tensor:
    """DAPO's dynamic sampling: which prompt groups to keep, ``[N / n]`` bools (OpenRLHF ``--dynamic_filtering``).

    A group (the ``n`` contiguous samples of one prompt) is kept when its mean score lies strictly inside
    (``low``, ``high``), as OpenRLHF's samples generator tests it. With 0/1 scores and the default (0, 1), that
    drops exactly the groups that are all wrong or all right: their group-baseline advantages are all 0, so they
    would add nothing but noise in the batch size.
    """
    groups = scores.reshape(-1, int(n_samples_per_prompt)) if scores.numel() else scores.reshape(0, 1)
    mean = groups.to(torch.float64).mean(dim=1)
    return (mean > low) & (mean < high)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    action_mask: Tensor,
    value_clip: float | None,
) -> Tensor:
    """Critic loss ``0.5 * (V - returns)^2``, token-mean over all action tokens of the batch.

    With ``value_clip`` set (PPO2 / OpenRLHF): ``V_clip = old_V + clamp(V - old_V, -value_clip, value_clip)``
    and the per-token loss is ``0.5 * max((V - R)^2, (V_clip - R)^2)``, the pessimistic of the two, so the
    critic cannot profit from moving far from the values it had at rollout time. ``None`` disables clipping.
    """
    _check_same_shape(action_mask, values=values, old_values=old_values, returns=returns)
    if value_clip is not None and value_clip < 0:
        raise ValueError(f"value_clip must be >= 0 or None, got {value_clip}")
    loss = (values - returns) ** 2
    if value_clip is not None:
        clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, action_mask)


# ------------------------------------------------------------------------------------------- KL controllers


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing. Same interface as :class:`AdaptiveKLController`."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: a fixed coefficient ignores the measured KL."""


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences").

    Steers the measured KL towards ``kl_target``: after ``n_steps`` samples,
    ``e = clip(current_kl / kl_target - 1, -0.2, 0.2)`` and ``value *= 1 + e * n_steps / horizon``.
    The clip bounds the change per update; ``horizon`` sets how many samples a full correction takes.
    """

    def __init__(self, init_kl_coef: float, kl_target: float, horizon: float) -> None:
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if not kl_target > 0:
            raise ValueError(f"kl_target must be > 0, got {kl_target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.kl_target = float(kl_target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Scale ``value`` up when the KL is above target, down when below (at most 20 % per full horizon)."""
        error = min(max(float(current_kl) / self.kl_target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# ------------------------------------------------------------------------------------------------ entry point


def compute_advantages(
    estimator: AdvantageEstimator,
    rewards: Tensor,
    kl: Tensor | None,
    action_mask: Tensor,
    *,
    values: Tensor | None = None,
    gamma: float = 1.0,
    lambd: float = 1.0,
    kl_coef: float = 0.0,
    n_samples_per_prompt: int = 1,
    whiten: bool | None = None,
    whiten_std: bool = True,
    reward_clip_range: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sequence rewards and per-token KL to ``(advantages, returns)``, both ``[B, T]``: what the trainer calls.

    Steps, in OpenRLHF's order: :func:`group_baseline` on ``rewards`` ``[B]`` (B = prompts *
    ``n_samples_per_prompt``, samples of a prompt contiguous); :func:`kl_penalized_rewards` (the optional
    ``reward_clip_range`` applies to the shaped reward there); then for ``gae``
    :func:`gae_advantages_and_returns` with the critic's ``values``, for the critic-free estimators
    :func:`discounted_returns` used as both advantages and returns (no ``values`` needed; rloo,
    reinforce_baseline, group_norm and dr_grpo force ``gamma=1`` with a warning, as OpenRLHF does).

    Whitening (``whiten=None``, OpenRLHF's default): advantages of gae, reinforce and reinforce_baseline are
    normalised over all action tokens of the batch (:func:`masked_whiten`, biased variance); rloo, group_norm and
    dr_grpo advantages are not (group_norm is already scaled per prompt; current OpenRLHF skips rloo too, and
    Dr.GRPO's point is to leave the scale alone).
    ``whiten=True/False`` forces it on or off; ``whiten_std=False`` only subtracts the mean
    (OpenRLHF ``--no_advantage_std_norm``). Returns are never whitened. ``kl=None`` means no KL penalty.
    """
    _check_choice(estimator, get_args(AdvantageEstimator), "advantage estimator")
    _check_mask(action_mask)
    _check_seq_rewards(rewards, action_mask.shape[0])
    if kl is None:
        kl = torch.zeros(action_mask.shape, dtype=rewards.dtype, device=rewards.device)
    if estimator == "gae":
        if values is None:
            raise ValueError("the gae estimator needs the critic's values [B, T]; pass values=")
        _check_same_shape(action_mask, values=values)
    _check_same_shape(action_mask, kl=kl)

    shaped = group_baseline(rewards, n_samples_per_prompt, "reinforce" if estimator == "gae" else estimator)
    token_rewards = kl_penalized_rewards(shaped, kl, action_mask, kl_coef, reward_clip_range=reward_clip_range)

    if estimator == "gae":
        advantages, returns = gae_advantages_and_returns(values, token_rewards, action_mask, gamma, lambd)
    else:
        if estimator in _GROUP_ESTIMATORS and gamma != 1.0:
            warnings.warn(f"{estimator} uses gamma=1.0; the given gamma={gamma} is ignored (as in OpenRLHF)")
            gamma = 1.0
        returns = discounted_returns(token_rewards, action_mask, gamma)
        advantages = returns.clone()

    if whiten is None:
        whiten = estimator in _WHITENED_BY_DEFAULT
    if whiten:
        if whiten_std:
            advantages = masked_whiten(advantages, action_mask)
        else:
            advantages = (advantages - masked_mean(advantages, action_mask)) * action_mask.to(advantages.dtype)
    return advantages, returns
