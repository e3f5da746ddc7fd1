"""The trainer's own path from scored samples to Experience (ppo/shaping.py), against hand-computed values, and the
policy-optimisation options' bad inputs (exit 2 with a message naming the flag)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlhfctl.config import PPOArgs, RolloutArgs, TrainPPOConfig, resolve
from rlhfctl.errors import ConfigError
from rlhfctl.ppo.experience import Samples
from rlhfctl.ppo.shaping import build_experience
from tests.helpers import ARITHMETIC, run_cli

BASE = {"pretrain": "p", "prompt_data": "d", "remote_rm_url": "r.py", "train_batch_size": 8,
        "micro_train_batch_size": 4}


def cfg(**kw) -> TrainPPOConfig:
    return TrainPPOConfig(**{**BASE, **kw})


def shape(c: TrainPPOConfig, *args):
    """build_experience with the config's PPO and rollout groups, as the trainer calls it."""
    return build_experience(c.slice(PPOArgs), c.slice(RolloutArgs), *args)


def samples(action_mask: list[list[int]], truncated: list[bool] | None = None) -> Samples:
    """Rows of a 1-token prompt followed by the given response mask (token ids do not matter here)."""
    act = torch.tensor(action_mask)
    seqs = torch.ones(act.shape[0], act.shape[1] + 1, dtype=torch.long)
    attn = torch.cat([torch.ones(act.shape[0], 1, dtype=torch.long), act], dim=1)
    n = act.shape[0]
    return Samples(seqs, attn, act, ["p"] * n, ["l"] * n, ["r"] * n,
                   None if truncated is None else torch.tensor(truncated))


