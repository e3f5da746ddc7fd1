"""`rlhfctl train-ppo`: PPO and the GRPO/RLOO/REINFORCE++ family on Ray, against any reward source."""

from __future__ import annotations

from rlhfctl.config import TrainPPOConfig

HELP = (
    "Train a policy with PPO (or group estimators: rloo, reinforce_baseline, group_norm) on Ray, with the reward "
    "from reward servers (--remote-rm-url URL[,URL]), a reward_func.py, a local reward model, or an LLM judge "
    "(--judge-model, --judge-url). Metrics go to "
    "--save-path/metrics.jsonl; the trained policy is saved there with save_pretrained."
)
EXAMPLES = [
    "rlhfctl train-ppo --pretrain ./policy --remote-rm-url http://127.0.0.1:5000/get_reward "
    "--prompt-data prompts.jsonl --input-key input --label-key answer",
    "rlhfctl train-ppo --pretrain ./policy --remote-rm-url reward_func.py --prompt-data prompts.jsonl "
    "--advantage-estimator group_norm --n-samples-per-prompt 8 --rollout-batch-size 2 --train-batch-size 16",
    "rlhfctl train-ppo --config examples/arithmetic/ppo.yaml --load-checkpoint",
]


def run(cfg: TrainPPOConfig) -> int:
    from rlhfctl.ppo.run import train_ppo

    train_ppo(cfg)
    return 0
