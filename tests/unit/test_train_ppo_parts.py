"""train-ppo's parts without Ray: experience batching, actor sampling and log-probs, the critic, role planning,
checkpoint bookkeeping, tracking sinks, and the input errors a user hits before any worker starts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rlhfctl.config import TrainPPOConfig
from rlhfctl.errors import ConfigError
from rlhfctl.ppo.experience import Experience, Samples
from tests.helpers import run_cli


# ------------------------------------------------------------------------------------------------ experience
def _experience(prompt_w: int, action_w: int, rows: int, fill: float) -> Experience:
    seqs = torch.arange(rows * (prompt_w + action_w)).reshape(rows, -1) + 10
    attn = torch.ones(rows, prompt_w + action_w, dtype=torch.long)
    if prompt_w > 1:
        attn[0, 0] = 0  # row 0 has one left pad
    act = torch.ones(rows, action_w, dtype=torch.long)
    act[0, -1] = 0  # and ended one token early
    per_token = torch.full((rows, action_w), fill)
    return Experience(seqs, attn, act, log_probs=per_token.clone(), rewards=torch.full((rows,), fill),
                      advantages=per_token.clone(), info={"response_length": act.sum(1).float()})


def test_concat_pads_prompts_left_and_responses_right():
    a, b = _experience(3, 2, 2, 1.0), _experience(1, 4, 1, 2.0)
    joined = Experience.concat([a, b], pad_token_id=0)
    assert joined.sequences.shape == (3, 3 + 4) and joined.action_mask.shape == (3, 4)
    # b's single prompt token sits right before its response; its left is padding with mask 0
    assert joined.attention_mask[2].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert joined.sequences[2, 2:].tolist() == b.sequences[0].tolist()
    # a's responses are padded on the right, masked out, with 0 in per-token fields
    assert joined.action_mask[0].tolist() == [1, 0, 0, 0]
    assert joined.log_probs[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert joined.rewards.tolist() == [1.0, 1.0, 2.0]
    assert joined.values is None  # absent in the parts: absent in the whole


def test_select_trims_columns_no_row_uses():
    joined = Experience.concat([_experience(3, 2, 2, 1.0), _experience(1, 4, 1, 2.0)])
    part = joined.select([0, 1])
    assert part.num_actions == 2  # a's responses only need 2 columns
    assert part.sequences.shape[1] == 3 + 2
    assert torch.equal(part.sequences, _experience(3, 2, 2, 1.0).sequences)


def test_micro_batches_cover_every_row_once_and_shards_split_evenly():
    exp = Experience.concat([_experience(2, 3, 5, float(i)) for i in range(2)])
    gen = torch.Generator().manual_seed(0)
    batches = exp.micro_batches(3, gen)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(float(r) for b in batches for r in b.rewards) == sorted(exp.rewards.tolist())
    assert [len(exp.shard(r, 3)) for r in range(3)] == [3, 3, 4]
    rings = [exp.shard(r, 4, ring=2) for r in range(4)]  # two rings of two workers: each ring's pair shares rows
    assert [len(s) for s in rings] == [5, 5, 5, 5]
    assert torch.equal(rings[0].rewards, rings[1].rewards) and torch.equal(rings[2].rewards, rings[3].rewards)
    assert torch.equal(torch.cat([rings[0].rewards, rings[2].rewards]), exp.rewards)


def test_samples_concat_keeps_texts_in_order():
    s1 = Samples(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4), torch.ones(1, 2), ["p1"], ["l1"], ["r1"])
    s2 = Samples(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3), torch.ones(2, 1), ["p2", "p3"], ["l2", "l3"],
                 ["r2", "r3"])
    joined = Samples.concat([s1, s2], pad_token_id=0)
    assert joined.prompts == ["p1", "p2", "p3"] and joined.responses == ["r1", "r2", "r3"]
    assert joined.sequences.shape == (3, 2 + 2)


# ------------------------------------------------------------------------------------------------ actor
def test_response_action_mask_stops_after_first_eos():
    from rlhfctl.models.actor import response_action_mask

    responses = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert response_action_mask(responses, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_generate_left_pads_truncates_from_left_and_log_probs_match_a_plain_forward(tiny_policy_dir):
    from rlhfctl.models.actor import action_log_probs, generate, load_policy, load_tokenizer

    tok = load_tokenizer(str(tiny_policy_dir))
    model = load_policy(str(tiny_policy_dir)).eval()
    long_prompt = "one two three four five six seven eight nine ten " * 3
    torch.manual_seed(0)
    out = generate(model, tok, ["hi", long_prompt], max_new_tokens=6, prompt_max_len=8)
    num_prompt = out.sequences.shape[1] - out.action_mask.shape[1]
    assert num_prompt == 8  # the long prompt was cut to its last 8 tokens
    assert out.sequences[1, :8].tolist() == tok(long_prompt, add_special_tokens=False)["input_ids"][-8:]
    assert out.attention_mask[0, 0] == 0  # "hi" is left-padded
    # Log-probs of a padded row equal those of the same row alone, unpadded.
    lp = action_log_probs(model, out.sequences, out.attention_mask, out.action_mask.shape[1])
    keep = out.attention_mask[0].bool()
    alone = out.sequences[0][keep].unsqueeze(0)
    n_act = out.action_mask.shape[1]
    lp_alone = action_log_probs(model, alone, torch.ones_like(alone), n_act)
    valid = out.action_mask[0].bool()
    assert torch.allclose(lp[0][valid], lp_alone[0][valid], atol=1e-5)
    assert len(out.responses) == 2


def test_generate_lays_out_a_group_s_repeated_prompt_as_it_lays_out_each_prompt(tiny_policy_dir):
    """A group's prompt is tokenized once for its samples: each row's prompt part is that prompt's own tokens."""
    from rlhfctl.models.actor import generate, load_policy, load_tokenizer, tokenize_prompts

    tok = load_tokenizer(str(tiny_policy_dir))
    prompts = ["hi", "one two three", "hi", "one two three", "hi"]
    out = generate(load_policy(str(tiny_policy_dir)).eval(), tok, prompts, max_new_tokens=3, prompt_max_len=8)
    ids, mask = tokenize_prompts(tok, prompts, 8)
    width = ids.shape[1]
    assert torch.equal(out.sequences[:, :width], ids) and torch.equal(out.attention_mask[:, :width], mask)


