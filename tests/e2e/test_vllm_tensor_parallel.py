"""A tensor-parallel vLLM engine (--vllm-tensor-parallel-size 2), really sharded: two worker processes of vLLM's
multiprocessing executor (the same engine code runs its Ray executor on GPUs), each holding half of every sharded
weight; it generates what HF generate does, and weight sync reaches both workers (gloo group, then Ray's object
store).

One module-scoped engine (policy A) serves every test; the tests run in file order because weight sync changes
what the engine holds."""

from __future__ import annotations

import pytest
import torch

from rlhfctl.distributed.roles import call, get
from rlhfctl.rollout.engine import VLLMEngine
from tests.helpers.vllm_engines import PROMPTS, engines_beside_actor, engines_follow, hf_greedy, swap_actor

pytestmark = pytest.mark.slow

TP = 2


@pytest.fixture(scope="module")
def policies(tied_policies):
    return tied_policies


@pytest.fixture(scope="module")
def setup(policies, tmp_path_factory, ray_address):
    """One TP=2 engine on policy A and an actor worker holding policy B, on the session's Ray cluster."""
    with engines_beside_actor(policies[0], policies[1], tmp_path_factory.mktemp("tp_data"), ray_address,
                              vllm_num_engines=1, vllm_tensor_parallel_size=TP) as out:
        yield out


def _pid(_worker: object) -> int:
    import os

    return os.getpid()


def test_each_of_the_two_worker_processes_holds_half_of_a_sharded_weight(setup, policies):
    from transformers import AutoConfig

    _, rollout, _ = setup
    engine = rollout.engines.workers[0]
    workers = get(call(engine, VLLMEngine.worker_shards))
    engine_pid = get(engine.apply.remote(_pid))
    assert sorted(w["rank"] for w in workers) == [0, 1]
    assert len({w["pid"] for w in workers} | {engine_pid}) == 3  # two processes, neither the engine actor's
    config = AutoConfig.from_pretrained(policies[0])
    head_dim = config.hidden_size // config.num_attention_heads
    qkv_rows = (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim
    for w in workers:  # column-parallel: half the output rows; row-parallel: half the input columns
        shards = w["linear_shards"]
        assert shards["model.layers.0.self_attn.qkv_proj"] == [qkv_rows // TP, config.hidden_size]
        assert shards["model.layers.0.self_attn.o_proj"] == [config.hidden_size, config.hidden_size // TP]
        assert shards["model.layers.1.mlp.down_proj"] == [config.hidden_size, config.intermediate_size // TP]
    assert "vLLM: 1 engine(s) x tensor-parallel 2 = 2 worker processes" == rollout.describe()


def test_greedy_tokens_of_the_sharded_engine_equal_hf_generate(setup, policies):
    cfg, rollout, _ = setup
    engine = rollout.engines.workers[0]
    got = get(call(engine, VLLMEngine.generate_samples, PROMPTS, ["l"] * len(PROMPTS), 1, 0, True, 0, 0))
    want = hf_greedy(policies[0], PROMPTS, cfg)
    assert torch.equal(got.sequences, want.sequences)
    assert got.responses == want.responses


def test_weight_sync_reaches_both_workers_a_to_b_to_a(setup, policies):
    """Engine built from A, the actor holds B: after a sync over the gloo group the engine's log-probs are B's; an
    actor holding A then syncs through Ray's object store (files on tmpfs that both workers read), and they are A's
    again."""
    from rlhfctl.models.actor import load_policy

    cfg, rollout, plan = setup
    models = {name: load_policy(path) for name, path in zip("ab", policies)}
    assert engines_follow(rollout, models["a"], cfg) == [True]
    rollout.sync_weights()
    assert engines_follow(rollout, models["b"], cfg) == [True]
    assert engines_follow(rollout, models["a"], cfg) == [False]
    swap_actor(rollout, plan, cfg, policies[0], sync_with_ray=True)
    rollout.sync_weights()
    assert engines_follow(rollout, models["a"], cfg) == [True]
