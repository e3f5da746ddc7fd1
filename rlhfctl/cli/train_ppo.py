"""`rlhfctl train-ppo`: PPO and the GRPO/RLOO/REINFORCE++ family on Ray, against any reward source."""

from __future__ import annotations

from rlhfctl.config import TrainPPOConfig
from rlhfctl.errors import RlhfctlError

HELP = (
    "Train a policy with PPO (or group estimators: rloo, reinforce_baseline, group_norm) on Ray, with the reward "
    "from reward servers (--remote-rm-url URL[,URL]), a reward_func.py, or a local reward model."
)
EXAMPLES = [
    "rlhfctl train-ppo --pretrain ./policy --remote-rm-url http://127.0.0.1:5000/get_reward "
    "--prompt-data prompts.jsonl --input-key input --label-key answer",
    "rlhfctl train-ppo --config examples/arithmetic/ppo.yaml --remote-rm-url examples/arithmetic/reward_func.py",
]


def run(cfg: TrainPPOConfig) -> int:
    raise RlhfctlError("train-ppo is not built yet (issue 6); its options parse and validate")
