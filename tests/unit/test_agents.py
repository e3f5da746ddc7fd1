"""--agent-func-path without Ray: OpenRLHF's agent contract (both vintages), the action mask over environment
tokens, episodes overlapping in time with their generations batched, --agent-timeout, --max-turns, an environment
that fails or breaks the contract named by episode, bad files as usage errors, and check-reward's agent mode.
Real tiny policy and HF generation; the end-to-end training runs are in test_agents_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch

from rlhfctl.agents.episodes import AgentError, Episode, play_episodes
from rlhfctl.agents.hf_engine import HFEngine
from rlhfctl.agents.loader import load_agent
from rlhfctl.agents.record import EpisodeRecord
from rlhfctl.agents.rollout import agent_rollout, to_samples
from rlhfctl.agents.sampling import SamplingParams
from rlhfctl.config import AgentArgs, RolloutArgs, TrainPPOConfig
from rlhfctl.errors import ConfigError
from rlhfctl.ppo import functional as F
from tests.helpers import ROOT, run_cli, write
from tests.helpers.openrlhf_agents import openrlhf_agent


ENV_HEADER = '''
import asyncio
from rlhfctl.agents import AgentExecutorBase, AgentInstanceBase, MultiTurnAgentExecutor
'''

SLOW_ENV = ENV_HEADER + '''
import time
SPANS = []

class AgentInstance(AgentInstanceBase):
    async def step(self, states, **kwargs):
        start = time.perf_counter()
        await asyncio.sleep(0.3)  # a tool call: other episodes must go on meanwhile
        SPANS.append((start, time.perf_counter()))
        return {"rewards": 1.0, "environment_feedback": " ok", "done": True}

class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
'''

HANGS = ENV_HEADER + '''
class AgentInstance(AgentInstanceBase):
    async def step(self, states, **kwargs):
        await asyncio.Event().wait()  # a tool server that never answers

class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
'''

FAILS_ON_TURN_2 = ENV_HEADER + '''
class AgentInstance(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.turn = 0

    async def step(self, states, **kwargs):
        self.turn += 1
        if self.turn == 2:
            raise RuntimeError("the sandbox crashed")
        return {"rewards": 0.0, "environment_feedback": " again", "done": False}

class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
'''

NO_DONE = ENV_HEADER + '''
class AgentInstance(AgentInstanceBase):
    async def step(self, states, **kwargs):
        return {"rewards": 1.0, "environment_feedback": "fine"}

class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
'''

LOOPS_FOREVER = ENV_HEADER + '''
class AgentExecutor(AgentExecutorBase):
    async def execute(self, prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine, images=None):
        ids = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        while True:  # its own loop, no turn bound of its own
            out = await llm_engine.generate(ids, sampling_params)
'''


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    from rlhfctl.models.actor import load_policy, load_tokenizer

    return load_policy(str(tiny_policy_dir)).eval(), load_tokenizer(str(tiny_policy_dir))


def play(path: str, policy, prompts: list[str], *, timeout: float = 60, max_turns=None, max_tokens: int = 4,
         max_length: int = 48, return_exceptions: bool = False, engine=None):
    model, tokenizer = policy
    engine = engine or HFEngine(model, tokenizer)
    torch.manual_seed(0)
    return asyncio.run(play_episodes(load_agent(path, max_turns), engine, tokenizer, prompts, ["5"] * len(prompts),
                                     SamplingParams(max_tokens=max_tokens, skip_special_tokens=False), max_length,
                                     timeout, return_exceptions=return_exceptions))


# ------------------------------------------------------------------------------------------------ action mask
def test_environment_tokens_are_in_the_sequence_but_never_trained_on():
    """Prompt [5,6,7], policy [8,9], environment [20,21,22], policy [10]: the environment's tokens are attended
    to (attention 1) but have action_mask 0, so the policy loss has no gradient there and GAE steps over them."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({str(i): i for i in range(30)},
                                                                              unk_token="0")), pad_token="0")
    episodes = [Episode(EpisodeRecord(0, "p"), "l", [5, 6, 7, 8, 9, 20, 21, 22, 10], [(3, 5), (8, 9)], 1.0, None, {},
                        False, 0.1),
                Episode(EpisodeRecord(1, "q"), "l", [5, 6, 8], [(2, 3)], 0.0, None, {}, False, 0.1)]
    samples = to_samples(episodes, tok, ["p", "q"])
    assert samples.sequences.tolist() == [[5, 6, 7, 8, 9, 20, 21, 22, 10], [0, 5, 6, 8, 0, 0, 0, 0, 0]]
    assert samples.action_mask.tolist() == [[1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]]
    assert samples.attention_mask.tolist() == [[1] * 9, [0, 1, 1, 1, 0, 0, 0, 0, 0]]
    assert samples.environment.rewards == [1.0, 0.0]
    assert samples.environment.extra_logs["agent/env_tokens"] == [3.0, 0.0]
    assert samples.environment.extra_logs["agent/turns"] == [2.0, 1.0]

    log_probs = torch.zeros(2, 6, requires_grad=True)
    advantages = torch.ones(2, 6)
    loss, _ = F.policy_loss(log_probs, log_probs.detach(), advantages, samples.action_mask, 0.2)
    loss.backward()
    assert (log_probs.grad[samples.action_mask == 0] == 0).all()
    assert (log_probs.grad[samples.action_mask == 1] != 0).all()
    returns = F.discounted_returns(F.kl_penalized_rewards(torch.tensor([1.0, 0.0]), torch.zeros(2, 6),
                                                          samples.action_mask, 0.0), samples.action_mask, 1.0)
    assert returns[0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # the reward reaches the first turn over the reply


# ------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("vintage,rlhfctl_import", [("v0.8.9", False), ("v0.10", False), ("v0.10", True)])
def test_an_agent_func_written_for_openrlhf_runs_as_written(vintage, rlhfctl_import, policy, tmp_path):
    path = openrlhf_agent(vintage, tmp_path, rlhfctl_import)
    assert load_agent(path).vintage == vintage
    model, tokenizer = policy
    cfg = TrainPPOConfig(pretrain="x", prompt_data="x", agent_func_path=path, generate_max_len=4, prompt_max_len=60)
    torch.manual_seed(0)
    samples = agent_rollout(cfg.slice(AgentArgs), cfg.slice(RolloutArgs), model, tokenizer, ["What is 2 + 3?"] * 6,
                            ["5"] * 6, 1.0)
    turns = samples.environment.extra_logs["agent/turns"]
    assert len(samples) == 6 and all(1 <= t <= 4 for t in turns) and max(turns) > 1  # its env runs 1-3 steps
    assert set(samples.environment.rewards) <= {0.0, 1.0}
    for row, t in enumerate(turns):  # every policy turn of 4 tokens at most is in the action mask
        assert 0 < samples.action_mask[row].sum() <= 4 * t
        assert samples.attention_mask[row].sum() > samples.action_mask[row].sum()  # the prompt and replies too


def test_openrlhf_utils_agent_resolves_while_the_file_loads_and_only_then(tmp_path):
    import importlib
    import sys

    from rlhfctl.agents import AgentInstanceBase, MultiTurnAgentExecutor

    agent = load_agent(openrlhf_agent("v0.10", tmp_path))
    assert issubclass(agent.executor_cls, MultiTurnAgentExecutor)
    assert type(agent.executor()).__mro__[1] is MultiTurnAgentExecutor
    assert agent.executor().agent_instance_cls.__mro__[1] is AgentInstanceBase
    assert not any(name == "openrlhf" or name.startswith("openrlhf.") for name in sys.modules)
    for name in ("openrlhf", "openrlhf.utils.agent"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


@pytest.mark.parametrize("line,needle", [
    ("from openrlhf.models import Actor", "line 2: from openrlhf.models import Actor\n  rlhfctl does not ship "
     "OpenRLHF: of it, only `from openrlhf.utils.agent import AgentExecutorBase, AgentInstanceBase, "
     "MultiTurnAgentExecutor` works in an agent file (rlhfctl's own classes); remove this import"),
    ("from openrlhf.utils.agent import AgentInstanceBase, SingleTurnAgentExecutor",
     "line 2: from openrlhf.utils.agent import AgentInstanceBase, SingleTurnAgentExecutor\n  openrlhf.utils.agent "
     "gives rlhfctl's AgentExecutorBase, AgentInstanceBase, MultiTurnAgentExecutor here; SingleTurnAgentExecutor: "
     "not provided by rlhfctl (write your own)"),
])
def test_an_openrlhf_import_rlhfctl_lacks_names_the_line(line, needle, tmp_path):
    path = write(tmp_path, f"import random\n{line}\n", "agent_func.py")
    with pytest.raises(ConfigError) as info:
        load_agent(str(path))
    assert str(info.value) == f"--agent-func-path {path}: {needle}"


@pytest.mark.parametrize("text,needle", [
    (None, "no such file"),
    ("x = 1\n", "defines no class AgentExecutor"),
    ("class AgentExecutor:\n    pass\n", "AgentExecutor must subclass rlhfctl.agents.AgentExecutorBase"),
    ("def broken(:\n", "syntax error on line 1"),
    ("import no_such_module_xyz\n", "No module named 'no_such_module_xyz' (install it"),
])
def test_a_bad_agent_file_is_a_usage_error_naming_it(text, needle, tmp_path):
    path = str(tmp_path / "missing.py") if text is None else str(write(tmp_path, text, "agent_func.py"))
    with pytest.raises(ConfigError) as info:
        load_agent(path)
    assert str(info.value).startswith(f"--agent-func-path {path}: ") and needle in str(info.value)


def test_train_ppo_refuses_a_bad_agent_file_before_ray_starts(tiny_policy_dir, prompt_file, tmp_path, capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", str(tiny_policy_dir), "--prompt-data", str(prompt_file),
                             "--agent-func-path", str(tmp_path / "nope.py"), "--rollout-batch-size", "2",
                             "--train-batch-size", "2", "--micro-train-batch-size", "2",
                             "--save-path", str(tmp_path / "out")], capsys)
    assert code == 2 and f"--agent-func-path {tmp_path / 'nope.py'}: no such file" in err
    assert "Traceback" not in err


def test_an_agent_and_a_second_reward_are_refused(capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d", "--agent-func-path", "a.py",
                             "--remote-rm-url", "http://x/get_reward", "--print-config"], capsys)
    assert code == 2 and "the environment gives the rewards, so --remote-rm-url would not be used" in err
    code, out, _ = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d", "--train.agent_func_path", "a.py",
                             "--max-turns", "3", "--print-config"], capsys)
    assert code == 0 and "agent_func_path: a.py" in out and "max_turns: 3" in out