def test_same_seed_same_samples(tiny_policy_dir):
    from rlhfctl.models.actor import generate, load_policy, load_tokenizer

    tok = load_tokenizer(str(tiny_policy_dir))
    model = load_policy(str(tiny_policy_dir)).eval()
    draws = []
    for _ in range(2):
        torch.manual_seed(123)
        draws.append(generate(model, tok, ["What is 2 + 3?"] * 3, max_new_tokens=5).sequences)
    assert torch.equal(*draws)


# ------------------------------------------------------------------------------------------------ critic
def test_critic_from_reward_model_starts_at_its_reward(tiny_rm_seqcls_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rlhfctl.models.critic import Critic

    critic = Critic.from_pretrained(str(tiny_rm_seqcls_dir)).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_rm_seqcls_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        values = critic(ids, mask, num_actions=4)  # V before each of the last 4 tokens
        per_token = rm.score(rm.model(ids, attention_mask=mask).last_hidden_state).squeeze(-1)
    assert values.shape == (1, 4)
    assert torch.allclose(values, per_token[:, :4], atol=1e-5)
    # Saved in the *ForSequenceClassification layout: loads back with the same head.
    critic.save_pretrained(tmp_path / "critic")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "critic").eval()
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, rm(ids).logits, atol=1e-5)


def test_critic_from_openrlhf_layout_and_from_a_causal_lm(tiny_rm_openrlhf_dir, tiny_policy_dir):
    from rlhfctl.models.critic import Critic, _read_tensor, critic_source

    critic = Critic.from_pretrained(str(tiny_rm_openrlhf_dir))
    assert torch.equal(critic.value_head.weight, _read_tensor(tiny_rm_openrlhf_dir, "value_head.weight"))
    fresh = Critic.from_pretrained(str(tiny_policy_dir))
    assert fresh.value_head.weight.abs().max() < 0.5
    rm, policy = str(tiny_rm_openrlhf_dir), str(tiny_policy_dir)
    assert critic_source(None, rm, policy) == rm and critic_source(policy, rm, "p") == policy
    with pytest.raises(ConfigError, match="--critic-pretrain /no/such: no such folder"):
        critic_source("/no/such", rm, policy)


