"""Imported once by the forkserver of tests.helpers.forked: what a train-ppo run imports before its first step."""

import importlib
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # what the roles set before DeepSpeed first looks for an accelerator
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODULES = (
    "datasets", "ray", "transformers.models.llama.modeling_llama", "transformers.models.llama.tokenization_llama",
    # DeepSpeed's optimizer check imports its Muon optimizer, which calls torch.compile: 2 s at each engine's start
    "deepspeed", "deepspeed.runtime.zero.muon.muon_optimizer",
    "rich.console", "rlhfctl.cli.app", "rlhfctl.ppo.run", "rlhfctl.ppo.trainer", "rlhfctl.ppo.workers",
)
for _name in MODULES:
    importlib.import_module(_name)