# ------------------------------------------------------------------------------------------------ running
def test_episodes_overlap_in_time_and_their_turns_share_generate_calls(policy, tmp_path):
    import sys

    path = str(write(tmp_path, SLOW_ENV, "slow_env.py"))
    model, tokenizer = policy
    engine = HFEngine(model, tokenizer)
    episodes = play(path, policy, [f"What is {i} + {i}?" for i in range(8)], engine=engine)
    spans = next(m for n, m in sys.modules.items() if n.startswith("rlhfctl_agent_") and hasattr(m, "SPANS")).SPANS
    assert len(episodes) == 8 and len(spans) == 8
    latest_start, earliest_end = max(s for s, _ in spans), min(e for _, e in spans)
    assert latest_start < earliest_end  # all 8 environments were waiting at the same moment
    assert engine.requests == 8 and engine.batches < 8  # concurrent turns went to the model together
    assert all(e.env_seconds >= 0.3 for e in episodes)
    capped = HFEngine(model, tokenizer, max_batch=3)  # --micro-rollout-batch-size x n bounds one generate call
    play(path, policy, [f"What is {i} + {i}?" for i in range(8)], engine=capped)
    assert capped.requests == 8 and capped.batches >= 3


def test_an_episode_that_stops_waiting_aborts_only_its_own_request(policy):
    """A request whose episode stops waiting (its --agent-timeout) while its batch is under way is handed to the
    engine's abort (vLLM engines abort it inside the engine); one that had not reached a batch is never sent; the
    other requests of the batch are answered."""
    model, tokenizer = policy

    class SlowEngine(HFEngine):
        def __init__(self) -> None:
            super().__init__(model, tokenizer)
            self.sent: list[list[int]] = []  # the keys of each batch
            self.aborted: list[int] = []

        async def _run_batch(self, requests):
            self.sent.append([key for key, _, _ in requests])
            await asyncio.sleep(0.3)
            return await super()._run_batch(requests)

        def _abort(self, key: int) -> None:
            self.aborted.append(key)

    engine = SlowEngine()
    ids = tokenizer("What is 1 + 1?")["input_ids"]

    async def episodes():
        params = SamplingParams(max_tokens=2, temperature=0)
        timed_out = asyncio.ensure_future(engine.generate(ids, params))
        waits = asyncio.ensure_future(engine.generate(ids, params))
        await asyncio.sleep(0.1)  # both are in the batch under way
        timed_out.cancel()
        answer = await waits
        never_sent = asyncio.ensure_future(engine.generate(ids, params))
        await asyncio.sleep(0)
        never_sent.cancel()  # still queued: nothing to abort
        await asyncio.sleep(0.05)
        return answer

    answer = asyncio.run(episodes())
    assert len(engine.sent) == 1 and len(engine.sent[0]) == 2  # one batch: the queued request was never sent
    assert engine.aborted == [engine.sent[0][0]]
    assert len(answer.outputs[0].token_ids) == 2


