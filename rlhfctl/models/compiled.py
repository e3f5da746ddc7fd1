"""What --torch-compile compiles: HF generate's decode loop (models/decode.py) and the policy's and reference's
forward, with its backward, wherever train-ppo computes log-probs.

The forward is compiled with dynamic shapes: a batch's sequence length follows its longest response, so a graph per
length would compile again most steps. The wrapper shares the model's parameters, so optimizer updates, LoRA
adapters switched off for the reference, and saving all act on the same weights.
"""

from __future__ import annotations

import shutil
from typing import Any

from rlhfctl.errors import ConfigError
from rlhfctl.models.decode import CompiledSampler, check_compilable

COMPILERS = ("g++", "c++", "clang++")  # what inductor's C++ builder looks for


def sampler_for(model: Any, torch_compile: bool) -> CompiledSampler | None:
    """The compiled sampler, else None (HF `generate` runs as it is)."""
    return CompiledSampler(model) if torch_compile else None


def forward_for(model: Any, torch_compile: bool) -> Any:
    """`model` to call for log-probs: compiled for any batch and length, or the model itself."""
    if not torch_compile:
        return model
    import torch

    return torch.compile(model, dynamic=True)


def check_can_compile(pretrain: str, *, samples_with_hf: bool, has_gpus: bool,
                      trust_remote_code: bool = False) -> None:
    """Before any worker starts: a C++ compiler where the kernels are built for CPUs, and, where HF generate
    samples, a policy the compiled sampler can run (its class, cache layers and generation settings)."""
    if not has_gpus and not any(shutil.which(name) for name in COMPILERS):
        raise ConfigError("--torch-compile builds its CPU kernels with a C++ compiler, and none of "
                          f"{', '.join(COMPILERS)} is on PATH; install one (apt install g++) or leave the option out")
    if not samples_with_hf:
        return
    import transformers
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(pretrain, trust_remote_code=trust_remote_code)
    model_class = next((getattr(transformers, name) for name in config.architectures or []
                        if hasattr(transformers, name)), None)
    if model_class is None:  # custom code: the worker checks the class it loads
        return
    try:
        generation = GenerationConfig.from_pretrained(pretrain)
    except OSError:  # no generation_config.json: HF generate derives one from config.json
        generation = GenerationConfig.from_model_config(config)
    check_compilable(model_class, config, generation.to_dict())
