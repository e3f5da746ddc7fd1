"""--partial-rollout on one vLLM engine (AsyncLLM host): a weight sync that lands while a long generation is in flight
pauses it, loads the new weights and resumes it. Tokens before the sync are the old policy's (and keep its
log-probs), tokens after it are what the new policy generates after that prefix; and a generation whose caller stops
is aborted inside the engine.

One engine on policy A beside an actor worker holding policy B (tests/helpers/vllm_engines.py); greedy requests,
long enough (hundreds of tokens) that the sync lands mid-generation."""

from __future__ import annotations

import time

import pytest

from rlhfctl.distributed.roles import call, get
from rlhfctl.rollout.engine import GenerationAborted, VLLMEngine
from tests.helpers.vllm_engines import engines_beside_actor, swap_actor

pytestmark = pytest.mark.slow

PROMPT = [5, 17, 42, 99, 7]
TOKENS = 400


@pytest.fixture(scope="module")
def setup(tied_policies, tmp_path_factory, ray_address):
    with engines_beside_actor(tied_policies[0], tied_policies[1], tmp_path_factory.mktemp("partial_data"),
                              ray_address, vllm_num_engines=1, generate_max_len=TOKENS + 16) as out:
        yield out


def greedy(engine, prompt: list[int], tokens: int) -> dict:
    return {"prompt_token_ids": prompt, "max_tokens": tokens, "temperature": 0.0, "logprobs": True}


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_a_generation_in_flight_is_aborted_inside_the_engine(setup):
    _, rollout, _ = setup
    engine = rollout.engines.workers[0]
    future = call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)] * 2)
    time.sleep(0.2)
    assert get(call(engine, VLLMEngine.abort_requests)) == 1
    with pytest.raises(GenerationAborted, match="aborted"):
        get(future)
    # the engine serves the next request at once: nothing of the aborted one is left running
    assert len(get(call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, 4)]))[0]["token_ids"]) == 4


def test_a_sync_mid_generation_switches_the_policy_from_that_token_on(setup, tied_policies):
    cfg, rollout, plan = setup
    policies = tied_policies
    engine = rollout.engines.workers[0]
    t0 = time.perf_counter()
    [unpaused] = get(call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)]))  # policy A
    seconds = time.perf_counter() - t0
    assert unpaused["finish_reason"] == "length" and unpaused["policy_versions"] == 1

    # The sync must reach the engine while the request runs. How long a generation and a sync take varies with the
    # machine's load, so a sync that came too late (the request had finished: one policy version) is tried again,
    # sooner, from policy A again (a new actor worker cannot join the gloo group: later syncs go through Ray's
    # object store, which pauses generation the same way).
    for attempt, fraction in enumerate((0.3, 0.1, 0.03)):
        if attempt:
            swap_actor(rollout, plan, cfg, policies[0], sync_with_ray=True)
            rollout.sync_weights()  # the engine back on A, with nothing in flight
            swap_actor(rollout, plan, cfg, policies[1], sync_with_ray=True)
        future = call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)])
        time.sleep(fraction * seconds)  # inside the generation
        rollout.sync_weights()  # actor B -> engine, while the request runs
        [paused] = get(future)
        if paused["policy_versions"] == 2:
            break
    assert paused["policy_versions"] == 2 and len(paused["token_ids"]) == TOKENS

    # Which policy sampled each token, read from the log-probs the engine reported (a random tiny policy's greedy
    # text may fall into a loop that both policies continue, so the tokens alone may not show the switch).
    tokens, reported = paused["token_ids"], paused["logprobs"]
    by_a, by_b = (policy_log_probs(path, PROMPT, tokens) for path in policies)
    from_a = [abs(x - y) < 1e-3 for x, y in zip(reported, by_a)]
    split = next((i for i, same in enumerate(from_a) if not same), TOKENS)
    assert 0 < split < TOKENS, f"the sync should land mid-generation (first token not A's: {split} of {TOKENS})"
    assert tokens[:split] == unpaused["token_ids"][:split]  # before the sync: policy A's greedy tokens, A's log-probs
    assert reported[:split] == pytest.approx(unpaused["logprobs"][:split], abs=1e-4)
    assert reported[split:] == pytest.approx(by_b[split:], abs=1e-3)  # after it: every token sampled by policy B
    # and B's greedy continuation of that prefix (the engine now holds B)
    [continuation] = get(call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT + tokens[:split],
                                                                             TOKENS - split)]))
    assert continuation["token_ids"] == tokens[split:]


def policy_log_probs(path: str, prompt: list[int], tokens: list[int]) -> list[float]:
    """The log-prob of each of `tokens` after `prompt` under the HF policy at `path` (greedy: temperature 1)."""
    import torch

    from rlhfctl.models.actor import action_log_probs, load_policy

    sequence = torch.tensor([prompt + tokens])
    return action_log_probs(load_policy(path), sequence, torch.ones_like(sequence), len(tokens), 1.0)[0].tolist()