def test_an_episode_past_agent_timeout_is_named(policy, tmp_path):
    path = str(write(tmp_path, HANGS, "agent_func.py"))
    t0 = time.perf_counter()
    with pytest.raises(AgentError) as info:
        play(path, policy, ["What is 1 + 1?", "What is 2 + 2?"], timeout=1.0)
    assert time.perf_counter() - t0 < 10
    assert "(prompt 'What is 1 + 1?', turn 1, in step) did not finish within --agent-timeout 1 s" in str(info.value)


def test_a_failing_environment_names_episode_prompt_turn_and_line(policy, tmp_path):
    path = str(write(tmp_path, FAILS_ON_TURN_2, "agent_func.py"))
    with pytest.raises(AgentError) as info:
        play(path, policy, ["What is 3 + 4?"])
    assert str(info.value) == "episode 0 (prompt 'What is 3 + 4?', turn 2, in step): RuntimeError: the sandbox crashed"
    assert 'raise RuntimeError("the sandbox crashed")' in info.value.user_traceback


def test_a_step_without_done_breaks_the_contract_by_name(policy, tmp_path):
    with pytest.raises(AgentError) as info:
        play(str(write(tmp_path, NO_DONE, "agent_func.py")), policy, ["hi"])
    assert "turn 1, in step): EnvironmentContractError: step()'s dict lacks 'done' (it has 'rewards', " \
           "'environment_feedback')" in str(info.value)