# ------------------------------------------------------------------------------------------------ placement
def _roles(init_kl_coef=0.01, advantage_estimator="gae", reward_pretrain=None, remote_rm_url="x.py"):
    from rlhfctl.config import PlacementArgs, PPOArgs, RewardModelArgs, RewardSourceArgs
    from rlhfctl.distributed.placement import needed_roles

    return needed_roles(PPOArgs(init_kl_coef=init_kl_coef, advantage_estimator=advantage_estimator), PlacementArgs(),
                        RewardModelArgs(reward_pretrain=reward_pretrain), RewardSourceArgs(remote_rm_url=remote_rm_url))


def _plan(roles, use_gpus, one_node=False, **placement):
    from rlhfctl.config import PlacementArgs, VLLMArgs
    from rlhfctl.distributed.placement import plan_roles

    return plan_roles(PlacementArgs(**placement), VLLMArgs(), roles, use_gpus=use_gpus, one_node=one_node)


def test_roles_follow_estimator_kl_and_reward_flags():
    assert _roles() == ["actor", "ref", "critic"]
    assert _roles(advantage_estimator="group_norm", init_kl_coef=0) == ["actor"]
    assert _roles(reward_pretrain="rm", remote_rm_url=None)[-1] == "reward"


def test_seed_colocation_shares_bundles():
    plan = _plan(["actor", "ref", "critic"], False, actor_num_gpus_per_node=2, ref_num_gpus_per_node=2,
                 critic_num_gpus_per_node=2, colocate_actor_ref=True)
    # colocated: one bundle per GPU (each GPU's fractions stay on it); a role of its own: one bundle per node
    assert plan.bundles == {"actor": 2, "critic": 1}
    assert plan.group_plans["critic"].bundle(True) == {"GPU": 2.0, "CPU": 2.0}
    assert [plan.roles["critic"].bundle_index(r) for r in (0, 1)] == [0, 0]
    assert plan.roles["ref"].group == "actor" and plan.roles["ref"].share == 0.5
    assert plan.roles["ref"].resources(False) == {"num_gpus": 0, "num_cpus": 0.5}
    assert plan.roles["critic"].resources(True) == {"num_gpus": 1.0, "num_cpus": 0}
    assert "ref 2 (colocated with actor)" in plan.describe()


