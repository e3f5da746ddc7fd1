"""vLLM rollout engines as train-ppo builds them, for the engine tests: tiny tied-embedding policies, engines placed
on the session's Ray cluster beside an actor worker, HF's greedy output to compare with, and whether an engine's
log-probs are a given policy's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlhfctl.distributed.roles import call, get
from rlhfctl.rollout.engine import VLLMEngine

PROMPTS = ["hello world", "the cat sat on the mat and then", "a", "numbers 1 2 3 4"]


def tied_policy(path: Path, seed: int) -> str:
    """A tiny Llama with tied input/output embeddings (vLLM keeps a head of its own: sync must send it)."""
    from transformers import LlamaForCausalLM

    from rlhfctl.models.tiny import TinyArch

    arch = TinyArch(hidden_size=64, num_layers=2, num_heads=2, seed=seed)
    tokenizer = arch.tokenizer()
    config = arch.llama_config(tokenizer)
    config.tie_word_embeddings = True
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@contextlib.contextmanager
def engines_beside_actor(engine_policy: str, actor_policy: str, data_dir: Path, ray_address: str,
                         **options: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(config, VLLMRollout, the actor's placement plan): engines built from `engine_policy` on the session's
    cluster, weight sync joined with one actor worker holding `actor_policy`, in this process as train-ppo's
    --role-workers driver runs it (a new actor worker then costs a model load, not a process); `options` are
    train-ppo options (vllm_num_engines, ...)."""
    from rlhfctl.config import PlacementArgs, TrainPPOConfig, VLLMArgs
    from rlhfctl.config.slices import PolicyGroups, SamplingGroups
    from rlhfctl.distributed.in_driver import start_role
    from rlhfctl.distributed.placement import place, plan_in_driver, release
    from rlhfctl.ppo.workers import PolicyWorker
    from rlhfctl.rollout.vllm_rollout import VLLMRollout

    data = data_dir / "p.jsonl"
    data.write_text('{"input": "x"}\n')
    cfg = TrainPPOConfig(**{**dict(
        pretrain=engine_policy, prompt_data=str(data), remote_rm_url="http://127.0.0.1:1/get_reward",
        ray_address=ray_address, vllm_num_engines=2, vllm_gpu_memory_utilization=0.005, enforce_eager=True,
        engine="torch", prompt_max_len=16, generate_max_len=8, temperature=0.7, eval_temperature=0, init_kl_coef=0,
        advantage_estimator="group_norm", n_samples_per_prompt=2, rollout_batch_size=2, micro_rollout_batch_size=2,
        train_batch_size=4, micro_train_batch_size=2, role_workers="driver"), **options})
    actor_plan = plan_in_driver(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), ["actor", "vllm"])
    plan = place(cfg.slice(PlacementArgs), cfg.slice(VLLMArgs), ["vllm"])
    rollout = None
    try:
        actor_groups = PolicyGroups.of(cfg.model_copy(update={"pretrain": actor_policy}))
        actor = start_role("actor", actor_plan, PolicyWorker, actor_groups, 1)
        rollout = VLLMRollout(SamplingGroups.of(cfg), cfg.slice(VLLMArgs), plan, actor.wait_ready(), pad_token_id=0,
                              backend="gloo").wait_ready()
        yield cfg, rollout, actor_plan
    finally:
        if rollout is not None:
            rollout.close()
        release(plan)  # and disconnects: place() joined the cluster


def swap_actor(rollout: Any, plan: Any, cfg: Any, policy: str, sync_with_ray: bool) -> Any:
    """Replace the rollout's actor worker by one holding `policy` (in this process, like the one it replaces);
    weight sync then goes through Ray's object store when `sync_with_ray`. Returns the new actor group."""
    from rlhfctl.config import VLLMArgs
    from rlhfctl.config.slices import PolicyGroups
    from rlhfctl.distributed.in_driver import start_role
    from rlhfctl.ppo.workers import PolicyWorker

    rollout.actor.shutdown()
    rollout.actor = start_role("actor", plan, PolicyWorker,
                               PolicyGroups.of(cfg.model_copy(update={"pretrain": policy})), 1).wait_ready()
    rollout.vllm = cfg.slice(VLLMArgs).model_copy(update={"vllm_sync_with_ray": sync_with_ray})
    return rollout.actor


def hf_greedy(path: str, prompts: list[str], cfg: Any) -> Any:
    from rlhfctl.models.actor import generate, load_policy, load_tokenizer

    return generate(load_policy(path), load_tokenizer(path), prompts, max_new_tokens=cfg.generate_max_len,
                    temperature=0, prompt_max_len=cfg.prompt_max_len)


def engines_follow(rollout: Any, model: Any, cfg: Any) -> list[bool]:
    """Per engine: are the log-probs it reports for what it samples `model`'s (as the actor recomputes them)?"""
    from rlhfctl.models.actor import action_log_probs

    out = []
    for engine in rollout.engines.workers:
        s = get(call(engine, VLLMEngine.generate_samples, PROMPTS, ["l"] * len(PROMPTS), 2, 7, False, 0, 0))
        mask = s.action_mask.bool()
        actor = action_log_probs(model, s.sequences, s.attention_mask, mask.shape[1], cfg.temperature)
        out.append(torch.allclose(s.rollout_log_probs[mask], actor[mask], atol=1e-4))
    return out
