"""train-ppo --agent-func-path end to end: the real CLI in a subprocess (its actor in its own process), the tiny policy.
A multi-turn agent_func.py written for OpenRLHF v0.10 (`from openrlhf.utils.agent import ...` as written) trains;
a single-turn executor written to OpenRLHF v0.10's contract trains 2 steps, then its failure stops the run after a
checkpoint, naming the episode."""

from __future__ import annotations

import pytest

from tests.helpers import write
from tests.helpers.openrlhf_agents import openrlhf_agent
from tests.helpers.train_ppo import metrics, train


pytestmark = pytest.mark.slow

SINGLE_TURN = '''
from copy import deepcopy

from rlhfctl.agents import AgentExecutorBase  # OpenRLHF: from openrlhf.utils.agent import AgentExecutorBase

CALLS = 0


class AgentExecutor(AgentExecutorBase):
    """One answer per prompt, rewarded here (OpenRLHF v0.10's SingleTurnAgentExecutor with the reward inside)."""

    async def execute(self, prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine, images=None):
        global CALLS
        CALLS += 1
        if CALLS > 16:  # two steps of 2 prompts x 4 samples, then the grader breaks
            raise ValueError("the grader lost its rubric")
        ids = hf_tokenizer(text=prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][0].tolist()
        output = (await llm_engine.generate(ids, deepcopy(sampling_params))).outputs[0]
        reward = output.text.count("e") / max(1, len(output.text))
        return {"prompt": prompt, "label": label, "observation_tokens": ids + list(output.token_ids),
                "action_ranges": [(len(ids), len(ids) + len(output.token_ids))], "rollout_log_probs": None,
                "truncated": output.finish_reason == "length", "reward": reward, "scores": reward,
                "extra_logs": {"label_length": float(len(label))}}
'''


def _args(policy, prompts, out, agent, *extra):
    return ["--pretrain", str(policy), "--prompt-data", str(prompts), "--input-key", "input", "--label-key",
            "answer", "--agent-func-path", str(agent), "--save-path", str(out), "--ckpt-path", str(out / "ckpt"),
            "--rollout-batch-size", "2", "--n-samples-per-prompt", "4", "--micro-rollout-batch-size", "2",
            "--train-batch-size", "8", "--micro-train-batch-size", "4", "--generate-max-len", "6",
            "--prompt-max-len", "64", "--advantage-estimator", "group_norm", "--init-kl-coef", "0",
            "--engine", "torch", "--placement-timeout", "60", *extra]


def test_an_openrlhf_multi_turn_agent_func_trains(tiny_policy_dir, prompt_file, tmp_path):
    agent = openrlhf_agent("v0.10", tmp_path)
    out = tmp_path / "out"
    result = train(_args(tiny_policy_dir, prompt_file, out, agent, "--max-samples", "4"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(out)
    assert [m["step"] for m in rows] == [1, 2]
    for m in rows:
        assert 1 <= m["agent/turns"] <= 4 and m["reward"] in {0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0}
        assert m["agent/env_tokens"] > 0 and "agent/turn1_reward" in m and "reward/dummy_scores" in m
        assert m["response_length"] < m["agent/env_tokens"] + m["agent/turns"] * 6  # env tokens are not actions
    assert (out / "model.safetensors").is_file()


def test_a_single_turn_executor_trains_then_its_failure_stops_after_a_checkpoint(tiny_policy_dir, prompt_file,
                                                                                 tmp_path):
    agent = write(tmp_path, SINGLE_TURN, "single_turn.py")
    out = tmp_path / "out"
    result = train(_args(tiny_policy_dir, prompt_file, out, agent, "--save-steps", "1"))
    assert result.returncode == 1, result.stderr[-3000:]
    err = " ".join(result.stderr.split())
    assert "step 3: an agent episode failed, so the run stops" in err
    assert "Checkpoint of step 2 saved in" in err
    assert ", turn 1, in execute): ValueError: the grader lost its rubric" in err
    assert 'raise ValueError("the grader lost its rubric")' in err  # the user's own line
    assert "Traceback" not in result.stderr
    rows = metrics(out)
    assert [m["step"] for m in rows] == [1, 2] and all("reward/label_length" in m for m in rows)
    assert (out / "ckpt" / "global_step2" / "trainer_state.json").is_file()