def test_roles_of_several_nodes_spread_one_bundle_per_node():
    shape = dict(actor_num_nodes=2, actor_num_gpus_per_node=4, ref_num_nodes=3)
    plan = _plan(["actor", "ref"], True, **shape)
    actor = plan.group_plans["actor"]
    assert (actor.count, actor.strategy, actor.bundle(True)) == (2, "STRICT_SPREAD", {"GPU": 4.0, "CPU": 4.0})
    assert [plan.roles["actor"].bundle_index(r) for r in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert plan.group_plans["ref"].count == 3 and plan.group_plans["ref"].strategy == "STRICT_SPREAD"
    # a local Ray is one node: the nodes share it
    assert _plan(["actor"], False, one_node=True, **shape).group_plans["actor"].strategy == "PACK"


def test_colocated_roles_must_match_in_size():
    with pytest.raises(ConfigError, match="ref asks for 1 GPUs but is colocated with actor, which asks for 2"):
        _plan(["actor", "ref"], False, actor_num_gpus_per_node=2, colocate_actor_ref=True)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_ignore_unfinished_and_keep_the_newest(tmp_path):
    from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState

    mgr = CheckpointManager(str(tmp_path), max_ckpt_num=2)
    for step in (1, 2, 3):
        mgr.finish(mgr.begin(step), TrainerState(step=step))
    mgr.begin(4)  # a save that died half-way
    assert [s for s, _ in mgr.complete()] == [2, 3]
    assert mgr.latest().name == "global_step3"
    assert TrainerState.from_file(mgr.latest() / "trainer_state.json").step == 3


def _fake_checkpoint(folder, step, marker):
    from rlhfctl.ppo.checkpoint import TrainerState

    (folder / "actor").mkdir(parents=True)
    (folder / "actor" / "weights").write_text(marker)
    (folder / "trainer_state.json").write_text(TrainerState(step=step).to_json())


def test_saving_the_same_step_again_never_leaves_it_missing(tmp_path):
    """The resumed-run-whose-reward-fails case: step 2 is saved again over the only good checkpoint. Until the new
    copy is complete, the old one stays in place; a save that dies half-way leaves the old one untouched."""
    from rlhfctl.ppo.checkpoint import CheckpointManager, TrainerState

    mgr = CheckpointManager(str(tmp_path), max_ckpt_num=1)
    tmp = mgr.begin(2)
    (tmp / "actor").mkdir()
    (tmp / "actor" / "weights").write_text("old")
    mgr.finish(tmp, TrainerState(step=2))
    dying = mgr.begin(2)  # the second save of step 2 is under way (or killed): the first is still complete
    (dying / "actor").mkdir()
    assert mgr.latest() == tmp_path / "global_step2"
    assert (mgr.latest() / "actor" / "weights").read_text() == "old"
    assert CheckpointManager(str(tmp_path), max_ckpt_num=1).recover() == []  # the next run settled it already
    assert not dying.exists()
    again = mgr.begin(2)
    (again / "actor").mkdir()
    (again / "actor" / "weights").write_text("new")
    mgr.finish(again, TrainerState(step=2))
    assert [p.name for p in tmp_path.iterdir()] == ["global_step2"]
    assert (tmp_path / "global_step2" / "actor" / "weights").read_text() == "new"


@pytest.mark.parametrize("layout, want", [
    # killed after the new copy was complete but before its rename: it is put in place
    ({".tmp-global_step3-aa": ("complete", "new"), "global_step2": ("complete", "s2")}, {"global_step2": "s2",
                                                                                         "global_step3": "new"}),
    # killed between setting the replaced copy aside and renaming the new one: the newest complete copy wins
    ({".replaced-global_step3-bb": ("complete", "old"), ".tmp-global_step3-aa": ("complete", "new")},
     {"global_step3": "new"}),
    ({".replaced-global_step3-bb": ("complete", "old"), ".tmp-global_step3-aa": ("partial", "new")},
     {"global_step3": "old"}),
    # killed while pruning, or after the replace finished: leftovers go
    ({".pruned-global_step1-cc": ("complete", "s1"), "global_step2": ("complete", "s2"),
      ".replaced-global_step2-dd": ("complete", "older")}, {"global_step2": "s2"}),
])
def test_leftovers_of_a_killed_save_are_settled_by_the_next_run(tmp_path, layout, want):
    from rlhfctl.ppo.checkpoint import CheckpointManager

    for name, (state, marker) in layout.items():
        if state == "complete":
            _fake_checkpoint(tmp_path / name, int(name.split("global_step")[1].split("-")[0]), marker)
        else:
            (tmp_path / name / "actor").mkdir(parents=True)
    mgr = CheckpointManager(str(tmp_path), max_ckpt_num=3)
    assert {p.name: (p / "actor" / "weights").read_text() for p in tmp_path.iterdir()} == want
    assert mgr.latest().name == max(want, key=lambda n: int(n[len("global_step"):]))


# ------------------------------------------------------------------------------------------------ tracking
def test_tracker_writes_jsonl_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from rlhfctl.ppo.tracking import Tracker

    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker(str(tmp_path / "run"), total_steps=2, use_tensorboard=str(tmp_path / "tb"), use_wandb="offline")
    tracker.log(1, {"reward": 0.5, "time/generate": 0.1})
    tracker.log(2, {"reward": float("nan")})
    tracker.close()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "reward": 0.5, "time/generate": 0.1}, {"step": 2, "reward": None}]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_a_new_run_keeps_an_earlier_runs_metrics_apart_and_a_resumed_run_goes_on(tmp_path):
    from rlhfctl.ppo.tracking import Tracker

    def run(steps: range, resume_step: int | None = None) -> None:
        tracker = Tracker(str(tmp_path), total_steps=9, resume_step=resume_step)
        for step in steps:
            tracker.log(step, {"reward": float(step)})
        tracker.close()

    def steps_in(name: str) -> list[int]:
        return [json.loads(x)["step"] for x in (tmp_path / name).read_text().splitlines()]

    run(range(1, 4))  # steps 1-3 logged; say the last checkpoint was of step 2
    run(range(3, 5), resume_step=2)  # --load-checkpoint: step 3 runs again and is logged once
    assert steps_in("metrics.jsonl") == [1, 2, 3, 4]
    run(range(1, 2))  # a new run into the same --save-path
    assert steps_in("metrics.jsonl") == [1] and steps_in("metrics.1.jsonl") == [1, 2, 3, 4]
    run(range(1, 2))
    assert steps_in("metrics.2.jsonl") == [1] and steps_in("metrics.1.jsonl") == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ bad input
