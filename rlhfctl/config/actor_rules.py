"""Cross-field checks of how the actor is trained beyond the PPO loss: PPO-ptx (--pretrain-data with --ptx-coef),
LoRA adapters, ring attention and --torch-compile. rules.py adds these to train-ppo's problems and unused options."""

from __future__ import annotations

from rlhfctl.config.fields import flag_name
from rlhfctl.config.train_groups import LoRAArgs, PtxArgs, TrainArgs


def ptx_problems(ptx: PtxArgs) -> list[str]:
    """--ptx-coef weighs the language-model loss on --pretrain-data: the data's options without the data, or the
    data with a weight of 0, would train nothing on it (OpenRLHF's default --ptx_coef alone: ptx_unused warns)."""
    fields = PtxArgs.model_fields
    if ptx.pretrain_data is None:
        return [f"{flag_name(name, fields[name])} has no effect without --pretrain-data" for name in fields
                if getattr(ptx, name) not in (fields[name].default, *((0.0,) if name == "ptx_coef" else ()))]
    if ptx.ptx_coef == 0:
        return ["--pretrain-data with --ptx-coef 0 adds nothing to the actor loss: give --ptx-coef > 0 (OpenRLHF's "
                "default is 0.05)"]
    return []


def ptx_unused(ptx: PtxArgs) -> list[tuple[set[str], str]]:
    if ptx.pretrain_data is not None:
        return []
    return [({"ptx_coef"}, "weighs the language-model loss on --pretrain-data, which is not given: no ptx loss is "
                           "added")]


def lora_problems(lora: LoRAArgs, *, four_bit_zero3: bool, ema: bool) -> list[str]:
    """The adapter's shape and saving options act only with LoRA on (--lora-rank > 0 or --lora-path); a 4-bit base
    (QLoRA) cannot be partitioned by ZeRO-3; --save-merged merges the live adapter, not its moving average."""
    fields = LoRAArgs.model_fields
    if not lora.uses_lora:
        return [f"{flag_name(name, fields[name])} has no effect without LoRA: add --lora-rank N (or --lora-path "
                "ADAPTER)" for name in fields
                if name not in ("lora_rank", "lora_path") and getattr(lora, name) != fields[name].default]
    problems = []
    if four_bit_zero3:
        problems.append("--load-in-4bit with LoRA (QLoRA) and --zero-stage 3: ZeRO-3 partitions every weight, and "
                        "bitsandbytes' packed 4-bit weights cannot be partitioned; use --zero-stage 2 or lower")
    if ema and lora.save_merged:
        problems.append("--enable-ema with --save-merged: the merged weights would come from the live adapter, not "
                        "its moving average; drop --save-merged to save the averaged adapter")
    return problems


def data_parallel_problems(train: TrainArgs, worlds: dict[int, str]) -> list[str]:
    """The trained roles' workers (`worlds`: count -> whose) split each step's batch: in whole micro-batches per
    data-parallel rank, and with --ring-attn-size in whole rings of packed rows."""
    ring, problems = train.ring_attn_size, []
    if ring == 1 and train.ring_head_stride != 1:
        problems.append("--ring-head-stride has no effect without --ring-attn-size > 1")
    if ring > 1 and not train.packing_samples:
        problems.append(f"--ring-attn-size {ring} splits packed rows: add --packing-samples")
    for world, whose in worlds.items():
        if world % ring:
            problems.append(f"--ring-attn-size {ring} does not divide the {world} workers{whose or ' of the actor'}")
            continue
        world //= ring  # a ring's workers share one micro-batch
        step = train.micro_train_batch_size * world
        if train.train_batch_size % step:
            problems.append(f"--train-batch-size ({train.train_batch_size}) must be a multiple of "
                            f"--micro-train-batch-size ({train.micro_train_batch_size}) x data-parallel size{whose} "
                            f"({world}) = {step}")
    return problems


def compile_problems(train: TrainArgs, torch_compile: bool) -> list[str]:
    """--torch-compile compiles the policy's and reference's forward as the model is; these options run it through
    what a compiled graph cannot hold."""
    if not torch_compile:
        return []
    problems = []
    if train.engine == "deepspeed":
        problems.append("--torch-compile runs with --engine torch: DeepSpeed's hooks on the model's layers stop the "
                        "compiled graphs; add --engine torch or leave --torch-compile out")
    if train.ring_attn_size > 1:
        problems.append("--torch-compile with --ring-attn-size: the ring's collectives run inside the forward; leave "
                        "one of them out")
    elif train.packing_samples:
        problems.append("--torch-compile with --packing-samples: packed attention splits the row per sample in "
                        "Python, so each packing layout would compile again; leave one of them out")
    return problems
