"""`rlhfctl check-reward`: dry-run a reward function or server against a dataset's labels before training."""

from __future__ import annotations

from rlhfctl.config import CheckRewardConfig

HELP = (
    "Check a reward_func.py (or a reward server URL) against a dataset's labels before training: load, data, "
    "contract and behaviour checks (constant, all zeros, ignores labels, non-deterministic, slow). "
    "Exit 0 when all pass, 1 when one fails (--strict: or warns), 2 for usage errors. With --agent-func-path: play "
    "--max-samples episodes (default 8) against an agent_func.py's environment and print transcripts and rewards."
)
EXAMPLES = [
    "rlhfctl check-reward examples/reward_func.py --prompt-data examples/data.jsonl --label-key answer",
    "rlhfctl check-reward examples/reward_func.py --prompt-data data.jsonl --label-key answer "
    "--responses column:response --strict",
    "rlhfctl check-reward http://127.0.0.1:5000/get_reward --prompt-data data.jsonl --label-key answer --json",
    "rlhfctl check-reward --agent-func-path examples/agent/agent_func.py --prompt-data "
    "examples/arithmetic/test.jsonl --label-key answer --pretrain examples/arithmetic/policy",
    "rlhfctl check-reward judge --judge-model ./judge --prompt-data data.jsonl --label-key answer",
]


def run(cfg: CheckRewardConfig) -> int:
    if cfg.agent_func_path is not None:  # play episodes against the environment instead
        from rlhfctl.agents.check import check_agent

        return check_agent(cfg)
    from rlhfctl.checks import run_checks
    from rlhfctl.checks.render import print_json, print_report, progress_bar

    with progress_bar() as progress:
        report = run_checks(cfg, progress)
    if cfg.json_output:
        print_json(report)
    else:
        print_report(report)
    return report.exit_code