def test_max_turns_bounds_an_executor_with_its_own_loop(policy, tmp_path):
    with pytest.raises(AgentError) as info:
        play(str(write(tmp_path, LOOPS_FOREVER, "agent_func.py")), policy, ["hi"], max_turns=3)
    assert "TurnLimit: the executor asked for turn 4, past --max-turns 3" in str(info.value)


def test_the_example_environment_pays_less_for_a_second_try():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_agent", ROOT / "examples" / "agent" / "agent_func.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def episode(*answers):
        env = module.AgentInstance()
        await env.reset({"observation": "12+30=", "label": "42"})
        return [await env.step({"action_text": a, "label": "42"}) for a in answers]

    first, = asyncio.run(episode("42</s>"))
    assert (first["rewards"], first["done"]) == (1.0, True)
    wrong, second = asyncio.run(episode("41</s>", "42</s>"))
    assert (wrong["rewards"], wrong["done"], wrong["environment_feedback"]) == (0.0, False, "<|user|>12+30=")
    assert (second["rewards"], second["done"]) == (0.5, True)
    assert [s["rewards"] for s in asyncio.run(episode("41</s>", "40</s>"))] == [0.0, 0.0]


# ------------------------------------------------------------------------------------------------ check-reward
def test_check_reward_plays_scripted_episodes_and_shows_the_transcript(capsys):
    data = ROOT / "examples" / "arithmetic" / "test.jsonl"
    agent = ROOT / "examples" / "agent" / "agent_func.py"
    code, out, _ = run_cli(["check-reward", "--agent-func-path", str(agent), "--prompt-data", str(data),
                             "--label-key", "answer", "--max-samples", "3", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["failed"] == 0 and len(report["episodes"]) == 3
    assert all(e["reward"] == 1.0 and len(e["turns"]) == 1 for e in report["episodes"])
    code, out, _ = run_cli(["check-reward", "--agent-func-path", str(agent), "--prompt-data", str(data),
                             "--label-key", "answer", "--max-samples", "3", "--responses", "shuffled"], capsys)
    assert code == 0 and "environment: '<|user|>" in out and "-> reward 0" in out


def test_check_reward_shows_what_broke(tmp_path, capsys):
    data = ROOT / "examples" / "arithmetic" / "test.jsonl"
    agent = write(tmp_path, FAILS_ON_TURN_2, "agent_func.py")
    code, out, _ = run_cli(["check-reward", "--agent-func-path", str(agent), "--prompt-data", str(data), "--label-key",
                            "answer", "--max-samples", "2"], capsys)
    assert code == 1
    assert "FAILED episode 0 (prompt '88-38=', turn 2, in step): RuntimeError: the sandbox crashed" in out
    assert "0 of 2 episodes ran; 2 failed" in out
    code, _, err = run_cli(["check-reward", "--prompt-data", str(data)], capsys)
    assert code == 2 and "give exactly one of REWARD" in err
    code, _, err = run_cli(["check-reward", "--agent-func-path", "a.py", "--prompt-data", str(data), "--responses",
                             "column:answer"], capsys)
    assert code == 2 and "--responses column:NAME cannot answer an environment turn by turn" in err
