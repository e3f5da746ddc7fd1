"""`rlhfctl bench-rm`: throughput and latency of a reward server, or of any reward source."""

from __future__ import annotations

from rlhfctl.config import BenchRMConfig
from rlhfctl.errors import RlhfctlError

HELP = (
    "Measure a reward server's throughput and latency under load: a running --url, or a serve-rm started for the "
    "run from --reward-pretrain/--reward-func, or --in-process with no HTTP."
)
EXAMPLES = [
    "rlhfctl bench-rm --url http://127.0.0.1:5000/get_reward --concurrency 1,8,32 --batch-size 1",
    "rlhfctl bench-rm --reward-pretrain ./rm --concurrency 32 --num-requests 500 --json",
]


def run(cfg: BenchRMConfig) -> int:
    raise RlhfctlError("bench-rm is not built yet (issue 5); its options parse and validate")
