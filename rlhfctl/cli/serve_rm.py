"""`rlhfctl serve-rm`: serve a reward model, an LLM judge or a reward_func.py over HTTP (OpenRLHF's /get_reward)."""

from __future__ import annotations

from rlhfctl.config import ServeRMConfig

HELP = (
    "Serve a reward model, an LLM judge or a reward_func.py over HTTP: POST /get_reward {\"query\": [...]} -> {\"rewards\": [...]}. "
    "Requests from all clients are batched together by a token budget. Also GET /health, GET /metrics "
    "(Prometheus) and /docs. SIGTERM answers the requests in flight before exiting."
)
EXAMPLES = [
    "rlhfctl serve-rm --reward-pretrain ./rm --bf16 --batch-size 16 --port 5000",
    "rlhfctl serve-rm --reward-pretrain ./rm --backend vllm --vllm-tensor-parallel-size 2",
    "rlhfctl serve-rm --reward-func examples/reward_func.py --host 0.0.0.0 --api-key $TOKEN",
    "rlhfctl serve-rm --judge-model ./judge --judge-template examples/judge/judge_template.jinja "
    "--judge-score-tokens No=0,Yes=1",
    "curl -s localhost:5000/get_reward -H 'Content-Type: application/json' -d '{\"query\": [\"2+2=4\"]}'",
]


def run(cfg: ServeRMConfig) -> int:
    import logging

    from rlhfctl.serving.server import run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(cfg)
    return 0
