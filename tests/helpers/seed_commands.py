"""The two OpenRLHF command lines of the project's source document, verbatim (the `ray job submit --` prefix and
the `python -m openrlhf.cli.*` launcher removed). Tests parse them as users' launch scripts would run them."""

import shlex

SERVE_RM = r"""
    --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k \
    --normalize_reward \
    --value_head_prefix score \
    --max_len 8192 \
    --port 5000 \
    --host 0.0.0.0 \
    --load_in_4bit \
    --bf16 \
    --flash_attn \
    --disable_fast_tokenizer \
    --batch_size 16
"""

TRAIN_PPO = r"""
   --ref_num_nodes 1 \
   --ref_num_gpus_per_node 2 \
   --critic_num_nodes 1 \
   --critic_num_gpus_per_node 2 \
   --actor_num_nodes 1 \
   --actor_num_gpus_per_node 2 \
   --vllm_num_engines 2 \
   --vllm_tensor_parallel_size 2 \
   --colocate_actor_ref \
   --ref_reward_offload \
   --pretrain OpenRLHF/Llama-3-8b-sft-mixture \
   --critic_pretrain OpenRLHF/Llama-3-8b-rm-700k \
   --remote_rm_url http://localhost:5000/get_reward \
   --save_path /openrlhf/examples/checkpoint/llama3-8b-rlhf \
   --micro_train_batch_size 8 \
   --train_batch_size 128 \
   --micro_rollout_batch_size 16 \
   --rollout_batch_size 1024 \
   --max_samples 100000 \
   --max_epochs 1 \
   --prompt_max_len 1024 \
   --generate_max_len 1024 \
   --packing_samples \
   --zero_stage 3 \
   --bf16 \
   --actor_learning_rate 5e-7 \
   --critic_learning_rate 9e-6 \
   --init_kl_coef 0.01 \
   --prompt_data OpenRLHF/prompt-collection-v0.1 \
   --input_key context_messages \
   --label_key answer \
   --apply_chat_template \
   --normalize_reward \
   --adam_offload \
   --flash_attn \
   --gradient_checkpointing \
   --use_wandb {wandb_token}
"""


def argv(command: str, **swap: str) -> list[str]:
    """The command as argv; `swap` replaces a flag's value (e.g. pretrain=tiny_dir) for runs on this machine."""
    tokens = shlex.split(command.replace("\\\n", " "))
    for i, token in enumerate(tokens[:-1]):
        key = token.lstrip("-").replace("-", "_")
        if token.startswith("--") and key in swap:
            tokens[i + 1] = swap[key]
    return tokens