def _cli(capsys, *args: str) -> SimpleNamespace:
    """`rlhfctl train-ppo ARGS` in process: the exit code, and what a user sees (stderr's whitespace folded)."""
    code, out, err = run_cli(["train-ppo", *args], capsys)
    return SimpleNamespace(returncode=code, stdout=out, stderr=" ".join(err.split()))


def test_more_prompts_per_step_than_the_dataset_has_exits_2(tiny_policy_dir, prompt_file, tmp_path, capsys):
    result = _cli(capsys, "--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file), "--remote-rm-url",
                  str(tmp_path / "r.py"), "--rollout-batch-size", "64", "--save-path", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "--rollout-batch-size (64) is more than the 6 prompts" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["--pretrain", "/no/such/policy"], "--pretrain /no/such/policy: no such folder"),
    (["--remote-rm-url", "not-a-url"], "neither a reward server URL"),
    (["--actor-num-gpus-per-node", "4", "--rollout-batch-size", "6"], "multiple of the actor's data-parallel size"),
    (["--label-key", "nope"], "no column 'nope' (--label-key)"),
    (["--eval-dataset", "/no/such/heldout.jsonl"], "heldout.jsonl: no such file"),
    (["--eval-dataset", "PROMPTS", "--eval-max-samples", "1", "--actor-num-gpus-per-node", "2"],
     "--eval-dataset has 1 prompt(s), fewer than the 2 actor workers"),
])
def test_bad_inputs_exit_with_a_message_before_any_worker_starts(args, needle, tiny_policy_dir, prompt_file,
                                                                 tmp_path, capsys):
    base = {"--pretrain": str(tiny_policy_dir), "--prompt-data": str(prompt_file),
            "--remote-rm-url": str(tmp_path / "r.py"), "--rollout-batch-size": "2", "--train-batch-size": "4",
            "--micro-train-batch-size": "1", "--save-path": str(tmp_path / "out")}
    base.update({k: str(prompt_file) if v == "PROMPTS" else v for k, v in zip(args[::2], args[1::2])})
    result = _cli(capsys, *[x for kv in base.items() for x in kv])
    assert result.returncode in (1, 2), result.stderr
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_train_batch_must_divide_by_micro_batch_times_workers():
    with pytest.raises(Exception, match="multiple of --micro-train-batch-size"):
        TrainPPOConfig(pretrain="p", prompt_data="d", remote_rm_url="r.py", train_batch_size=12,
                       micro_train_batch_size=4, actor_num_gpus_per_node=2)


# ------------------------------------------------------------------------------------------------ NaN / inf
def test_nonfinite_checks_name_the_field_and_sample_and_ignore_padding():
    from rlhfctl.ppo.nonfinite import check_experience, check_rewards

    assert check_rewards(torch.tensor([0.5, -1.0])) is None
    found = check_rewards(torch.tensor([0.5, float("-inf"), float("nan")]))
    assert found.describe() == "reward of sample 1 is -inf" and not found.from_trained_weights
    exp = _experience(2, 3, 3, 1.0)
    exp.values = torch.zeros(3, 3)
    exp.log_probs[0, -1] = float("nan")  # row 0's last token is padding (action mask 0): not a finding
    assert check_experience(exp) is None
    exp.values[2, 1] = float("inf")
    exp.advantages[1, 0] = float("nan")
    found = check_experience(exp)  # what the models said comes before what the driver derived from it
    assert found.describe() == "critic values of sample 2 is inf" and found.from_trained_weights
    exp.values[2, 1] = 0.0
    assert check_experience(exp).describe() == "advantages of sample 1 is nan"
    # Without --use-kl-loss the reference's log-probs reach the experience only as the KL: named as theirs.
    exp.kl = torch.zeros(3, 3)
    exp.kl[1, 0] = float("nan")
    found = check_experience(exp)
    assert found.describe() == "reference log-probs (through the KL) of sample 1 is nan"
    assert not found.from_trained_weights


