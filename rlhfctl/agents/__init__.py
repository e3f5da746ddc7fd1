"""Multi-turn rollouts with OpenRLHF's agent API (--agent-func-path): the contract's base classes.

    from rlhfctl.agents import AgentExecutorBase, AgentInstanceBase, MultiTurnAgentExecutor
"""

from rlhfctl.agents.base import AgentExecutorBase, AgentInstanceBase, MultiTurnAgentExecutor
from rlhfctl.agents.sampling import SamplingParams

__all__ = ["AgentExecutorBase", "AgentInstanceBase", "MultiTurnAgentExecutor", "SamplingParams"]
