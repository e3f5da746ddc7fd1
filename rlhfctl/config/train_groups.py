"""The option groups of train-ppo alone: declarations only. Checks that span fields live in rules.py."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional

from pydantic import BeforeValidator

from rlhfctl.config.fields import FloatPair, Group, join_commas, not_blank, opt, split_commas
from rlhfctl.config.groups import VLLMEngineArgs


class PlacementArgs(Group):
    panel: ClassVar[str] = "Ray placement"
    ray_address: Optional[str] = opt(
        None, "Join this Ray cluster: the head's HOST:PORT (GCS), ray://HOST:PORT or auto (default: RAY_ADDRESS, or "
        "the cluster of the Ray job this runs in; else start a local Ray)."
    )
    actor_num_nodes: int = opt(1, "Nodes for the actor (policy) role.", ge=1)
    actor_num_gpus_per_node: int = opt(1, "GPUs per node for the actor; one data-parallel worker per GPU.", ge=1)
    ref_num_nodes: int = opt(1, "Nodes for the reference model.", ge=1)
    ref_num_gpus_per_node: int = opt(1, "GPUs per node for the reference model.", ge=1)
    critic_num_nodes: int = opt(1, "Nodes for the critic (gae only).", ge=1)
    critic_num_gpus_per_node: int = opt(1, "GPUs per node for the critic.", ge=1)
    reward_num_nodes: int = opt(1, "Nodes for a local reward model (--reward-pretrain).", ge=1)
    reward_num_gpus_per_node: int = opt(1, "GPUs per node for a local reward model.", ge=1)
    vllm_num_engines: Optional[int] = opt(
        None, "vLLM rollout engines, one Ray actor each (unset or 0: Hugging Face generate on the actor workers).", ge=0)
    colocate_actor_ref: bool = opt(False, "Put actor and reference model on the same GPUs.")
    colocate_critic_reward: bool = opt(False, "Put critic and reward model on the same GPUs.")
    colocate_all_models: bool = opt(False, "Put every model on the same GPUs.")
    ref_reward_offload: bool = opt(False, "Keep reference and reward model weights on CPU between uses.")
    placement_timeout: float = opt(
        60.0, "Seconds to wait for the cluster to place the roles before failing with what is missing.", gt=0
    )
    role_workers: Literal["auto", "ray", "driver"] = opt(
        "auto", "Where the roles' workers run: ray (a Ray actor each), driver (in this process: one worker per "
        "role on this machine's CPUs; vLLM engines stay Ray actors), or auto (driver where it can without a "
        "cluster to join, else ray).")

    @property
    def actor_world_size(self) -> int:
        """Data-parallel actor workers: one per requested GPU (a CPU worker each where there are no GPUs)."""
        return self.actor_num_nodes * self.actor_num_gpus_per_node


class VLLMArgs(VLLMEngineArgs):
    panel: ClassVar[str] = "vLLM rollout"
    enable_prefix_caching: bool = opt(False, "vLLM reuses the KV cache of prompt prefixes it has seen.")
    vllm_generate_batch_size: Optional[int] = opt(
        None, "Prompts per vLLM generate call on each engine (default: all of the engine's prompts at once).", ge=1)
    vllm_sync_backend: Optional[Literal["nccl", "gloo"]] = opt(
        None, "Process-group backend that sends the actor's weights to the engines after each update (default: "
        "nccl on GPUs, gloo on CPU; nccl on a cluster without GPUs runs gloo with a warning).")
    vllm_sync_with_ray: bool = opt(False, "Send the weights through Ray's object store instead of a process group.")


class PretrainArgs(Group):
    panel: ClassVar[str] = "Models"
    pretrain: Optional[str] = opt(
        None, "The policy (actor), a local Hugging Face folder or Hub ID (org/name): train-ppo trains it; its "
        "tokenizer formats prompts (--apply-chat-template) in train-ppo and check-reward alike."
    )


class PolicyArgs(Group):
    panel: ClassVar[str] = "Models"
    critic_pretrain: Optional[str] = opt(
        None, "Folder or Hub ID to initialise the critic from (default: --reward-pretrain, else --pretrain)."
    )


class RewardSourceArgs(Group):
    panel: ClassVar[str] = "Reward"
    remote_rm_url: Annotated[Optional[str], BeforeValidator(join_commas),
                             not_blank("reward server URL(s) or a reward_func.py path")] = opt(
        None, "Reward server URL(s), or a reward_func.py path. Several URLs (comma-separated, or the flag repeated) "
        "are replicas of one reward: each chunk goes to the least busy, and one that fails is routed around.",
        join=True,
    )


class AgentArgs(Group):
    panel: ClassVar[str] = "Multi-turn agent"
    agent_func_path: Annotated[Optional[str], not_blank("an agent_func.py path")] = opt(
        None, "An agent_func.py defining AgentExecutor (OpenRLHF's contract): each sample is an episode against "
        "your environment, which gives the reward (instead of --remote-rm-url / --reward-pretrain)."
    )
    max_turns: Optional[int] = opt(
        None, "Most policy turns per episode (default: until the environment says done or the prompt + response "
        "budget is used up).", ge=1
    )
    agent_timeout: float = opt(600.0, "Seconds one episode (its generations and environment calls) may take; past "
                                       "it the run stops after a checkpoint, naming the episode.", gt=0)


class TrainArgs(Group):
    panel: ClassVar[str] = "Training"
    save_path: str = opt("./ckpt", "Where the final policy (and critic) and metrics.jsonl are written.")
    micro_train_batch_size: int = opt(8, "Samples per forward/backward pass on one worker.", ge=1)
    train_batch_size: int = opt(128, "Samples per optimizer step, over all data-parallel workers.", ge=1)
    max_epochs: int = opt(1, "PPO epochs over each rollout batch.", ge=1)
    num_episodes: int = opt(1, "Passes over the prompt dataset.", ge=1)
    engine: Literal["deepspeed", "torch"] = opt("deepspeed", "Training engine for actor and critic.")
    zero_stage: int = opt(2, "DeepSpeed ZeRO stage (0-3).", ge=0, le=3)
    adam_offload: bool = opt(False, "Keep Adam states in CPU memory (DeepSpeed).")
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward to save memory.")
    actor_learning_rate: float = opt(1e-6, "Actor learning rate.", gt=0)
    critic_learning_rate: float = opt(9e-6, "Critic learning rate.", gt=0)
    lr_warmup_ratio: float = opt(0.03, "Fraction of optimizer steps spent warming the learning rate up.", ge=0, lt=1)
    lr_scheduler: Literal["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"] = opt(
        "cosine_with_min_lr", "Learning-rate schedule after the warm-up (cosine_with_min_lr ends at lr / 10; "
        "constant ignores the warm-up), as OpenRLHF's choices from transformers."
    )
    max_norm: float = opt(1.0, "Gradient clipping norm.", gt=0)
    adam_betas: FloatPair = opt((0.9, 0.95), "Adam's beta1,beta2 (actor and critic).")
    weight_decay: float = opt(0.0, "AdamW weight decay on weight matrices (not biases and norms).", ge=0)
    freezing_actor_steps: int = opt(
        -1, "Train only the critic for the first N steps (the actor still samples), to warm the critic up "
        "(-1: never freeze).", ge=-1
    )
    skip_nonfinite_batches: bool = opt(
        False, "Skip a batch whose reward, log-probs, values, loss or gradient norm is NaN or infinite (counted as "
        "nonfinite_skipped in the metrics) instead of stopping the run with a checkpoint of the last good step."
    )
    use_dynamic_batch: bool = opt(
        False, "Form micro-batches by a token budget (--train-max-tokens-per-gpu, --rollout-max-tokens-per-gpu) "
        "instead of a count of samples; an update's loss is the same whatever the grouping."
    )
    train_max_tokens_per_gpu: int = opt(
        16192, "With --use-dynamic-batch: tokens per training micro-batch on one worker (rows x padded width, or "
        "the real tokens with --packing-samples); a longer sample runs alone.", ge=1
    )
    rollout_max_tokens_per_gpu: Optional[int] = opt(
        None, "With --use-dynamic-batch: tokens per log-prob/value forward while making experience (default: "
        "--train-max-tokens-per-gpu).", ge=1
    )
    packing_samples: bool = opt(
        False, "Pack a micro-batch's samples into one row without padding (positions restart per sample, attention "
        "stays within it); flash-attention's varlen kernel with --flash-attn on a GPU."
    )
    ring_attn_size: int = opt(
        1, "Ring attention: split each packed micro-batch's tokens over this many workers of the actor (and "
        "critic), which hold the same data and exchange keys and values at each layer, so a sample too long for "
        "one worker's activations trains (needs --packing-samples; data-parallel size is workers / this).", ge=1
    )
    ring_head_stride: int = opt(
        1, "With --ring-attn-size: key/value heads gathered per exchange (a divisor of the model's key/value "
        "heads); larger means fewer, bigger exchanges and more memory.", ge=1
    )
    async_train: bool = opt(
        False, "Generate and score the next steps' rollouts on the vLLM engines while this step trains (needs "
        "--vllm-num-engines >= 1); a sample's policy then lags by up to --async-queue-size updates "
        "(rollout/policy_version_lag), which --enable-vllm-is-correction corrects for."
    )
    async_queue_size: int = opt(
        1, "Rollout batches generated ahead of training with --async-train: the most updates a sample's policy "
        "may lag behind the one it trains.", ge=1
    )
    partial_rollout: bool = opt(
        False, "With --async-train: a weight sync no longer waits for the generation in flight; the engines pause "
        "it, load the new weights and resume it, so a sample's later tokens come from the newer policy (its earlier "
        "tokens keep the log-probs they were sampled with; rollout/partial_samples counts the split samples)."
    )


class LoRAArgs(Group):
    panel: ClassVar[str] = "LoRA"
    lora_rank: int = opt(
        0, "Train LoRA adapters of this rank on the actor (and the critic) instead of all weights; the reference "
        "is the base with the adapter off, and vLLM gets the merged weights (0: off).", ge=0)
    lora_alpha: int = opt(16, "LoRA scale numerator: the adapter's update is B·A x alpha / rank.", ge=1)
    lora_dropout: float = opt(0.0, "Dropout on the adapter's input while training.", ge=0, lt=1)
    target_modules: Annotated[list[str], BeforeValidator(split_commas)] = opt(
        ["all-linear"], "Modules that get adapters: names or suffixes (q_proj,v_proj), or all-linear (every linear "
        "layer but the output head).")
    lora_path: Annotated[Optional[str], not_blank("a PEFT adapter folder")] = opt(
        None, "Start from this PEFT adapter folder (adapter_config.json + weights) instead of a fresh adapter.")
    save_merged: bool = opt(
        False, "With LoRA: --save-path gets the merged full weights (a plain Hugging Face model) instead of the "
        "adapter in PEFT's format.")

    @property
    def uses_lora(self) -> bool:
        """Adapters are trained: a rank, or an adapter to start from (whose own config then gives the rank)."""
        return self.lora_rank > 0 or self.lora_path is not None

    @property
    def reference_is_base(self) -> bool:
        """The reference is the actor's base with the adapter off, in the actor's workers. Not with --lora-path:
        that policy starts from base + adapter, so a reference worker holds that merged copy."""
        return self.uses_lora and self.lora_path is None


class PPOArgs(Group):
    panel: ClassVar[str] = "PPO"
    advantage_estimator: Literal["gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo"] = opt(
        "gae", "How advantages are estimated; only gae uses a critic (dr_grpo: group mean subtracted, no std)."
    )
    init_kl_coef: float = opt(0.01, "Weight of the KL penalty to the reference model (0 disables the reference).", ge=0)
    kl_target: Optional[float] = opt(None, "Adapt the KL coefficient toward this KL (default: fixed).", gt=0)
    kl_horizon: int = opt(10000, "Horizon of the adaptive KL controller, in samples.", ge=1)
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k1", "KL estimator per token (Schulman's k1, k2, k3).")
    use_kl_loss: bool = opt(
        False, "Put the KL to the reference in the actor's loss (GRPO; weight --init-kl-coef) instead of the reward "
        "(k2 or k3 recommended)."
    )
    entropy_loss_coef: Optional[float] = opt(
        None, "Subtract this times the token-mean entropy from the actor loss (0: only log the entropy)."
    )
    eps_clip: float = opt(0.2, "PPO policy ratio clip range.", gt=0)
    eps_clip_low_high: Optional[FloatPair] = opt(
        None, "Clip the ratio to [1 - LOW, 1 + HIGH] instead of --eps-clip (DAPO's clip-higher: 0.2,0.28)."
    )
    dual_clip: Optional[float] = opt(None, "Dual-clip PPO: bound the objective of negative advantages by C * A.", gt=1)
    policy_loss_type: Literal["ppo", "gspo", "cispo"] = opt(
        "ppo", "ppo: token ratio; gspo: one ratio per sequence (geometric mean); cispo: clipped IS weight times "
        "the log-prob gradient (MiniMax-M1), so clipped tokens keep a gradient."
    )
    loss_agg_mode: Optional[Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]] = opt(
        None, "How the actor loss averages tokens: over all tokens, per sequence then over sequences, or the token "
        "sum / (sequences x --generate-max-len) (Dr.GRPO). Default: token-mean; seq-mean-token-mean for gspo."
    )
    value_clip: float = opt(0.5, "PPO value clip range.", gt=0)
    gamma: float = opt(1.0, "Discount factor.", ge=0, le=1)
    lambd: float = opt(1.0, "GAE lambda.", ge=0, le=1)
    reward_clip_range: FloatPair = opt(
        (-10.0, 10.0), "Clip rewards to LOW,HIGH after the group baseline (as OpenRLHF clips the shaped reward)."
    )
    advantage_whiten: Optional[bool] = opt(
        None, "Normalise advantages over the batch to mean 0, std 1 (default: for gae, reinforce and "
        "reinforce_baseline, not for rloo, group_norm and dr_grpo, as OpenRLHF does)."
    )
    advantage_std_norm: bool = opt(
        True, "Divide whitened advantages by their std (--no-advantage-std-norm only subtracts the mean)."
    )
    dynamic_filtering: bool = opt(
        False, "DAPO's dynamic sampling: drop prompt groups whose mean score is not inside "
        "--dynamic-filtering-reward-range and sample more prompts until the rollout batch is full."
    )
    dynamic_filtering_reward_range: FloatPair = opt(
        (0.0, 1.0), "Keep a group when LOW < mean of its scores < HIGH (scores: the reward's, else its rewards)."
    )
    dynamic_filtering_max_rounds: int = opt(
        8, "Extra sampling rounds per step with --dynamic-filtering; after them the batch is filled up with "
        "dropped groups (counted in dynamic_filtering/padded_groups).", ge=0
    )
    overlong_buffer_len: Optional[float] = opt(
        None, "DAPO's soft overlong penalty: responses longer than --generate-max-len minus this many tokens lose "
        "up to --overlong-penalty-factor, linearly (default: off).", gt=0
    )
    overlong_penalty_factor: float = opt(1.0, "Largest overlong penalty (at --generate-max-len).", ge=0)
    stop_properly_penalty_coef: Optional[float] = opt(
        None, "Responses cut at --generate-max-len: reward times this if in [0, 1], or replaced by it if negative."
    )
    enable_vllm_is_correction: bool = opt(
        False, "Weight the actor loss by pi_old / pi_rollout when rollouts come from another engine (vLLM); with "
        "rollouts from the actor itself every weight is 1."
    )
    vllm_is_truncated_threshold: FloatPair = opt((0.5, 5.0), "LOW,HIGH bounds of the IS weights.")
    vllm_is_correction_type: Literal["tis", "icepop", "seq-mask-tis"] = opt(
        "tis", "tis: clamp weights per token; icepop: zero tokens outside the bounds; seq-mask-tis: zero sequences "
        "whose geometric-mean weight is outside them, clamp the rest."
    )

    @property
    def clip_low_high(self) -> tuple[float, float]:
        """The ratio clip bounds the actor uses: --eps-clip-low-high, else --eps-clip on both sides."""
        return self.eps_clip_low_high or (self.eps_clip, self.eps_clip)


class LoggingArgs(Group):
    panel: ClassVar[str] = "Logging and checkpoints"
    save_steps: int = opt(
        -1, "Save a resumable checkpoint (optimizer state included) in --ckpt-path every N steps and at the end (-1: "
        "none, except on Ctrl-C or a failure).")
    ckpt_path: str = opt("./ckpt/checkpoints_ppo_ray", "Folder of resumable checkpoints.")
    max_ckpt_num: int = opt(3, "Checkpoints kept; older ones are deleted.", ge=1)
    load_checkpoint: bool = opt(False, "Resume from the newest checkpoint in --ckpt-path.")
    logging_steps: int = opt(1, "Log metrics every N steps.", ge=1)
    use_wandb: Optional[str] = opt(
        None, "Log to Weights & Biases: an API key, or 'offline' (WANDB_MODE=offline works too).", secret=True
    )
    use_tensorboard: Optional[str] = opt(None, "Write TensorBoard logs to this folder.")
    profile: bool = opt(
        False, "Log where each step's time goes (profile/* in metrics.jsonl): each role's compute per method and "
        "each phase's overhead (Ray calls, serialization); costs one Ray call per worker around each step.")


class EvalArgs(Group):
    panel: ClassVar[str] = "Evaluation"
    eval_dataset: Annotated[Optional[str], not_blank("a held-out prompt file")] = opt(
        None, "Held-out prompts (formats of --prompt-data, same --input-key/--label-key), sampled and scored with "
        "the run's reward; metrics eval/* in metrics.jsonl."
    )
    eval_steps: int = opt(-1, "Evaluate before the first step, every N steps and after the last (-1: before and "
                               "after only).")
    eval_temperature: float = opt(0.6, "Sampling temperature of evaluation (0: greedy).", ge=0)
    eval_n_samples_per_prompt: int = opt(4, "Responses per evaluation prompt (eval/pass@N is the mean best).", ge=1)
    eval_max_samples: Optional[int] = opt(None, "Use at most this many rows of --eval-dataset.", ge=1)
    eval_split: str = opt("train", "Split of --eval-dataset when it is a DatasetDict folder or hub dataset.")


class EMAArgs(Group):
    panel: ClassVar[str] = "Training"
    enable_ema: bool = opt(
        False, "Keep an exponential moving average of the actor's weights, updated after each optimizer step; the "
        "saved policy is the average (checkpoints hold both), as OpenRLHF's --enable_ema."
    )
    ema_beta: float = opt(0.992, "With --enable-ema: ema = beta * ema + (1 - beta) * weights after each update.",
                          gt=0, lt=1)


class PtxArgs(Group):
    panel: ClassVar[str] = "PPO-ptx"
    pretrain_data: Optional[str] = opt(
        None, "Pretraining text (formats of --prompt-data): each actor micro-batch adds --ptx-coef times the "
        "language-model loss of --micro-train-batch-size of its rows (InstructGPT's PPO-ptx)."
    )
    ptx_coef: float = opt(0.05, "Weight of the --pretrain-data language-model loss in the actor loss.", ge=0)
    pretrain_split: str = opt("train", "Split of --pretrain-data when it is a DatasetDict folder or hub dataset.")
    pretrain_input_key: Optional[str] = opt(
        None, "Column of --pretrain-data holding the text (default: --input-key, as OpenRLHF reads it).")
    pretrain_max_samples: Optional[int] = opt(None, "Use at most this many rows of --pretrain-data.", ge=1)


# ----------------------------------------------------------------------------------------------- check-reward
