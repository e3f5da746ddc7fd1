"""What the tests share. Import from here: `from tests.helpers import run_cli, write, ENV`. The heavier helpers
(a Ray cluster, a Hub cache, the chat server, the seed commands, train-ppo runs) are modules of this package."""

from tests.helpers.cli import rlhfctl, run_cli, run_rlhfctl
from tests.helpers.env import ARITHMETIC, ENV, GALLERY, ROOT, TESTS
from tests.helpers.files import PROMPTS, write, write_jsonl
from tests.helpers.serve_rm_process import start_server, stop_server

__all__ = ["ARITHMETIC", "ENV", "GALLERY", "PROMPTS", "ROOT", "TESTS", "rlhfctl", "run_cli", "run_rlhfctl",
           "start_server", "stop_server", "write", "write_jsonl"]
