"""OpenRLHF launch command lines, transcribed from its examples/scripts/*.sh and README.md at v0.8.9.post1,
v0.10.1.post2 and v0.11.0 (shell arrays expanded), and the option names of its train_ppo_ray and serve_rm parsers
at those releases. Data for tests/unit/test_openrlhf_scripts.py; only flags and values, none of OpenRLHF's code."""

from __future__ import annotations

# (source file@tag, the options rlhfctl refuses, naming the feature (empty: the line must print its config),
#  the command line as the script runs it). The refusals were checked by hand against the table's notes.
SCRIPTS: list[tuple[str, tuple[str, ...], str]] = [
    ('README.md@v0.10.1.post2',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --train_batch_size 128 '
     '--rollout_batch_size 1024 --use_dynamic_batch --n_samples_per_prompt 1 --max_epochs 1 --prompt_max_len 1024 '
     '--max_samples 100000 --generate_max_len 1024 --zero_stage 3 --param_dtype bf16 --actor_learning_rate 5e-7 '
     '--critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key '
     'context_messages --apply_chat_template --normalize_reward --gradient_checkpointing --packing_samples '
     '--vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep --use_wandb '
     '{wandb_token}'),
    ('serve_remote_rm.sh@v0.10.1.post2',
     (),
     'python -m openrlhf.cli.serve_rm --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k --port 5000 --param_dtype bf16 '
     '--attn_implementation flash_attention_2 --normalize_reward --max_len 8192 --batch_size 16'),
    ('train_dapo_ray_hybrid_engine.sh@v0.10.1.post2',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.6 --init_kl_coef 1e-3 --gamma 1.0 --use_kl_loss --kl_estimator k3 '
     '--advantage_estimator group_norm --dynamic_filtering --dynamic_filtering_reward_range 0 1 '
     '--eps_clip_low_high 0.2 0.27 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --remote_rm_url '
     '/openrlhf/examples/python/reward_func.py --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf '
     '--ckpt_path /openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_steps 20 --save_hf_ckpt '
     '--micro_train_batch_size 8 --train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 128 '
     '--n_samples_per_prompt 8 --max_epochs 1 --max_len 2048 --max_samples 20000 --zero_stage 3 --param_dtype bf16 '
     '--actor_learning_rate 5e-7 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages '
     '--apply_chat_template --gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager '
     '--vllm_enable_sleep --deepspeed_enable_sleep --vllm_enable_is_correction'),
    ('train_ppo_ray_hybrid_engine.sh@v0.10.1.post2',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --train_batch_size 128 '
     '--rollout_batch_size 1024 --n_samples_per_prompt 1 --max_epochs 1 --max_len 2048 --max_samples 100000 '
     '--zero_stage 3 --param_dtype bf16 --actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 '
     '--prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template '
     '--normalize_reward --gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager '
     '--vllm_enable_sleep --deepspeed_enable_sleep --use_dynamic_batch --train_max_tokens_per_gpu 16384 '
     ),
    ('train_ppo_with_reward_fn.sh@v0.10.1.post2',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 2 --critic_num_nodes 1 '
     '--critic_num_gpus_per_node 2 --actor_num_nodes 1 --actor_num_gpus_per_node 2 --vllm_num_engines 2 '
     '--vllm_tensor_parallel_size 2 --colocate_actor_ref --pretrain OpenRLHF/Llama-3-8b-sft-mixture '
     '--remote_rm_url /openrlhf/examples/python/reward_func.py --save_path '
     '/openrlhf/examples/checkpoint/llama3-8b-rlhf --micro_train_batch_size 8 --train_batch_size 128 '
     '--micro_rollout_batch_size 16 --rollout_batch_size 1024 --max_samples 100000 --max_epochs 1 --max_len 2048 '
     '--zero_stage 3 --param_dtype bf16 --actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 '
     '--prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template '
     '--normalize_reward --packing_samples --adam_offload --attn_implementation flash_attention_2 '
     '--gradient_checkpointing --use_wandb {wandb_token}'),
    ('train_prorlv2_math_hybrid_engine.sh@v0.10.1.post2',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 8 --vllm_tensor_parallel_size 1 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.75 --init_kl_coef 1e-4 --gamma 1.0 --use_kl_loss --kl_estimator k2 '
     '--advantage_estimator reinforce_baseline --dynamic_filtering --dynamic_filtering_reward_range 0 1 '
     '--eps_clip_low_high 0.2 0.27 --pretrain ${MODEL_PATH} --remote_rm_url ${REWARD_FUNC_PATH} --save_path '
     '${SAVE_PATH} --ckpt_path "${SAVE_PATH}/ckpt" --save_steps 5 --save_hf_ckpt --train_batch_size 1024 '
     '--rollout_batch_size 512 --n_samples_per_prompt 16 --use_dynamic_batch --num_episodes 100 --max_len 9216 '
     '--max_new_tokens 8192 --zero_stage 3 --param_dtype bf16 --actor_learning_rate 1e-6 --prompt_data '
     '${DATASET_PATH} --input_key prompt --label_key label --eval_dataset OpenRLHF/aime-2024 --eval_steps 5 '
     '--eval_temperature 1.0 --eval_n_samples_per_prompt 4 --apply_chat_template --gradient_checkpointing '
     '--packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep '
     '--enable_vllm_is_correction --vllm_is_truncated_threshold 0.5 5.0 --vllm_is_correction_type icepop '
     '--train_max_tokens_per_gpu 32768 --stop_properly_penalty_coef 0.0'),
    ('train_reinforce_baseline_hybrid_engine.sh@v0.10.1.post2',
     (),
     'ray job submit --address="http://127.0.0.1:8265" -- python3 -m openrlhf.cli.train_ppo_ray --pretrain '
     '${MODEL_PATH} --load_checkpoint --save_path ${SAVE_PATH} --ckpt_path "${SAVE_PATH}/ckpt" --save_hf_ckpt '
     '--max_ckpt_num 3 --save_steps 10 --agent_func_path ${AGENT_FUNC_PATH} --prompt_data ${DATASET_PATH} '
     '--input_key prompt --label_key label --max_len 74240 --max_new_tokens 64000 --apply_chat_template '
     '--packing_samples --rollout_batch_size 128 --n_samples_per_prompt 8 --train_batch_size 1024 '
     '--dynamic_filtering --dynamic_filtering_reward_range 0.0 1.0 --use_dynamic_batch --train_max_tokens_per_gpu '
     '16192 --rollout_max_tokens_per_gpu 32768 --micro_train_batch_size 1 --micro_rollout_batch_size 8 '
     '--max_samples 128000 --max_epochs 1 --num_episodes 1 --ref_num_nodes 1 --ref_num_gpus_per_node 4 '
     '--actor_num_nodes 1 --actor_num_gpus_per_node 4 --vllm_num_engines 2 --vllm_tensor_parallel_size 2 '
     '--vllm_gpu_memory_utilization 0.7 --colocate_all_models --deepspeed_enable_sleep --vllm_sync_backend nccl '
     '--enforce_eager --zero_stage 3 --gradient_checkpointing --ring_attn_size 2 --ring_head_stride 2 '
     '--param_dtype bf16 --advantage_estimator reinforce_baseline --actor_learning_rate 5e-7 --entropy_loss_coef '
     '0.0 --init_kl_coef 1e-5 --use_kl_loss --kl_estimator k2 --enable_vllm_is_correction '
     '--vllm_is_correction_type icepop --use_tensorboard ${SAVE_PATH}/runs --logging_steps 1 --eval_steps -1'),
    ('train_reinforce_baseline_ray_agent_async.sh@v0.10.1.post2',
     (),
     'ray job submit --address="http://127.0.0.1:8265" -- python3 -m openrlhf.cli.train_ppo_ray --pretrain '
     '${MODEL_PATH} --load_checkpoint --save_path ${SAVE_PATH} --ckpt_path "${SAVE_PATH}/ckpt" --save_hf_ckpt '
     '--max_ckpt_num 3 --save_steps 10 --agent_func_path ${AGENT_FUNC_PATH} --prompt_data ${DATASET_PATH} '
     '--input_key prompt --label_key label --max_len 74240 --max_new_tokens 64000 --apply_chat_template '
     '--packing_samples --rollout_batch_size 128 --n_samples_per_prompt 8 --train_batch_size 1024 '
     '--dynamic_filtering --dynamic_filtering_reward_range 0.0 1.0 --use_dynamic_batch --train_max_tokens_per_gpu '
     '16192 --rollout_max_tokens_per_gpu 32768 --micro_train_batch_size 1 --micro_rollout_batch_size 8 '
     '--max_samples 128000 --max_epochs 1 --num_episodes 1 --async_train --partial_rollout --ref_num_nodes 1 '
     '--ref_num_gpus_per_node 4 --actor_num_nodes 1 --actor_num_gpus_per_node 4 --vllm_num_engines 2 '
     '--vllm_tensor_parallel_size 2 --vllm_gpu_memory_utilization 0.95 --colocate_all_models '
     '--deepspeed_enable_sleep --vllm_sync_backend nccl --enforce_eager --zero_stage 3 --gradient_checkpointing '
     '--ring_attn_size 2 --ring_head_stride 2 --param_dtype bf16 --advantage_estimator reinforce_baseline '
     '--actor_learning_rate 5e-7 --entropy_loss_coef 0.0 --init_kl_coef 1e-5 --use_kl_loss --kl_estimator k2 '
     '--enable_vllm_is_correction --vllm_is_correction_type icepop --use_tensorboard ${SAVE_PATH}/runs '
     '--logging_steps 1 --eval_steps -1'),
    ('train_vlm_math_hybrid_engine.sh@v0.10.1.post2',
     ('--image_key', '--max_images_per_prompt', '--freeze_visual_encoder'),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 4 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 4 --vllm_num_engines 4 --vllm_tensor_parallel_size 1 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.7 --init_kl_coef 0 --gamma 1.0 --use_kl_loss --kl_estimator k2 '
     '--advantage_estimator reinforce_baseline --pretrain ${MODEL_PATH} --remote_rm_url ${REWARD_FUNC_PATH} '
     '--save_path ${SAVE_PATH} --ckpt_path "${SAVE_PATH}/ckpt" --save_hf_ckpt --save_steps 5 --eval_steps -1 '
     '--micro_train_batch_size 1 --micro_rollout_batch_size 1 --train_batch_size 1024 --rollout_batch_size 128 '
     '--n_samples_per_prompt 8 --num_episodes 100 --max_len 4096 --max_new_tokens 2048 --zero_stage 3 '
     '--param_dtype bf16 --actor_learning_rate 2e-6 --prompt_data ${DATASET_PATH} --input_key prompt --label_key '
     'label --image_key images --max_images_per_prompt 1 --freeze_visual_encoder --apply_chat_template '
     '--gradient_checkpointing --attn_implementation eager --vllm_sync_backend nccl --enforce_eager '
     '--vllm_enable_sleep --deepspeed_enable_sleep'),
    ('README.md@v0.11.0',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 8 --reward.num_nodes 1 '
     '--reward.num_gpus_per_node 8 --critic.num_nodes 1 --critic.num_gpus_per_node 8 --actor.num_nodes 1 '
     '--actor.num_gpus_per_node 8 --vllm.num_engines 4 --vllm.tensor_parallel_size 2 --train.colocate_all '
     '--vllm.gpu_memory_utilization 0.5 --actor.model_name_or_path OpenRLHF/Llama-3-8b-sft-mixture '
     '--reward.model_name_or_path OpenRLHF/Llama-3-8b-rm-700k --ckpt.output_dir '
     '/openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt.path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --ckpt.save_hf --train.batch_size 128 '
     '--rollout.batch_size 1024 --train.dynamic_batch_enable --rollout.n_samples_per_prompt 1 --train.max_epochs 1 '
     '--prompt_max_len 1024 --data.max_samples 100000 --generate_max_len 1024 --ds.zero_stage 3 --ds.param_dtype '
     'bf16 --actor.adam.lr 5e-7 --critic.adam.lr 9e-6 --algo.kl.init_coef 0.01 --data.prompt_dataset '
     'OpenRLHF/prompt-collection-v0.1 --data.input_key context_messages --data.apply_chat_template '
     '--reward.normalize_enable --actor.gradient_checkpointing_enable --ds.packing_samples --vllm.sync_backend '
     'nccl --vllm.enforce_eager --vllm.enable_sleep --ds.enable_sleep --logger.wandb.key {wandb_token}'),
    ('serve_remote_rm.sh@v0.11.0',
     (),
     'python -m openrlhf.cli.serve_rm --reward.model_name_or_path OpenRLHF/Llama-3-8b-rm-700k --port 5000 '
     '--ds.param_dtype bf16 --ds.attn_implementation flash_attention_2 --reward.normalize_enable --data.max_len '
     '8192 --batch_size 16'),
    ('train_dapo_ray_hybrid_engine.sh@v0.11.0',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 8 --actor.num_nodes 1 '
     '--actor.num_gpus_per_node 8 --vllm.num_engines 4 --vllm.tensor_parallel_size 2 --train.colocate_all '
     '--vllm.gpu_memory_utilization 0.6 --algo.kl.init_coef 1e-3 --algo.advantage.gamma 1.0 --algo.kl.use_loss '
     '--algo.kl.estimator k3 --algo.advantage.estimator group_norm --algo.dynamic_filtering_enable '
     '--algo.dynamic_filtering_range 0 1 --actor.eps_clip_low_high 0.2 0.27 --actor.model_name_or_path '
     'OpenRLHF/Llama-3-8b-sft-mixture --reward.remote_url /openrlhf/examples/python/reward_func.py '
     '--ckpt.output_dir /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt.path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --ckpt.save_steps 20 --ckpt.save_hf '
     '--train.micro_batch_size 8 --train.batch_size 128 --rollout.micro_batch_size 16 --rollout.batch_size 128 '
     '--rollout.n_samples_per_prompt 8 --train.max_epochs 1 --data.max_len 2048 --data.max_samples 20000 '
     '--ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 5e-7 --data.prompt_dataset '
     'OpenRLHF/prompt-collection-v0.1 --data.input_key context_messages --data.apply_chat_template '
     '--actor.gradient_checkpointing_enable --ds.packing_samples --vllm.sync_backend nccl --vllm.enforce_eager '
     '--vllm.enable_sleep --ds.enable_sleep --algo.advantage.is_correction_enable'),
    ('train_ppo_ray_hybrid_engine.sh@v0.11.0',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 8 --reward.num_nodes 1 '
     '--reward.num_gpus_per_node 8 --critic.num_nodes 1 --critic.num_gpus_per_node 8 --actor.num_nodes 1 '
     '--actor.num_gpus_per_node 8 --vllm.num_engines 4 --vllm.tensor_parallel_size 2 --train.colocate_all '
     '--vllm.gpu_memory_utilization 0.5 --actor.model_name_or_path OpenRLHF/Llama-3-8b-sft-mixture '
     '--reward.model_name_or_path OpenRLHF/Llama-3-8b-rm-700k --ckpt.output_dir '
     '/openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt.path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --ckpt.save_hf --train.batch_size 128 '
     '--rollout.batch_size 1024 --rollout.n_samples_per_prompt 1 --train.max_epochs 1 --data.max_len 2048 '
     '--data.max_samples 100000 --ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 5e-7 --critic.adam.lr 9e-6 '
     '--algo.kl.init_coef 0.01 --data.prompt_dataset OpenRLHF/prompt-collection-v0.1 --data.input_key '
     'context_messages --data.apply_chat_template --reward.normalize_enable --actor.gradient_checkpointing_enable '
     '--ds.packing_samples --vllm.sync_backend nccl --vllm.enforce_eager --vllm.enable_sleep --ds.enable_sleep '
     '--train.dynamic_batch_enable --train.max_tokens_per_gpu 16384 --algo.advantage.is_correction_enable'),
    ('train_ppo_with_reward_fn.sh@v0.11.0',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 2 --critic.num_nodes 1 '
     '--critic.num_gpus_per_node 2 --actor.num_nodes 1 --actor.num_gpus_per_node 2 --vllm.num_engines 2 '
     '--vllm.tensor_parallel_size 2 --train.colocate_actor_ref --actor.model_name_or_path '
     'OpenRLHF/Llama-3-8b-sft-mixture --reward.remote_url /openrlhf/examples/python/reward_func.py '
     '--ckpt.output_dir /openrlhf/examples/checkpoint/llama3-8b-rlhf --train.micro_batch_size 8 --train.batch_size '
     '128 --rollout.micro_batch_size 16 --rollout.batch_size 1024 --data.max_samples 100000 --train.max_epochs 1 '
     '--data.max_len 2048 --ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 5e-7 --critic.adam.lr 9e-6 '
     '--algo.kl.init_coef 0.01 --data.prompt_dataset OpenRLHF/prompt-collection-v0.1 --data.input_key '
     'context_messages --data.apply_chat_template --reward.normalize_enable --ds.packing_samples --ds.adam_offload '
     '--ds.attn_implementation flash_attention_2 --actor.gradient_checkpointing_enable --logger.wandb.key '
     '{wandb_token}'),
    ('train_prorlv2_math_hybrid_engine.sh@v0.11.0',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 8 --actor.num_nodes 1 '
     '--actor.num_gpus_per_node 8 --vllm.num_engines 8 --vllm.tensor_parallel_size 1 --train.colocate_all '
     '--vllm.gpu_memory_utilization 0.75 --algo.kl.init_coef 1e-4 --algo.advantage.gamma 1.0 --algo.kl.use_loss '
     '--algo.kl.estimator k2 --algo.advantage.estimator reinforce_baseline --algo.dynamic_filtering_enable '
     '--algo.dynamic_filtering_range 0 1 --actor.eps_clip_low_high 0.2 0.27 --actor.model_name_or_path '
     '${MODEL_PATH} --reward.remote_url ${REWARD_FUNC_PATH} --ckpt.output_dir ${SAVE_PATH} --ckpt.path '
     '"${SAVE_PATH}/ckpt" --ckpt.save_steps 5 --ckpt.save_hf --train.batch_size 1024 --rollout.batch_size 512 '
     '--rollout.n_samples_per_prompt 16 --train.dynamic_batch_enable --train.num_episodes 100 --data.max_len 9216 '
     '--rollout.max_new_tokens 8192 --ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 1e-6 '
     '--data.prompt_dataset ${DATASET_PATH} --data.input_key prompt --data.label_key label --eval.dataset '
     'OpenRLHF/aime-2024 --eval.steps 5 --eval.temperature 1.0 --eval.n_samples_per_prompt 4 '
     '--data.apply_chat_template --actor.gradient_checkpointing_enable --ds.packing_samples --vllm.sync_backend '
     'nccl --vllm.enforce_eager --vllm.enable_sleep --ds.enable_sleep --algo.advantage.is_correction_enable '
     '--algo.advantage.is_correction_threshold 0.5 5.0 --algo.advantage.is_correction_type icepop '
     '--train.max_tokens_per_gpu 32768 --reward.stop_properly_penalty_coef 0.0'),
    ('train_reinforce_baseline_hybrid_engine.sh@v0.11.0',
     (),
     'ray job submit --address="http://127.0.0.1:8265" -- python3 -m openrlhf.cli.train_ppo_ray '
     '--actor.model_name_or_path ${MODEL_PATH} --ckpt.load_enable --ckpt.output_dir ${SAVE_PATH} --ckpt.path '
     '"${SAVE_PATH}/ckpt" --ckpt.save_hf --ckpt.max_num 3 --ckpt.save_steps 10 --train.agent_func_path '
     '${AGENT_FUNC_PATH} --data.prompt_dataset ${DATASET_PATH} --data.input_key prompt --data.label_key label '
     '--data.max_len 74240 --rollout.max_new_tokens 64000 --data.apply_chat_template --ds.packing_samples '
     '--rollout.batch_size 128 --rollout.n_samples_per_prompt 8 --train.batch_size 1024 '
     '--algo.dynamic_filtering_enable --algo.dynamic_filtering_range 0.0 1.0 --train.dynamic_batch_enable '
     '--train.max_tokens_per_gpu 16192 --rollout.max_tokens_per_gpu 32768 --train.micro_batch_size 1 '
     '--rollout.micro_batch_size 8 --data.max_samples 128000 --train.max_epochs 1 --train.num_episodes 1 '
     '--ref.num_nodes 1 --ref.num_gpus_per_node 4 --actor.num_nodes 1 --actor.num_gpus_per_node 4 '
     '--vllm.num_engines 2 --vllm.tensor_parallel_size 2 --vllm.gpu_memory_utilization 0.7 --train.colocate_all '
     '--ds.enable_sleep --vllm.sync_backend nccl --vllm.enforce_eager --ds.zero_stage 3 '
     '--actor.gradient_checkpointing_enable --ds.ring_attn_size 2 --ds.ring_attn_head_stride 2 --ds.param_dtype '
     'bf16 --algo.advantage.estimator reinforce_baseline --actor.adam.lr 5e-7 --actor.entropy_coef 0.0 '
     '--algo.kl.init_coef 1e-5 --algo.kl.use_loss --algo.kl.estimator k2 --algo.advantage.is_correction_enable '
     '--algo.advantage.is_correction_type icepop --logger.tensorboard_dir ${SAVE_PATH}/runs --logger.logging_steps '
     '1 --eval.steps -1'),
    ('train_reinforce_baseline_ray_agent_async.sh@v0.11.0',
     (),
     'ray job submit --address="http://127.0.0.1:8265" -- python3 -m openrlhf.cli.train_ppo_ray '
     '--actor.model_name_or_path ${MODEL_PATH} --ckpt.load_enable --ckpt.output_dir ${SAVE_PATH} --ckpt.path '
     '"${SAVE_PATH}/ckpt" --ckpt.save_hf --ckpt.max_num 3 --ckpt.save_steps 10 --train.agent_func_path '
     '${AGENT_FUNC_PATH} --data.prompt_dataset ${DATASET_PATH} --data.input_key prompt --data.label_key label '
     '--data.max_len 74240 --rollout.max_new_tokens 64000 --data.apply_chat_template --ds.packing_samples '
     '--rollout.batch_size 128 --rollout.n_samples_per_prompt 8 --train.batch_size 1024 '
     '--algo.dynamic_filtering_enable --algo.dynamic_filtering_range 0.0 1.0 --train.dynamic_batch_enable '
     '--train.max_tokens_per_gpu 16192 --rollout.max_tokens_per_gpu 32768 --train.micro_batch_size 1 '
     '--rollout.micro_batch_size 8 --data.max_samples 128000 --train.max_epochs 1 --train.num_episodes 1 '
     '--train.async_enable --train.partial_rollout_enable --ref.num_nodes 1 --ref.num_gpus_per_node 4 '
     '--actor.num_nodes 1 --actor.num_gpus_per_node 4 --vllm.num_engines 2 --vllm.tensor_parallel_size 2 '
     '--vllm.gpu_memory_utilization 0.95 --train.colocate_all --ds.enable_sleep --vllm.sync_backend nccl '
     '--vllm.enforce_eager --ds.zero_stage 3 --actor.gradient_checkpointing_enable --ds.ring_attn_size 2 '
     '--ds.ring_attn_head_stride 2 --ds.param_dtype bf16 --algo.advantage.estimator reinforce_baseline '
     '--actor.adam.lr 5e-7 --actor.entropy_coef 0.0 --algo.kl.init_coef 1e-5 --algo.kl.use_loss '
     '--algo.kl.estimator k2 --algo.advantage.is_correction_enable --algo.advantage.is_correction_type icepop '
     '--logger.tensorboard_dir ${SAVE_PATH}/runs --logger.logging_steps 1 --eval.steps -1'),
    ('train_vlm_math_hybrid_engine.sh@v0.11.0',
     ('--data.image_key', '--data.max_images_per_prompt', '--actor.freeze_visual_encoder'),
     'python3 -m openrlhf.cli.train_ppo_ray --ref.num_nodes 1 --ref.num_gpus_per_node 4 --actor.num_nodes 1 '
     '--actor.num_gpus_per_node 4 --vllm.num_engines 4 --vllm.tensor_parallel_size 1 --train.colocate_all '
     '--vllm.gpu_memory_utilization 0.7 --algo.kl.init_coef 0 --algo.advantage.gamma 1.0 --algo.kl.use_loss '
     '--algo.kl.estimator k2 --algo.advantage.estimator reinforce_baseline --actor.model_name_or_path '
     '${MODEL_PATH} --reward.remote_url ${REWARD_FUNC_PATH} --ckpt.output_dir ${SAVE_PATH} --ckpt.path '
     '"${SAVE_PATH}/ckpt" --ckpt.save_hf --ckpt.save_steps 5 --eval.steps -1 --train.micro_batch_size 1 '
     '--rollout.micro_batch_size 1 --train.batch_size 1024 --rollout.batch_size 128 --rollout.n_samples_per_prompt '
     '8 --train.num_episodes 100 --data.max_len 4096 --rollout.max_new_tokens 2048 --ds.zero_stage 3 '
     '--ds.param_dtype bf16 --actor.adam.lr 2e-6 --data.prompt_dataset ${DATASET_PATH} --data.input_key prompt '
     '--data.label_key label --data.image_key images --data.max_images_per_prompt 1 --actor.freeze_visual_encoder '
     '--data.apply_chat_template --actor.gradient_checkpointing_enable --ds.attn_implementation eager '
     '--vllm.sync_backend nccl --vllm.enforce_eager --vllm.enable_sleep --ds.enable_sleep'),
    ('README.md@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 8 '
     '--train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 1024 --n_samples_per_prompt 1 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep '
     '--deepspeed_enable_sleep'),
    ('serve_remote_rm.sh@v0.8.9.post1',
     (),
     'python -m openrlhf.cli.serve_rm --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k --port 5000 --bf16 '
     '--flash_attn --normalize_reward --max_len 8192 --batch_size 16'),
    ('train_dapo_ray_hybrid_engine.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.6 --init_kl_coef 1e-3 --gamma 1.0 --use_kl_loss --kl_estimator k3 '
     '--advantage_estimator group_norm --dynamic_filtering --dynamic_filtering_reward_range 0 1 '
     '--eps_clip_low_high 0.2 0.3 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --remote_rm_url '
     '/openrlhf/examples/python/reward_func.py --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf '
     '--ckpt_path /openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_steps 20 --save_hf_ckpt '
     '--micro_train_batch_size 8 --train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 128 '
     '--n_samples_per_prompt 8 --max_epochs 1 --prompt_max_len 1024 --max_samples 20000 --generate_max_len 1024 '
     '--zero_stage 3 --bf16 --actor_learning_rate 5e-7 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key '
     'context_messages --apply_chat_template --gradient_checkpointing --packing_samples --vllm_sync_backend nccl '
     '--enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep'),
    ('train_grpo_ray_hybrid_engine.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --actor_num_nodes 1 --actor_num_gpus_per_node 8 --vllm_num_engines 4 '
     '--vllm_tensor_parallel_size 2 --colocate_all_models --vllm_gpu_memory_utilization 0.6 --init_kl_coef 1e-3 '
     '--gamma 1.0 --use_kl_loss --kl_estimator k3 --advantage_estimator group_norm --pretrain '
     'OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k --save_path '
     '/openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 8 '
     '--train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 128 --n_samples_per_prompt 8 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --prompt_data OpenRLHF/prompt-collection-v0.1 '
     '--input_key context_messages --apply_chat_template --normalize_reward --gradient_checkpointing '
     '--packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep'),
    ('train_grpo_ray_hybrid_engine_agent.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.6 --init_kl_coef 1e-3 --gamma 1.0 --use_kl_loss --kl_estimator k3 '
     '--advantage_estimator group_norm --pretrain OpenRLHF/Llama-3-8b-sft-mixture --agent_func_path '
     '/openrlhf/examples/python/agent_func.py --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf '
     '--ckpt_path /openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 8 '
     '--train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 128 --n_samples_per_prompt 8 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --prompt_data OpenRLHF/prompt-collection-v0.1 '
     '--input_key context_messages --apply_chat_template --normalize_reward --gradient_checkpointing '
     '--packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep'),
    ('train_ppo_llama_ray.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 2 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 2 --critic_num_nodes 1 --critic_num_gpus_per_node 2 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 2 --vllm_num_engines 2 --vllm_tensor_parallel_size 2 --colocate_critic_reward '
     '--colocate_actor_ref --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-mixture --save_path /openrlhf/examples/checkpoint/llama3-8b-rlhf '
     '--micro_train_batch_size 16 --train_batch_size 128 --micro_rollout_batch_size 32 --rollout_batch_size 1024 '
     '--max_samples 100000 --max_epochs 1 --prompt_max_len 1024 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--packing_samples --adam_offload --flash_attn --gradient_checkpointing --load_checkpoint --use_wandb '
     '{wandb_token}'),
    ('train_ppo_llama_ray_70b.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' --no-wait '
     '-- python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 4 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 4 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --pretrain '
     'meta-llama/Meta-Llama-3-70B-Instruct --reward_pretrain meta-llama/Meta-Llama-3-70B-Instruct --save_path '
     '/openrlhf/examples/checkpoint/llama-3-70b-rlhf --micro_train_batch_size 1 --train_batch_size 128 '
     '--micro_rollout_batch_size 2 --rollout_batch_size 1024 --max_epochs 1 --prompt_max_len 1024 '
     '--generate_max_len 1024 --zero_stage 3 --bf16 --actor_learning_rate 5e-7 --critic_learning_rate 9e-6 '
     '--init_kl_coef 0.01 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages '
     '--apply_chat_template --max_samples 100000 --packing_samples --normalize_reward --adam_offload --flash_attn '
     '--vllm_sync_backend nccl --gradient_checkpointing'),
    ('train_ppo_llama_ray_hybrid_engine.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 4 '
     '--train_batch_size 128 --micro_rollout_batch_size 8 --rollout_batch_size 1024 --n_samples_per_prompt 1 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep '
     '--deepspeed_enable_sleep'),
    ('train_ppo_llama_ray_hybrid_engine_dynamic_batch.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 4 '
     '--train_batch_size 128 --micro_rollout_batch_size 8 --rollout_batch_size 1024 --n_samples_per_prompt 1 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep '
     '--deepspeed_enable_sleep --use_dynamic_batch --train_max_tokens_per_gpu 16384'),
    ('train_ppo_llama_ray_ring.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 2 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 2 --critic_num_nodes 1 --critic_num_gpus_per_node 2 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 2 --vllm_num_engines 2 --vllm_tensor_parallel_size 2 --colocate_critic_reward '
     '--colocate_actor_ref --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-mixture --save_path /openrlhf/examples/checkpoint/llama3-8b-rlhf '
     '--micro_train_batch_size 16 --train_batch_size 128 --micro_rollout_batch_size 32 --rollout_batch_size 1024 '
     '--max_samples 100000 --max_epochs 1 --prompt_max_len 1024 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--packing_samples --adam_offload --flash_attn --gradient_checkpointing --load_checkpoint --ring_attn_size 2 '
     '--ring_head_stride 2 --use_wandb {wandb_token}'),
    ('train_ppo_llama_ray_tensor_parallelism.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --critic_num_nodes 1 --critic_num_gpus_per_node 8 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 8 --vllm_num_engines 4 --vllm_tensor_parallel_size 2 --colocate_all_models '
     '--vllm_gpu_memory_utilization 0.5 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 8 '
     '--train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 1024 --n_samples_per_prompt 1 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 2 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep '
     '--ds_tensor_parallel_size 2 --adam_offload'),
    ('train_ppo_llama_with_remote_rm.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 2 --critic_num_nodes 1 '
     '--critic_num_gpus_per_node 2 --actor_num_nodes 1 --actor_num_gpus_per_node 2 --vllm_num_engines 2 '
     '--vllm_tensor_parallel_size 2 --colocate_actor_ref --pretrain OpenRLHF/Llama-3-8b-sft-mixture '
     '--remote_rm_url http://localhost:5000/get_reward --save_path /openrlhf/examples/checkpoint/llama3-8b-rlhf '
     '--micro_train_batch_size 8 --train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 1024 '
     '--max_samples 100000 --max_epochs 1 --prompt_max_len 1024 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--packing_samples --adam_offload --flash_attn --gradient_checkpointing --use_wandb {wandb_token}'),
    ('train_ppo_llama_with_reward_fn.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 2 --critic_num_nodes 1 '
     '--critic_num_gpus_per_node 2 --actor_num_nodes 1 --actor_num_gpus_per_node 2 --vllm_num_engines 2 '
     '--vllm_tensor_parallel_size 2 --colocate_actor_ref --pretrain OpenRLHF/Llama-3-8b-sft-mixture '
     '--remote_rm_url /openrlhf/examples/python/reward_func.py --save_path '
     '/openrlhf/examples/checkpoint/llama3-8b-rlhf --micro_train_batch_size 8 --train_batch_size 128 '
     '--micro_rollout_batch_size 16 --rollout_batch_size 1024 --max_samples 100000 --max_epochs 1 --prompt_max_len '
     '1024 --generate_max_len 1024 --zero_stage 3 --bf16 --actor_learning_rate 5e-7 --critic_learning_rate 9e-6 '
     '--init_kl_coef 0.01 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages '
     '--apply_chat_template --normalize_reward --packing_samples --adam_offload --flash_attn '
     '--gradient_checkpointing --use_wandb {wandb_token}'),
    ('train_reinforce_baseline_llama_ray_agent_async.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 6 --actor_num_nodes 1 '
     '--actor_num_gpus_per_node 6 --vllm_num_engines 2 --vllm_tensor_parallel_size 1 --colocate_all_models '
     '--pretrain OpenRLHF/Llama-3-8b-sft-mixture --agent_func_path /openrlhf/examples/python/agent_func.py '
     '--save_path /openrlhf/examples/test_scripts/checkpoint/llama3-8b-rlhf --micro_train_batch_size 8 '
     '--train_batch_size 192 --micro_rollout_batch_size 16 --rollout_batch_size 192 --n_samples_per_prompt 8 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 12500 --generate_max_len 1024 --advantage_estimator '
     'reinforce_baseline --zero_stage 3 --bf16 --actor_learning_rate 5e-7 --init_kl_coef 1e-3 --use_kl_loss '
     '--kl_estimator k2 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages '
     '--apply_chat_template --normalize_reward --gradient_checkpointing --packing_samples --save_steps -1 '
     '--async_train --ckpt_path /openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf'),
    ('train_reinforce_baseline_llama_ray_async.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 1 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 1 --actor_num_nodes 1 --actor_num_gpus_per_node 4 --vllm_num_engines 2 '
     '--vllm_tensor_parallel_size 1 --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain '
     'OpenRLHF/Llama-3-8b-rm-700k --save_path /openrlhf/examples/test_scripts/checkpoint/llama3-8b-rlhf '
     '--micro_train_batch_size 8 --train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 128 '
     '--n_samples_per_prompt 8 --max_epochs 1 --prompt_max_len 1024 --max_samples 12500 --generate_max_len 1024 '
     '--advantage_estimator reinforce_baseline --zero_stage 3 --bf16 --actor_learning_rate 5e-7 --init_kl_coef '
     '1e-2 --use_kl_loss --kl_estimator k2 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key '
     'context_messages --apply_chat_template --normalize_reward --gradient_checkpointing --packing_samples '
     '--save_steps -1 --async_train --ckpt_path /openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf'),
    ('train_reinforce_baseline_llama_ray_hybrid_engine.sh@v0.8.9.post1',
     (),
     'ray job submit --address="http://127.0.0.1:8265" --runtime-env-json=\'{"working_dir": "/openrlhf"}\' -- '
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --actor_num_nodes 1 --actor_num_gpus_per_node 8 --vllm_num_engines 4 '
     '--vllm_tensor_parallel_size 2 --colocate_all_models --vllm_gpu_memory_utilization 0.6 --advantage_estimator '
     'reinforce_baseline --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k '
     '--save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 4 '
     '--train_batch_size 128 --micro_rollout_batch_size 8 --rollout_batch_size 128 --n_samples_per_prompt 8 '
     '--init_kl_coef 1e-3 --gamma 1.0 --use_kl_loss --kl_estimator k2 --max_epochs 1 --prompt_max_len 1024 '
     '--max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 --actor_learning_rate 5e-7 '
     '--critic_learning_rate 9e-6 --prompt_data OpenRLHF/prompt-collection-v0.1 --input_key context_messages '
     '--apply_chat_template --normalize_reward --gradient_checkpointing --packing_samples --vllm_sync_backend nccl '
     '--enforce_eager --vllm_enable_sleep --deepspeed_enable_sleep'),
    ('train_reinforce_llama_ray_hybrid_engine.sh@v0.8.9.post1',
     (),
     'python3 -m openrlhf.cli.train_ppo_ray --ref_num_nodes 1 --ref_num_gpus_per_node 8 --reward_num_nodes 1 '
     '--reward_num_gpus_per_node 8 --actor_num_nodes 1 --actor_num_gpus_per_node 8 --vllm_num_engines 4 '
     '--vllm_tensor_parallel_size 2 --colocate_all_models --vllm_gpu_memory_utilization 0.6 --advantage_estimator '
     'reinforce --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain OpenRLHF/Llama-3-8b-rm-700k '
     '--save_path /openrlhf/examples/test_scripts/final/llama3-8b-rlhf --ckpt_path '
     '/openrlhf/examples/test_scripts/ckpt/llama3-8b-rlhf --save_hf_ckpt --micro_train_batch_size 8 '
     '--train_batch_size 128 --micro_rollout_batch_size 16 --rollout_batch_size 1024 --n_samples_per_prompt 1 '
     '--max_epochs 1 --prompt_max_len 1024 --max_samples 100000 --generate_max_len 1024 --zero_stage 3 --bf16 '
     '--actor_learning_rate 5e-7 --critic_learning_rate 9e-6 --init_kl_coef 1e-4 --prompt_data '
     'OpenRLHF/prompt-collection-v0.1 --input_key context_messages --apply_chat_template --normalize_reward '
     '--gradient_checkpointing --packing_samples --vllm_sync_backend nccl --enforce_eager --vllm_enable_sleep '
     '--deepspeed_enable_sleep'),
]