def test_our_errors_survive_pickling_with_their_fields():
    """Raised in a Ray worker, an error is pickled to reach the driver: keyword-only fields must survive."""
    import pickle

    from rlhfctl.errors import WorkerError
    from rlhfctl.ppo.nonfinite import NonFiniteUpdate
    from rlhfctl.rewards.contract import RewardFault

    for exc in (ConfigError("--critic-pretrain x: no such folder"), WorkerError("critic worker 0 failed", "tb"),
                NonFiniteUpdate("policy_loss is nan", role="actor", updates_applied=2),
                RewardFault("rewards value is nan", kind="nan", where="f.py", index=3, user_traceback="tb")):
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc) and str(again) == str(exc) and vars(again) == vars(exc)


# ------------------------------------------------------------------------------------------------ 4-bit, offload
@pytest.mark.parametrize("extra, needle", [
    ([], "--load-in-4bit: the reference model would load in 4 bits with bitsandbytes, which rlhfctl runs on a CUDA "
         "GPU only, and this machine has none (the actor and critic would not: training 4-bit weights needs LoRA "
         "adapters (QLoRA: add --lora-rank N))"),
    (["--advantage-estimator", "group_norm", "--n-samples-per-prompt", "2", "--init-kl-coef", "0"],
     "--load-in-4bit: every model of this run is trained (the actor), and training 4-bit weights needs LoRA"),
    # QLoRA: the actor's base would be 4-bit (the reference is that base, so there is no reference worker)
    (["--advantage-estimator", "group_norm", "--n-samples-per-prompt", "2", "--lora-rank", "8"],
     "--load-in-4bit: the actor would load in 4 bits with bitsandbytes, which rlhfctl runs on a CUDA GPU only, and "
     "this machine has none; drop"),
])
def test_load_in_4bit_names_the_roles_and_exits_2_before_ray_starts(extra, needle, tiny_policy_dir, prompt_file,
                                                                    tmp_path, capsys):
    import ray

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    reward = tmp_path / "r.py"
    reward.write_text("def reward_func(queries, prompts, labels):\n    return [0.0] * len(queries)\n")
    result = _cli(capsys, "--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file), "--remote-rm-url",
                  str(reward), "--rollout-batch-size", "2", "--train-batch-size", "4", "--micro-train-batch-size",
                  "1", "--save-path", str(tmp_path / "out"), "--load-in-4bit", *extra)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and result.stderr.count("Error:") == 1
    assert not ray.is_initialized()  # refused before Ray started


def _offload_cfg(policy, **kw):
    return TrainPPOConfig(pretrain=str(policy), prompt_data="p.jsonl", remote_rm_url="r.py",
                          micro_rollout_batch_size=2, n_samples_per_prompt=1, **kw)


def test_ref_reward_offload_moves_the_frozen_models_around_each_call(tiny_policy_dir, tiny_rm_seqcls_dir):
    """On this CPU machine the device is the CPU, so the move is a no-op; what is shown: the onload/offload path
    runs once per call, the weights are on the CPU between calls, and the results are those without offload."""
    from rlhfctl.config.slices import ReferenceGroups, RewardModelGroups
    from rlhfctl.ppo.workers import ReferenceWorker, RewardModelWorker

    ids = torch.randint(5, 200, (3, 10))
    mask = torch.ones_like(ids)
    kept = ReferenceWorker(ReferenceGroups.of(_offload_cfg(tiny_policy_dir)))
    moved = ReferenceWorker(ReferenceGroups.of(_offload_cfg(tiny_policy_dir, ref_reward_offload=True)))
    assert torch.equal(moved.log_probs(ids, mask, 4), kept.log_probs(ids, mask, 4))
    moved.log_probs(ids, mask, 4)
    assert moved.offload_onloads() == 2 and kept.offload_onloads() == 0
    assert all(p.device.type == "cpu" for p in moved.model.parameters())
    rm_cfg = dict(reward_pretrain=str(tiny_rm_seqcls_dir))
    rm_kept = RewardModelWorker(RewardModelGroups.of(_offload_cfg(tiny_policy_dir, **rm_cfg)))
    rm_moved = RewardModelWorker(
        RewardModelGroups.of(_offload_cfg(tiny_policy_dir, ref_reward_offload=True, **rm_cfg)))
    texts = ["What is 2 + 3? 5", "What is 7 * 6? 41"]
    assert rm_moved.score(texts, texts, ["", ""]).rewards == rm_kept.score(texts, texts, ["", ""]).rewards
    assert rm_moved.offload_onloads() == 1


