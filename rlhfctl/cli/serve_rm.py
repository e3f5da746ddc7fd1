"""`rlhfctl serve-rm`: serve a reward model or a reward_func.py over HTTP (OpenRLHF's /get_reward)."""

from __future__ import annotations

from rlhfctl.config import ServeRMConfig
from rlhfctl.errors import RlhfctlError

HELP = (
    "Serve a reward model or a reward_func.py over HTTP: POST /get_reward {\"query\": [...]} -> {\"rewards\": [...]}. "
    "Requests from all clients are batched together by a token budget."
)
EXAMPLES = [
    "rlhfctl serve-rm --reward-pretrain ./rm --bf16 --batch-size 16 --port 5000",
    "rlhfctl serve-rm --reward-func examples/reward_func.py --host 0.0.0.0 --api-key $TOKEN",
]


def run(cfg: ServeRMConfig) -> int:
    raise RlhfctlError("serve-rm is not built yet (issue 3); its options parse and validate")
