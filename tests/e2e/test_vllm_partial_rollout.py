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
from tests.helpers.vllm_engines import engines_beside_actor

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


def test_a_sync_mid_generation_switches_the_policy_from_that_token_on(setup):
    _, rollout, _ = setup
    engine = rollout.engines.workers[0]
    t0 = time.perf_counter()
    [unpaused] = get(call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)]))  # policy A
    seconds = time.perf_counter() - t0
    assert unpaused["finish_reason"] == "length" and unpaused["policy_versions"] == 1

    future = call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)])
    time.sleep(0.3 * seconds)  # well inside the generation
    rollout.sync_weights()  # actor B -> engine, while the request runs
    [paused] = get(future)
    assert paused["policy_versions"] == 2 and len(paused["token_ids"]) == TOKENS

    tokens = paused["token_ids"]
    agree = common_prefix(tokens, unpaused["token_ids"])
    assert 0 < agree < TOKENS, "the sync should land mid-generation and change what follows"
    # The split lies at or just before the first disagreement (B may happen to pick A's token a few times). After
    # it, the tokens are B's greedy continuation of the prefix (the engine now holds B).
    splits = list(range(max(1, agree - 3), agree + 1))
    continuations = get(call(engine, VLLMEngine.generate_requests,
                             [greedy(engine, PROMPT + tokens[:s], TOKENS - s) for s in splits]))
    split = next((s for s, c in zip(splits, continuations) if c["token_ids"] == tokens[s:]), None)
    assert split is not None, "the tokens after the sync are not policy B's continuation"
    # tokens sampled before the sync keep policy A's log-probs (what vLLM reported when it sampled them)
    assert paused["logprobs"][:split] == pytest.approx(unpaused["logprobs"][:split], abs=1e-4)