def test_reward_clip_applies_to_the_shaped_reward_on_the_trainers_path():
    """OpenRLHF clamps after the group baseline: raw [10, 0] -> baseline [5, -5] -> clip (-1, 1) -> [1, -1].
    (Clamping the raw reward first, as train-ppo did, gives [1, 0] -> [0.5, -0.5].)"""
    c = cfg(advantage_estimator="reinforce_baseline", n_samples_per_prompt=2, reward_clip_range=(-1.0, 1.0),
            init_kl_coef=0.0)
    s = samples([[1, 1], [1, 1]])
    exp, info = shape(c, s, torch.tensor([10.0, 0.0]), torch.zeros(2, 2), None, None, 0.0)
    assert_close(exp.returns, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    assert info["reward"] == 5.0  # the metric is the reward as the reward function gave it


def test_length_penalties_change_the_reward_before_the_group_baseline():
    """dr_grpo, n = 2, generate_max_len 4, overlong buffer 2, stop-properly -0.5:
    row 0: 4 tokens, truncated: overlong exceed 4 - (4 - 2) = 2 -> penalty -2 / 2 = -1 -> reward 0, then truncated
           -> replaced by -0.5 ; row 1: 2 tokens, stopped: reward 1.
    group mean (−0.5 + 1) / 2 = 0.25 -> advantages [-0.75, 0.75] (dr_grpo: not whitened)."""
    c = cfg(advantage_estimator="dr_grpo", n_samples_per_prompt=2, generate_max_len=4, overlong_buffer_len=2,
            stop_properly_penalty_coef=-0.5, init_kl_coef=0.0)
    s = samples([[1, 1, 1, 1], [1, 1, 0, 0]], truncated=[True, False])
    exp, info = shape(c, s, torch.tensor([1.0, 1.0]), torch.zeros(2, 4), None, None, 0.0)
    assert_close(exp.advantages, torch.tensor([[-0.75] * 4, [0.75, 0.75, 0.0, 0.0]]))
    assert info["overlong_penalized"] == 0.5 and info["truncated"] == 0.5
    assert info["reward"] == 1.0 and info["reward_penalized"] == 0.25


def test_kl_goes_into_the_reward_or_into_the_loss():
    """reinforce, k1, kl_coef 0.1, log-probs [0.5, 0.1] against a reference at 0, reward 1, gamma 1, no whitening.
    In the reward: token rewards [-0.05, 1 - 0.01] -> returns [0.94, 0.99]. --use-kl-loss: returns [1, 1], and
    the experience carries the reference log-probs and the coefficient for the actor's KL loss."""
    lp, ref = torch.tensor([[0.5, 0.1]]), torch.zeros(1, 2)
    s = samples([[1, 1]])
    in_reward, info = shape(cfg(advantage_estimator="reinforce", advantage_whiten=False), s,
                                       torch.tensor([1.0]), lp, ref, None, 0.1)
    assert_close(in_reward.returns, torch.tensor([[0.94, 0.99]]))
    assert in_reward.ref_log_probs is None and in_reward.kl_loss_coef == 0.0
    assert info["kl"] == pytest.approx(0.3)
    as_loss, info = shape(cfg(advantage_estimator="reinforce", advantage_whiten=False, use_kl_loss=True,
                                         kl_estimator="k3"), s, torch.tensor([1.0]), lp, ref, None, 0.1)
    assert_close(as_loss.returns, torch.tensor([[1.0, 1.0]]))
    assert_close(as_loss.ref_log_probs, ref)
    assert as_loss.kl_loss_coef == 0.1
    k3 = ((math.exp(-0.5) - 1 + 0.5) + (math.exp(-0.1) - 1 + 0.1)) / 2
    assert info["kl"] == pytest.approx(k3, rel=1e-5)  # still measured and logged


def test_is_correction_with_hf_generation_uses_the_actors_own_log_probs():
    lp = torch.tensor([[-0.5, -1.0]])
    exp, _ = shape(cfg(advantage_estimator="reinforce", enable_vllm_is_correction=True),
                              samples([[1, 1]]), torch.tensor([1.0]), lp, None, None, 0.0)
    assert_close(exp.rollout_log_probs, lp)
    off, _ = shape(cfg(advantage_estimator="reinforce"), samples([[1, 1]]), torch.tensor([1.0]), lp,
                              None, None, 0.0)
    assert off.rollout_log_probs is None


def test_generate_marks_responses_cut_at_the_length_limit():
    """truncated (for --stop-properly-penalty-coef): no EOS among the response's tokens. The shipped arithmetic
    policy answers in one character per digit, then EOS: with 2 new tokens, 1-digit answers stop, 2-digit ones
    are cut."""
    from rlhfctl.models.actor import generate, load_policy, load_tokenizer

    policy = str(ARITHMETIC / "policy")
    tok, model = load_tokenizer(policy), load_policy(policy)
    torch.manual_seed(0)
    out = generate(model, tok, ["99-70=", "49+67=", "2+3=", "1+4=", "10-7=", "50+38="], max_new_tokens=2,
                   temperature=0)
    assert out.truncated.tolist() == [len(r) > 1 for r in out.responses]
    assert set(out.truncated.tolist()) == {True, False}, out.responses


def test_clip_bounds_come_from_eps_clip_low_high_else_eps_clip():
    assert cfg(eps_clip=0.3).clip_low_high == (0.3, 0.3)
    assert cfg(eps_clip_low_high="0.2,0.28").clip_low_high == (0.2, 0.28)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("flags, needle", [
    ({"dynamic_filtering": True}, "--dynamic-filtering keeps or drops groups"),
    ({"dynamic_filtering": True, "n_samples_per_prompt": 2, "dynamic_filtering_reward_range": "1,0"},
     "--dynamic-filtering-reward-range needs LOW < HIGH"),
    ({"overlong_buffer_len": 2048, "generate_max_len": 1024}, "--overlong-buffer-len (2048) is more than"),
    ({"stop_properly_penalty_coef": 2}, "--stop-properly-penalty-coef must be in [0, 1]"),
    ({"vllm_is_truncated_threshold": "5,0.5", "enable_vllm_is_correction": True},
     "--vllm-is-truncated-threshold needs 0 <= LOW < HIGH"),
    ({"freezing_actor_steps": 3, "advantage_estimator": "group_norm", "n_samples_per_prompt": 2},
     "--freezing-actor-steps 3 warms up the critic"),
    ({"eps_clip_low_high": "-0.1,0.2"}, "--eps-clip-low-high needs LOW, HIGH >= 0"),
    ({"eps_clip_low_high": "0.2"}, "--eps-clip-low-high"),
    ({"dual_clip": 1.0}, "--dual-clip"),
    ({"policy_loss_type": "trpo"}, "--policy-loss-type"),
    ({"loss_agg_mode": "sum"}, "--loss-agg-mode"),
    ({"vllm_is_correction_type": "clip"}, "--vllm-is-correction-type"),
    ({"lr_scheduler": "step"}, "--lr-scheduler"),
    ({"advantage_estimator": "dr_grpo"}, "--advantage-estimator dr_grpo compares the samples of one prompt"),
    ({"overlong_buffer_len": 0}, "--overlong-buffer-len"),
    ({"dual_clip": 3, "policy_loss_type": "cispo"}, "--policy-loss-type cispo has none to bound"),
    ({"overlong_penalty_factor": 0.5}, "--overlong-penalty-factor has no effect without --overlong-buffer-len"),
    ({"dynamic_filtering_reward_range": "0.1,0.9"}, "--dynamic-filtering-reward-range has no effect without"),
    ({"dynamic_filtering_max_rounds": 2}, "--dynamic-filtering-max-rounds has no effect without"),
    ({"vllm_is_correction_type": "icepop"}, "--vllm-is-correction-type has no effect without"),
    ({"vllm_is_truncated_threshold": "0.8,2"}, "--vllm-is-truncated-threshold has no effect without"),
])
def test_bad_policy_optimisation_options_name_the_flag(flags, needle):
    with pytest.raises(ConfigError) as err:
        resolve("train-ppo", {**BASE, **flags})
    assert needle in str(err.value)


def test_openrlhf_spellings_reach_the_fields_and_a_bad_value_exits_2(capsys, tmp_path):
    """OpenRLHF v0.10.1's snake_case flags (the DAPO script's) resolve to the fields; --print-config shows them."""
    common = ["train-ppo", "--pretrain", "p", "--prompt_data", "d", "--remote_rm_url", "r.py",
              "--n_samples_per_prompt", "4", "--advantage_estimator", "dr_grpo"]
    code, out, err = run_cli(common + [
        "--use_kl_loss", "--kl_estimator", "k3", "--entropy_loss_coef", "0", "--eps_clip_low_high", "0.2,0.28",
        "--dual_clip", "3", "--policy_loss_type", "gspo", "--no_advantage_std_norm", "--dynamic_filtering",
        "--dynamic_filtering_reward_range", "0,1", "--overlong_buffer_len", "256", "--overlong_penalty_factor", "1",
        "--stop_properly_penalty_coef", "0", "--enable_vllm_is_correction", "--vllm_is_truncated_threshold", "0.5,5",
        "--vllm_is_correction_type", "icepop", "--freezing_actor_steps", "-1", "--lr_scheduler", "constant",
        "--print-config"], capsys)
    assert code == 0, err
    for line in ("use_kl_loss: true", "eps_clip_low_high: [0.2, 0.28]", "policy_loss_type: gspo",
                 "advantage_std_norm: false", "dynamic_filtering: true", "overlong_buffer_len: 256.0",
                 "vllm_is_correction_type: icepop", "lr_scheduler: constant", "advantage_estimator: dr_grpo"):
        assert line in out, line
    code, _, err = run_cli(common + ["--policy_loss_type", "trpo"], capsys)
    assert code == 2 and "--policy-loss-type" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- dynamic sampling
class _Prompt:
    def __init__(self, name: str, scores: list[float]) -> None:
        self.name, self.scores = name, scores


def _rollout(batch, pool, max_rounds, world=1, use_scores=True):
    """filtered_rollout with a generate that makes one row per sample and a reward that reads the prompt's scores
    (rewards are a constant 0.5 when `use_scores`, so only the scores can decide)."""
    import random

    from rlhfctl.ppo.dynamic_sampling import filtered_rollout

    calls = []

    def generate(prompts, round):
        calls.append((round, [p.name for p in prompts]))
        rows = [(p, i) for p in prompts for i in range(2)]
        s = samples([[1]] * len(rows))
        s.prompts = [p.name for p, _ in rows]
        s.labels = [str(p.scores[i]) for p, i in rows]
        return s

    def score(s):
        from rlhfctl.rewards.base import RewardBatch

        values = [float(label) for label in s.labels]
        return RewardBatch([0.5] * len(values), values) if use_scores else RewardBatch(values)

    out = filtered_rollout(batch, pool, generate, score, n_samples_per_prompt=2, reward_range=(0.0, 1.0),
                           max_rounds=max_rounds, world_size=world, rng=random.Random(0), pad_token_id=0)
    return out, calls


POOL = [_Prompt("A", [0, 0]), _Prompt("B", [1, 0]), _Prompt("C", [1, 1]), _Prompt("D", [0, 1]),
        _Prompt("E", [1, 0]), _Prompt("F", [0, 0])]


@pytest.mark.parametrize("use_scores", [True, False])
def test_dynamic_sampling_replaces_dropped_groups_with_fresh_prompts(use_scores):
    out, calls = _rollout(POOL[:2], POOL, max_rounds=8, use_scores=use_scores)
    groups = [out.samples.prompts[i] for i in range(0, len(out.samples), 2)]
    assert len(groups) == 2 and groups[0] == "B" and groups[1] in ("D", "E")  # mixed groups only
    drawn = [name for _, names in calls for name in names]
    assert len(drawn) == len(set(drawn))  # no prompt drawn twice in a step
    assert [r for r, _ in calls] == list(range(len(calls)))  # each round samples from a seed of its own
    m = out.metrics
    assert m["dynamic_filtering/groups_sampled"] == len(drawn) and m["dynamic_filtering/padded_groups"] == 0
    assert m["dynamic_filtering/extra_rounds"] == len(calls) - 1
    assert m["dynamic_filtering/pass_rate"] == pytest.approx(2 / len(drawn))


def test_dynamic_sampling_fills_up_with_dropped_groups_after_the_last_round():
    out, calls = _rollout(POOL[:2], POOL, max_rounds=0)
    assert out.samples.prompts == ["B", "B", "A", "A"] and len(calls) == 1
    assert out.metrics["dynamic_filtering/padded_groups"] == 1 and out.metrics["dynamic_filtering/pass_rate"] == 0.5


def test_dynamic_sampling_draws_whole_prompts_for_every_worker():
    _, calls = _rollout([POOL[0], POOL[2]], POOL, max_rounds=1, world=2)
    assert len(calls[1][1]) == 2  # two missing groups, two workers: two prompts


@pytest.mark.parametrize("changes, skipped", [
    ({}, True),  # one update of 8 samples, no KL term in the reward (init_kl_coef 0), the actor sampled
    ({"init_kl_coef": 0.01, "use_kl_loss": True}, True),  # the KL is in the loss: read in training
    ({"init_kl_coef": 0.01}, False),  # the KL is in the reward: the actor's log-probs shape it
    ({"max_epochs": 2}, False),  # the second epoch trains on weights the first changed
    ({"train_batch_size": 4}, False),  # two updates per step
    ({"vllm_num_engines": 1}, False),  # vLLM sampled: its log-probs are compared with the actor's
    ({"use_kl_loss": True, "init_kl_coef": 0.01, "kl_target": 0.1}, False),  # an adaptive KL coefficient
    ({"freezing_actor_steps": 2, "advantage_estimator": "gae"}, False),
])
def test_the_experience_forward_of_the_actor_is_left_out_only_where_training_gives_the_same(changes, skipped):
    from rlhfctl.config import TrainArgs
    from rlhfctl.ppo.shaping import old_log_probs_in_training

    c = cfg(**{"rollout_batch_size": 2, "n_samples_per_prompt": 4, "init_kl_coef": 0.0, **changes})
    assert old_log_probs_in_training(c.slice(TrainArgs), c.slice(PPOArgs), c.slice(RolloutArgs),
                                     c.vllm_num_engines or 0) is skipped


def test_without_the_actor_s_log_probs_the_experience_has_no_kl_metric():
    """The KL metric then comes from the actor's training forward (the trainer takes actor_kl)."""
    s = samples([[1, 1], [1, 0]])
    experience, info = shape(cfg(use_kl_loss=True, advantage_estimator="reinforce"), s, torch.tensor([1.0, 0.0]), None,
                             torch.zeros(2, 2), None, 0.01)
    assert experience.log_probs is None and "kl" not in info and experience.kl is None
    assert torch.equal(experience.ref_log_probs, torch.zeros(2, 2))
