"""`rlhfctl check-reward`: dry-run a reward function or server against a dataset's labels before training."""

from __future__ import annotations

from rlhfctl.config import CheckRewardConfig
from rlhfctl.errors import RlhfctlError

HELP = (
    "Check a reward_func.py (or a reward server URL) against a dataset's labels before training: load, contract "
    "and behaviour checks. Exit 0 when all pass, 1 when one fails, 2 for usage errors."
)
EXAMPLES = [
    "rlhfctl check-reward examples/reward_func.py --prompt-data examples/data.jsonl --label-key answer",
    "rlhfctl check-reward http://127.0.0.1:5000/get_reward --prompt-data data.jsonl --label-key answer --json",
]


def run(cfg: CheckRewardConfig) -> int:
    raise RlhfctlError("check-reward is not built yet (issue 4); its options parse and validate")