# Every option string of each parser (../shared/reference/openrlhf/*.tsv), by (command, version).
OPTIONS: dict[tuple[str, str], list[str]] = {
    ('train_ppo_ray', 'v0.8.9'): [
        '--ref_num_nodes', '--ref_num_gpus_per_node', '--reward_num_nodes', '--reward_num_gpus_per_node',
        '--colocate_actor_ref', '--actor_num_nodes', '--actor_num_gpus_per_node', '--critic_num_nodes',
        '--critic_num_gpus_per_node', '--colocate_critic_reward', '--colocate_all_models', '--vllm_num_engines',
        '--vllm_tensor_parallel_size', '--vllm_sync_backend', '--vllm_sync_with_ray', '--enable_prefix_caching',
        '--enforce_eager', '--vllm_enable_sleep', '--vllm_gpu_memory_utilization', '--vllm_is_truncated_threshold', '--async_train', '--eval_steps', '--save_steps', '--logging_steps',
        '--ckpt_path', '--save_hf_ckpt', '--disable_ds_ckpt', '--max_ckpt_num', '--max_ckpt_mem', '--load_checkpoint',
        '--use_ds_universal_ckpt', '--local_rank', '--zero_stage', '--gradient_checkpointing', '--deepcompile',
        '--bf16', '--enable_ema', '--ema_beta', '--zpg', '--adam_offload', '--actor_init_on_gpu', '--flash_attn',
        '--use_liger_kernel', '--grad_accum_dtype', '--overlap_comm', '--gradient_checkpointing_use_reentrant',
        '--disable_fast_tokenizer', '--deepspeed_enable_sleep', '--ds_tensor_parallel_size', '--packing_samples',
        '--use_dynamic_batch', '--rollout_max_tokens_per_gpu', '--train_max_tokens_per_gpu', '--load_in_4bit',
        '--lora_rank', '--lora_alpha', '--target_modules', '--lora_dropout', '--save_path', '--num_episodes',
        '--rollout_batch_size', '--vllm_generate_batch_size', '--micro_rollout_batch_size', '--max_epochs',
        '--prompt_max_len', '--generate_max_len', '--max_len', '--max_samples', '--max_norm', '--l2', '--ptx_coef',
        '--eps_clip', '--dual_clip', '--value_clip', '--lambd', '--gamma',
        '--micro_train_batch_size', '--train_batch_size', '--normalize_reward', '--top_p', '--temperature', '--seed',
        '--full_determinism', '--freezing_actor_steps', '--n_samples_per_prompt', '--save_value_network',
        '--actor_learning_rate', '--critic_learning_rate', '--lr_warmup_ratio', '--lr_scheduler', '--kl_target',
        '--kl_horizon', '--init_kl_coef', '--policy_loss_type', '--kl_estimator', '--aux_loss_coef',
        '--entropy_loss_coef', '--adam_betas', '--reward_clip_range', '--advantage_estimator', '--no_advantage_std_norm', '--overlong_buffer_len', '--overlong_penalty_factor', '--ring_attn_size',
        '--ring_head_stride', '--pretrain', '--reward_pretrain', '--remote_rm_url', '--critic_pretrain',
        '--value_head_prefix', '--ref_reward_offload', '--agent_func_path', '--prompt_data', '--prompt_data_probs',
        '--prompt_split', '--eval_dataset', '--eval_split', '--eval_temperature', '--eval_n_samples_per_prompt',
        '--input_key', '--label_key', '--input_template', '--apply_chat_template', '--use_wandb', '--wandb_org',
        '--wandb_group', '--wandb_project', '--wandb_run_name', '--dynamic_filtering_reward_range', '--use_tensorboard', '--perf', '--use_ms',
    ],
    ('train_ppo_ray', 'v0.10.1'): [
        '--ref_num_nodes', '--ref_num_gpus_per_node', '--reward_num_nodes', '--reward_num_gpus_per_node',
        '--colocate_actor_ref', '--actor_num_nodes', '--actor_num_gpus_per_node', '--critic_num_nodes',
        '--critic_num_gpus_per_node', '--colocate_critic_reward', '--colocate_all_models', '--vllm_num_engines',
        '--vllm_tensor_parallel_size', '--vllm_sync_backend', '--vllm_sync_with_ray', '--enable_prefix_caching',
        '--enforce_eager', '--vllm_enable_sleep', '--vllm_gpu_memory_utilization', '--vllm_is_truncated_threshold', '--async_train', '--async_queue_size',
        '--partial_rollout', '--eval_steps', '--save_steps', '--logging_steps', '--ckpt_path', '--save_hf_ckpt',
        '--disable_ds_ckpt', '--max_ckpt_num', '--max_ckpt_mem', '--load_checkpoint', '--best_metric_key',
        '--use_ds_universal_ckpt', '--local_rank', '--zero_stage', '--gradient_checkpointing', '--deepcompile',
        '--param_dtype', '--enable_ema', '--ema_beta', '--zpg', '--adam_offload', '--actor_init_on_gpu',
        '--attn_implementation', '--use_liger_kernel', '--grad_accum_dtype', '--overlap_comm',
        '--gradient_checkpointing_use_reentrant', '--disable_fast_tokenizer', '--dataloader_num_workers',
        '--deepspeed_enable_sleep', '--ds_tensor_parallel_size', '--packing_samples', '--use_dynamic_batch',
        '--rollout_max_tokens_per_gpu', '--train_max_tokens_per_gpu', '--load_in_4bit', '--lora_rank', '--lora_alpha',
        '--target_modules', '--lora_dropout', '--save_path', '--num_episodes', '--rollout_batch_size',
        '--vllm_generate_batch_size', '--micro_rollout_batch_size', '--max_epochs', '--max_len', '--max_new_tokens',
        '--max_samples', '--max_norm', '--l2', '--ptx_coef', '--eps_clip', '--dual_clip',
        '--value_clip', '--lambd', '--gamma', '--micro_train_batch_size', '--train_batch_size', '--normalize_reward',
        '--top_p', '--temperature', '--seed', '--full_determinism', '--freezing_actor_steps',
        '--n_samples_per_prompt', '--save_value_network', '--actor_learning_rate', '--critic_learning_rate',
        '--lr_warmup_ratio', '--lr_scheduler', '--kl_target', '--kl_horizon', '--init_kl_coef', '--policy_loss_type',
        '--kl_estimator', '--aux_loss_coef', '--entropy_loss_coef', '--adam_betas', '--reward_clip_range',
        '--advantage_estimator', '--no_advantage_std_norm', '--overlong_buffer_len',
        '--overlong_penalty_factor', '--ring_attn_size', '--ring_head_stride',
        '--pretrain', '--reward_pretrain', '--remote_rm_url', '--critic_pretrain', '--value_head_prefix',
        '--ref_reward_offload', '--agent_func_path', '--prompt_data', '--prompt_data_probs', '--prompt_split',
        '--eval_dataset', '--eval_split', '--eval_temperature', '--eval_n_samples_per_prompt', '--input_key',
        '--label_key', '--input_template', '--apply_chat_template', '--use_wandb', '--wandb_org', '--wandb_group',
        '--wandb_project', '--wandb_run_name', '--dynamic_filtering_reward_range',
        '--image_key', '--max_images_per_prompt', '--freeze_visual_encoder', '--use_tensorboard', '--perf',
        '--use_ms',
    ],
    ('train_ppo_ray', 'v0.11.0'): [
        '--ref.num_nodes', '--ref.num_gpus_per_node', '--reward.num_nodes', '--reward.num_gpus_per_node',
        '--train.colocate_actor_ref', '--actor.num_nodes', '--actor.num_gpus_per_node', '--critic.num_nodes',
        '--critic.num_gpus_per_node', '--train.colocate_critic_reward', '--train.colocate_all', '--vllm.num_engines',
        '--vllm.tensor_parallel_size', '--vllm.sync_backend', '--vllm.sync_with_ray', '--vllm.enable_prefix_caching',
        '--vllm.enforce_eager', '--vllm.enable_sleep', '--vllm.gpu_memory_utilization',
        '--algo.advantage.is_correction_threshold',
        '--train.async_enable', '--train.async_queue_size',
        '--train.partial_rollout_enable', '--eval.steps', '--ckpt.save_steps', '--logger.logging_steps',
        '--ckpt.path', '--ckpt.save_hf', '--ckpt.disable_ds', '--ckpt.max_num', '--ckpt.max_mem',
        '--ckpt.load_enable', '--ckpt.best_metric_key', '--ds.use_universal_ckpt', '--local_rank', '--ds.zero_stage',
        '--actor.gradient_checkpointing_enable', '--ds.deepcompile', '--ds.param_dtype', '--train.enable_ema',
        '--train.ema_beta', '--ds.zpg', '--ds.adam_offload', '--ds.attn_implementation',
        '--ds.experts_implementation', '--ds.use_liger_kernel', '--ds.grad_accum_dtype', '--ds.overlap_comm',
        '--actor.gradient_checkpointing_reentrant', '--data.disable_fast_tokenizer', '--data.dataloader_num_workers',
        '--ds.enable_sleep', '--ds.tensor_parallel_size', '--ds.packing_samples', '--train.dynamic_batch_enable',
        '--rollout.max_tokens_per_gpu', '--train.max_tokens_per_gpu', '--ds.load_in_4bit', '--ds.lora.rank',
        '--ds.lora.alpha', '--ds.lora.target_modules', '--ds.lora.dropout', '--ckpt.output_dir',
        '--train.num_episodes', '--rollout.batch_size', '--rollout.vllm_generate_batch_size',
        '--rollout.micro_batch_size', '--train.max_epochs', '--data.max_len', '--rollout.max_new_tokens',
        '--data.max_samples', '--actor.eps_clip', '--actor.dual_clip',
        '--critic.value_clip', '--algo.advantage.lambd', '--algo.advantage.gamma', '--train.micro_batch_size',
        '--train.batch_size', '--reward.normalize_enable', '--rollout.top_p', '--rollout.temperature', '--train.seed',
        '--train.full_determinism_enable', '--critic.freezing_steps', '--rollout.n_samples_per_prompt',
        '--critic.save_value_network', '--algo.kl.target', '--algo.kl.horizon', '--algo.kl.init_coef',
        '--actor.policy_loss_type', '--algo.kl.estimator', '--actor.aux_loss_coef', '--actor.entropy_coef',
        '--reward.clip_range', '--actor.optim', '--actor.muon.lr', '--actor.muon.momentum', '--actor.muon.ns_steps',
        '--actor.muon.nesterov', '--actor.muon.no_nesterov', '--actor.adam.lr', '--actor.adam.betas',
        '--actor.adam.eps', '--actor.adam.weight_decay', '--actor.lr_scheduler', '--actor.lr_warmup_ratio',
        '--actor.min_lr_ratio', '--actor.max_norm', '--critic.optim', '--critic.muon.lr', '--critic.muon.momentum',
        '--critic.muon.ns_steps', '--critic.muon.nesterov', '--critic.muon.no_nesterov', '--critic.adam.lr',
        '--critic.adam.betas', '--critic.adam.eps', '--critic.adam.weight_decay', '--critic.lr_scheduler',
        '--critic.lr_warmup_ratio', '--critic.min_lr_ratio', '--critic.max_norm', '--algo.advantage.estimator',
        '--algo.advantage.no_std_norm', '--reward.overlong_buffer_len',
        '--reward.overlong_penalty_factor', '--ds.ring_attn_size',
        '--ds.ring_attn_head_stride', '--actor.model_name_or_path', '--reward.model_name_or_path',
        '--reward.remote_url', '--critic.model_name_or_path', '--ds.value_head_prefix', '--ref.offload',
        '--reward.offload', '--train.agent_func_path', '--data.prompt_dataset', '--data.prompt_probs',
        '--data.prompt_split', '--eval.dataset', '--eval.split', '--eval.temperature', '--eval.n_samples_per_prompt',
        '--data.input_key', '--data.label_key', '--data.input_template', '--data.apply_chat_template',
        '--logger.wandb.key', '--logger.wandb.org', '--logger.wandb.group', '--logger.wandb.project',
        '--logger.wandb.run_name', '--algo.dynamic_filtering_range',
        '--data.image_key', '--data.max_images_per_prompt', '--actor.freeze_visual_encoder',
        '--logger.tensorboard_dir', '--use_ms',
    ],
    ('serve_rm', 'v0.8.9'): [
        '--reward_pretrain', '--normalize_reward', '--value_head_prefix', '--max_len', '--port', '--host',
        '--load_in_4bit', '--bf16', '--flash_attn', '--disable_fast_tokenizer', '--packing_samples', '--batch_size',
        '--use_ms',
    ],
    ('serve_rm', 'v0.10.1'): [
        '--reward_pretrain', '--normalize_reward', '--value_head_prefix', '--max_len', '--port', '--host',
        '--load_in_4bit', '--param_dtype', '--attn_implementation', '--disable_fast_tokenizer', '--packing_samples',
        '--batch_size', '--use_ms',
    ],
    ('serve_rm', 'v0.11.0'): [
        '--reward.model_name_or_path', '--reward.normalize_enable', '--ds.value_head_prefix', '--data.max_len',
        '--port', '--host', '--ds.load_in_4bit', '--ds.param_dtype', '--ds.attn_implementation',
        '--ds.experts_implementation', '--data.disable_fast_tokenizer', '--ds.packing_samples', '--batch_size',
        '--use_ms',
    ],
}