@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip"])
def test_an_update_with_a_nan_loss_is_skipped_or_stops_the_step(skip, tiny_policy_dir):
    """The actor worker (torch engine, no Ray) on 4 rows in 2 updates, one row's advantage NaN: that update is never
    applied; with --skip-nonfinite-batches the other one is, and the metrics count one skip and stay finite."""
    import math

    from rlhfctl.ppo.nonfinite import NonFiniteUpdate
    from rlhfctl.config.slices import PolicyGroups
    from rlhfctl.ppo.workers import PolicyWorker

    cfg = TrainPPOConfig(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", remote_rm_url="r.py", engine="torch",
                         micro_train_batch_size=2, train_batch_size=2, lr_warmup_ratio=0.0,
                         skip_nonfinite_batches=skip)
    worker = PolicyWorker(PolicyGroups.of(cfg), total_updates=4)
    exp = _experience(3, 4, 4, 0.0)
    exp.log_probs = torch.full_like(exp.log_probs, -2.0)
    exp.advantages = torch.ones_like(exp.advantages)
    exp.advantages[1, 0] = float("nan")
    before = {k: v.clone() for k, v in worker.engine.unwrapped.state_dict().items()}
    if not skip:
        with pytest.raises(NonFiniteUpdate, match=r"the actor's policy_loss is nan in its update \d") as caught:
            worker.train(exp, step=0)
        assert caught.value.role == "actor" and caught.value.updates_applied in (0, 1)
        return
    metrics = worker.train(exp, step=0)
    assert metrics["nonfinite_skipped"] == 1.0 and all(math.isfinite(v) for v in metrics.values())
    after = worker.engine.unwrapped.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before) and worker.engine.global_step == 1


def test_an_update_without_the_experience_forward_is_the_same_update(tiny_policy_dir):
    """One update per step (shaping.old_log_probs_in_training): the actor trained on an experience without its
    log-probs (its training forward supplies them) ends with the weights, losses and KL of one trained on the
    experience's forward of the same weights."""
    from rlhfctl.config.slices import PolicyGroups
    from rlhfctl.ppo import functional as F
    from rlhfctl.ppo.workers import PolicyWorker

    cfg = TrainPPOConfig(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", remote_rm_url="r.py", engine="torch",
                         micro_train_batch_size=2, train_batch_size=4, lr_warmup_ratio=0.0, use_kl_loss=True,
                         kl_estimator="k3", actor_learning_rate=1e-3)
    trained = []
    for forward in (True, False):
        worker = PolicyWorker(PolicyGroups.of(cfg), total_updates=2)
        exp = _experience(3, 4, 4, 0.0)
        exp.sequences = exp.sequences % 200 + 5
        computed = worker.log_probs(exp.sequences, exp.attention_mask, exp.num_actions)
        exp.ref_log_probs = computed - 0.05 * torch.arange(4.0).view(4, 1)
        exp.advantages = torch.linspace(-1, 1, 16).view(4, 4)
        exp.kl_loss_coef = 0.1
        exp.log_probs = computed if forward else None
        metrics = worker.train(exp, step=0)
        trained.append((metrics, worker.engine.unwrapped.state_dict()))
        if forward:
            seq_kl = F.masked_mean(F.approx_kl(computed, exp.ref_log_probs, exp.action_mask, "k3"), exp.action_mask, 1)
    (with_forward, weights_a), (without, weights_b) = trained
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=1e-5, atol=1e-7)
    for key in ("policy_loss", "kl_loss", "grad_norm"):
        assert without[key] == pytest.approx(with_forward[key], rel=1e-5, abs=1e-8), key
    assert without["kl"] == pytest.approx(float(seq_kl.mean()), rel=1e-5)  # the step's KL metric, from training
    assert without["ppo_kl"] == 0.0 and "kl" not in with_forward
