"""agent_func.py files as OpenRLHF users wrote them at two releases (train-ppo --agent-func-path)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.files import write

# Agent files in the form OpenRLHF's docs and examples give at each release (our own code, OpenRLHF's contract and
# import line): a random 1-3 step environment, as OpenRLHF's examples/python/agent_func.py has.
OPENRLHF_V010 = '''
import random

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor


class AgentInstance(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.step_idx = 0
        self.max_steps = random.randint(1, 3)

    async def reset(self, states: dict, **kwargs):
        return {"observation": states["observation"]}

    async def step(self, states: dict, **kwargs):
        done = self.step_idx >= self.max_steps
        reward = torch.randint(0, 2, (1,)).float() if done else torch.tensor(0)
        self.step_idx += 1
        return {
            "rewards": reward,
            "scores": reward,
            "environment_feedback": "\\nHuman: [CORRECT]\\n" if done else "\\nHuman: [INCORRECT] Try again.\\n",
            "done": done,
            "sampling_params": states.get("sampling_params", None),
            "extra_logs": {"dummy_scores": reward},
        }


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
'''

# v0.8.9: instances were Ray actors with an async __init__; the executor is built with the engine and a queue.
OPENRLHF_V089 = OPENRLHF_V010.replace("def __init__(self, *args", "async def __init__(self, *args") \
    .replace("from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor",
             "from openrlhf.utils.agent import AgentExecutorBase, AgentInstanceBase") \
    .split("class AgentExecutor")[0] + '''class AgentExecutor(AgentExecutorBase):
    def __init__(self, max_steps, max_length, llm_engine, hf_tokenizer, result_queue):
        super().__init__(AgentInstance, max_steps, max_length, llm_engine, hf_tokenizer, result_queue)

    async def execute(self, prompt, label, sampling_params):
        return await super().execute(prompt, label, sampling_params)
'''


def openrlhf_agent(vintage: str, tmp_path: Path, rlhfctl_import: bool = False) -> str:
    """An agent_func.py written for OpenRLHF `vintage`: as written (`from openrlhf.utils.agent import ...`), or with
    that line changed to `from rlhfctl.agents import ...` (`rlhfctl_import`)."""
    text = OPENRLHF_V010 if vintage == "v0.10" else OPENRLHF_V089
    if rlhfctl_import:
        text = text.replace("from openrlhf.utils.agent import", "from rlhfctl.agents import")
    return str(write(tmp_path, text, f"agent_{vintage.replace('.', '_')}.py"))
