"""One role's model (and training engine) in one process: plain classes, hosted by Ray actors (distributed/roles.py).

PolicyWorker samples responses and takes clipped-policy-loss steps; ReferenceWorker gives the frozen reference
log-probs for the KL term; CriticWorker gives values and takes clipped-value-loss steps; RewardModelWorker scores
queries with a local reward model. Each is built from the typed groups it reads (config/slices.py: pickled to
every worker, so nothing else of the run's options travels) and reads its rank from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch
from torch import Tensor

from rlhfctl.ppo.experience import Experience
from rlhfctl.ppo.micro_batching import LossWeights, MicroBatch
from rlhfctl.rollout.samples import Samples, step_seed
from rlhfctl.rollout.weight_sync import WeightSender
from rlhfctl.shards import chunks

if TYPE_CHECKING:
    from rlhfctl.config import ModelLoadArgs, RolloutArgs, RunArgs, TrainArgs
    from rlhfctl.models.ring_attention import RingGroup
    from rlhfctl.config.slices import CriticGroups, PolicyGroups, ReferenceGroups, RewardModelGroups


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _mean_metrics(records: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in records for k in r}
    out = {}
    for key in keys:
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rollout_forward(train: TrainArgs, rollout: RolloutArgs, forward: Any, sequences: Tensor, attention_mask: Tensor,
                     num_actions: int, ring: RingGroup | None) -> Tensor:
    """A log-prob or value forward over a rollout batch: --micro-rollout-batch-size x --n-samples-per-prompt rows
    at a time, or within --rollout-max-tokens-per-gpu tokens with --use-dynamic-batch."""
    from rlhfctl.ppo.micro_batching import forward_in_groups, rollout_groups

    budget = (train.rollout_max_tokens_per_gpu or train.train_max_tokens_per_gpu) * _ring_size(ring) \
        if train.use_dynamic_batch else None
    rows = rollout.micro_rollout_batch_size * rollout.n_samples_per_prompt
    groups = rollout_groups(attention_mask, num_actions, rows, budget, train.packing_samples)
    return forward_in_groups(forward, sequences, attention_mask, num_actions, groups, trim=budget is not None)


def _build_engine(model: torch.nn.Module, train: TrainArgs, load: ModelLoadArgs, learning_rate: float,
                  total_updates: int) -> Any:
    from rlhfctl.distributed.engine_factory import build_engine

    return build_engine(
        model, kind=train.engine, learning_rate=learning_rate, total_steps=total_updates,
        warmup_ratio=train.lr_warmup_ratio, lr_scheduler=train.lr_scheduler, max_norm=train.max_norm,
        zero_stage=train.zero_stage,
        adam_offload=train.adam_offload, bf16=load.bf16, gradient_checkpointing=train.gradient_checkpointing,
        micro_train_batch_size=train.micro_train_batch_size, train_batch_size=train.train_batch_size,
        weight_decay=train.weight_decay, betas=tuple(train.adam_betas), ring_attn_size=train.ring_attn_size,
    )


def _ring_size(ring: RingGroup | None) -> int:
    """Workers a packed row is split over: a token budget per worker covers this many times the row's tokens."""
    return ring.size if ring is not None else 1


def _ring(train: TrainArgs) -> RingGroup | None:
    """This worker's ring (--ring-attn-size > 1, where the role's workers make whole rings), made once the engine
    has set up torch.distributed (the reference, which has no engine, sets it up here)."""
    from rlhfctl.models.ring_attention import role_ring

    if role_ring(train.ring_attn_size, rank_and_world()[1]) == 1:
        return None
    from rlhfctl.distributed.process_group import default_backend, init_distributed
    from rlhfctl.models.ring_attention import make_ring_group

    init_distributed(default_backend())
    return make_ring_group(train.ring_attn_size, train.ring_head_stride)


class _TrainedWorker:
    """What the actor and critic share: an engine, PPO epochs over micro-batches, checkpoints. The workers of a
    ring (--ring-attn-size) hold the same rows: one data-parallel rank, its tokens split between them."""

    engine: Any
    train_args: TrainArgs
    rollout_args: RolloutArgs
    run: RunArgs
    rank: int
    world_size: int
    ring: RingGroup | None = None

    @property
    def data_parallel_rank(self) -> int:
        return self.rank // self.train_args.ring_attn_size

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.train_args.ring_attn_size
    role: str = "model"
    loss_name: str = "loss"

    def _loss(self, mb: Experience, weights: LossWeights) -> tuple[Tensor, dict[str, float]]:
        """The micro-batch's loss to backpropagate, its terms multiplied by `weights`, and its statistics."""
        raise NotImplementedError

    def _micro_batches(self, experience: Experience, generator: torch.Generator) -> list[MicroBatch]:
        """One epoch's micro-batches: --micro-train-batch-size rows each, or within --train-max-tokens-per-gpu
        tokens (--use-dynamic-batch), weighted so an update's loss does not depend on the grouping."""
        from rlhfctl.ppo.micro_batching import dynamic_micro_batches

        train = self.train_args
        if not train.use_dynamic_batch:
            return [MicroBatch(mb, LossWeights(), None)
                    for mb in experience.micro_batches(train.micro_train_batch_size, generator)]
        return dynamic_micro_batches(
            experience, train.train_batch_size // self.data_parallel_size,
            train.train_max_tokens_per_gpu * _ring_size(self.ring),
            train.packing_samples, self.engine.gradient_accumulation_steps, generator, self.engine.device)

    def train(self, experience: Experience, step: int) -> dict[str, float]:
        """--max-epochs passes over this worker's share, in shuffled micro-batches; mean metrics of the passes.

        An update whose gradient norm is not finite is never applied (the engine drops it): with
        --skip-nonfinite-batches its micro-batches are left out of the metrics and counted in
        `nonfinite_skipped`; otherwise the step stops here with NonFiniteUpdate, naming the loss or norm."""
        from rlhfctl.ppo.nonfinite import NonFiniteUpdate, first_nonfinite_stat

        generator = torch.Generator().manual_seed(step_seed(self.run.seed, step, self.data_parallel_rank, salt=2))
        self.engine.module.train()
        records: list[dict[str, float]] = []
        pending: list[dict[str, float]] = []  # micro-batches of the update being accumulated
        applied = skipped = 0
        try:
            for epoch in range(self.train_args.max_epochs):
                for micro in self._micro_batches(experience, generator):
                    self.engine.set_accumulation_boundary(micro.boundary)
                    loss, stats = self._loss(micro.experience, micro.weights)
                    self.engine.backward(loss)
                    update = self.engine.step()
                    pending.append(stats)
                    if update.get("nonfinite"):
                        bad = first_nonfinite_stat(pending, (self.loss_name,)) or ("grad_norm", update["grad_norm"])
                        pending = []
                        skipped += 1
                        if not self.train_args.skip_nonfinite_batches:
                            raise NonFiniteUpdate(
                                f"step {step + 1}: the {self.role}'s {bad[0]} is {bad[1]} in its update "
                                f"{applied + skipped} (epoch {epoch + 1}), so that update was not applied",
                                role=self.role, updates_applied=applied)
                    elif update.get("stepped"):
                        applied += 1
                        self._after_update()
                        stats.update(lr=float(update["lr"]))
                        if update.get("grad_norm") is not None:
                            stats.update(grad_norm=float(update["grad_norm"]))
                        records += pending
                        pending = []
        finally:
            self.engine.module.eval()
        metrics = _mean_metrics(records + pending)
        if self.train_args.skip_nonfinite_batches:
            metrics["nonfinite_skipped"] = float(skipped)
        # read back, not configured: shows whether a worker really ran with the threads its CPUs allow
        metrics["torch_threads"] = float(torch.get_num_threads())
        metrics["peak_rss_mb"] = _peak_rss_mb()  # the process's high-water mark: what LoRA saves shows here
        return metrics

    def _after_update(self) -> None:
        """Called on every rank after each applied optimizer step."""

    def save_checkpoint(self, folder: str) -> None:
        self.engine.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.engine.load_checkpoint(folder)


class PolicyWorker(WeightSender, _TrainedWorker):
    """The actor: generate, log-probs of sampled tokens, PPO policy updates, save_pretrained, and its weights to
    the vLLM engines (rollout/weight_sync.py)."""

    role = "actor"
    loss_name = "policy_loss"

    def __init__(self, groups: PolicyGroups, total_updates: int) -> None:
        from rlhfctl.models.actor import load_policy, load_tokenizer
        from rlhfctl.models.compiled import forward_for
        from rlhfctl.models.lora import with_adapters

        self.sampling, self.ppo, self.lora = groups.sampling, groups.ppo, groups.lora
        self.train_args, self.rollout_args, self.run = groups.train, groups.sampling.rollout, groups.sampling.run
        self.rank, self.world_size = rank_and_world()
        model_path, load = groups.sampling.model.pretrain, groups.sampling.load
        self.tokenizer = load_tokenizer(model_path, disable_fast_tokenizer=load.disable_fast_tokenizer)
        model = load_policy(model_path, bf16=load.bf16, flash_attn=load.flash_attn,
                            gradient_checkpointing=groups.train.gradient_checkpointing,
                            load_in_4bit=load.load_in_4bit and groups.lora.uses_lora)
        model = with_adapters(model, groups.lora, gradient_checkpointing=groups.train.gradient_checkpointing)
        self.engine = _build_engine(model, groups.train, load, groups.train.actor_learning_rate, total_updates)
        self.engine.module.eval()
        self.sampler = None  # built at the first HF generate call (vLLM engines and agents sample elsewhere)
        self.forward_model = forward_for(self.engine.module, groups.sampling.rollout.torch_compile)
        self.ring = _ring(groups.train)
        self.ema, self.ptx, self.ptx_coef = None, None, groups.ptx.ptx_coef
        if groups.ema.enable_ema:
            from rlhfctl.ppo.ema import PolicyEMA

            self.ema = PolicyEMA(self.engine, groups.ema.ema_beta, keep=self.rank == 0)
        if groups.ptx.pretrain_data is not None:
            from rlhfctl.ppo.ptx import PretrainBatches

            rollout = groups.sampling.rollout
            self.ptx = PretrainBatches(groups.ptx, self.tokenizer, rollout.prompt_max_len + rollout.generate_max_len,
                                       groups.train.micro_train_batch_size, self.run.seed, self.data_parallel_rank,
                                       self.data_parallel_size)

    @torch.no_grad()
    def generate(self, prompts: list[str], labels: list[str], step: int, evaluation: bool = False,
                 round: int = 0) -> Samples:
        """One response per entry of `prompts` (repeated per sample by the caller), in micro-rollout batches.

        `evaluation` samples at --eval-temperature from a seed of its own, so evaluating never changes what
        training draws; so does each `round` of --dynamic-filtering's resampling."""
        from rlhfctl.models.actor import generate

        rollout = self.rollout_args
        torch.manual_seed(step_seed(self.run.seed, step, self.rank, salt=(3 if evaluation else 1) + 10 * round))
        temperature = self.sampling.temperature(evaluation)
        size = rollout.micro_rollout_batch_size * rollout.n_samples_per_prompt
        if self.sampling.agent.agent_func_path:  # episodes against the user's environment (rlhfctl/agents)
            from rlhfctl.agents.rollout import agent_rollout

            with self.engine.gathered_params():
                return agent_rollout(self.sampling.agent, rollout, self.engine.module, self.tokenizer, prompts,
                                     labels, temperature)
        if self.sampler is None and rollout.torch_compile:
            from rlhfctl.models.compiled import sampler_for

            self.sampler = sampler_for(self.engine.unwrapped, True)
        parts = []
        with self.engine.gathered_params():
            for chunk in chunks(len(prompts), size):
                generated = generate(
                    self.engine.module, self.tokenizer, prompts[chunk], max_new_tokens=rollout.generate_max_len,
                    temperature=temperature, top_p=rollout.top_p, prompt_max_len=rollout.prompt_max_len,
                    sampler=self.sampler,
                )
                parts.append(Samples(generated.sequences, generated.attention_mask, generated.action_mask,
                                     prompts[chunk], labels[chunk], generated.responses, generated.truncated,
                                     queries=generated.queries))
        return Samples.concat(parts, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def log_probs(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        from rlhfctl.models.actor import action_log_probs

        def forward(seqs: Tensor, mask: Tensor, width: int) -> Tensor:
            return action_log_probs(self.forward_model, seqs, mask, width, self.rollout_args.temperature,
                                    packed=self.train_args.packing_samples, ring=self.ring)

        return _rollout_forward(self.train_args, self.rollout_args, forward, sequences, attention_mask, num_actions,
                                self.ring)

    @torch.no_grad()
    def ref_log_probs(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        """The reference's log-probs under LoRA: this actor's base with the adapter off, so the frozen weights are
        held once (a run whose reference this is places no reference worker)."""
        from rlhfctl.models.lora import adapters_off

        with adapters_off(self.engine.unwrapped):
            return self.log_probs(sequences, attention_mask, num_actions)

    def _loss(self, mb: Experience, weights: LossWeights) -> tuple[Tensor, dict[str, float]]:
        """The policy loss (--policy-loss-type, clip bounds, dual clip, --loss-agg-mode, IS correction), plus the KL
        loss (--use-kl-loss) and minus the entropy bonus (--entropy-loss-coef), as OpenRLHF's PPO actor adds them.
        The policy loss is weighted by the share its aggregation averages over, the token means by the token share."""
        from rlhfctl.models.actor import action_log_probs
        from rlhfctl.ppo import functional as F

        ppo = self.ppo
        with_entropy = ppo.entropy_loss_coef is not None
        out = action_log_probs(self.forward_model, mb.sequences, mb.attention_mask, mb.num_actions,
                               self.rollout_args.temperature, return_entropy=with_entropy,
                               packed=self.train_args.packing_samples, ring=self.ring)
        log_probs, entropy = out if with_entropy else (out, None)
        # No experience forward (shaping.old_log_probs_in_training): this update's weights sampled the batch.
        before = mb.log_probs if mb.log_probs is not None else log_probs.detach()
        old_log_probs, is_weights, stats = before, None, {}
        if ppo.enable_vllm_is_correction and mb.rollout_log_probs is not None:
            stats["vllm_kl"] = float(F.masked_mean(mb.rollout_log_probs - mb.log_probs, mb.action_mask))
            if ppo.policy_loss_type == "gspo":  # GSPO's sequence ratio is taken against the rollout engine
                old_log_probs = mb.rollout_log_probs
            else:
                is_weights = F.is_correction_weights(mb.log_probs, mb.rollout_log_probs, mb.action_mask,
                                                     ppo.vllm_is_correction_type, *ppo.vllm_is_truncated_threshold)
        low, high = ppo.clip_low_high
        loss_agg = ppo.loss_agg_mode or ("seq-mean-token-mean" if ppo.policy_loss_type == "gspo" else "token-mean")
        loss, clip_ratio = F.policy_loss(log_probs, old_log_probs, mb.advantages, mb.action_mask, low, high,
                                         dual_clip=ppo.dual_clip, loss_type=ppo.policy_loss_type,
                                         loss_agg=loss_agg, max_len=self.rollout_args.generate_max_len,
                                         is_weights=is_weights)
        stats.update(policy_loss=float(loss.detach()), clip_ratio=float(clip_ratio),
                     ppo_kl=float(F.masked_mean(before - log_probs.detach(), mb.action_mask)))
        total = weights.for_mode(loss_agg) * loss
        if ppo.use_kl_loss and mb.ref_log_probs is not None:
            kl = F.kl_loss(log_probs, mb.ref_log_probs, mb.action_mask, ppo.kl_estimator)
            total = total + weights.token * mb.kl_loss_coef * kl
            stats["kl_loss"] = float(kl.detach())
            if mb.log_probs is None:  # the step's KL metric, as the experience would have measured it
                stats["kl"] = float(F.masked_mean(F.approx_kl(before, mb.ref_log_probs, mb.action_mask,
                                                              ppo.kl_estimator), mb.action_mask, dim=1).mean())
        if entropy is not None:
            mean_entropy = F.masked_mean(entropy, mb.action_mask)
            stats["entropy"] = float(mean_entropy.detach())
            if ppo.entropy_loss_coef:
                total = total - weights.token * ppo.entropy_loss_coef * mean_entropy
        if self.ptx is not None:  # PPO-ptx: one batch of --pretrain-data per micro-batch, as OpenRLHF adds it
            ptx = self.ptx.loss(self.engine.module, self.engine.device)
            total = total + weights.row * self.ptx_coef * ptx
            stats["ptx_loss"] = float(ptx.detach())
        return total, stats

    def train(self, experience: Experience, step: int) -> dict[str, float]:
        if self.ptx is not None:
            self.ptx.begin(step)
        return super().train(experience, step)

    def _after_update(self) -> None:
        if self.ema is not None:
            self.ema.update()

    def save_checkpoint(self, folder: str) -> None:
        super().save_checkpoint(folder)
        if self.ema is not None:
            self.ema.save(folder)

    def load_checkpoint(self, folder: str) -> None:
        super().load_checkpoint(folder)
        if self.ema is not None:
            self.ema.load(folder)

    def save_pretrained(self, out_dir: str) -> None:
        """The policy as a Hugging Face folder (AutoModelForCausalLM) with its tokenizer; with LoRA, the adapter in
        PEFT's format (or, with --save-merged, the merged weights). Rank 0 writes. With --enable-ema the policy is
        the weights' moving average, as OpenRLHF saves its ema_model."""
        from rlhfctl.models.lora import is_lora, merged_state_dict, save_lora

        model = self.engine.unwrapped
        merged = is_lora(model) and self.lora.save_merged
        # every rank takes part: ZeRO-3 gathers shards
        state = merged_state_dict(model, self.engine.gathered, keep=self.rank == 0) if merged \
            else self.engine.state_dict_for_save()
        if self.ema is not None:  # not with --save-merged (config/actor_rules.py)
            state = self.ema.policy_state(state)
        if self.rank == 0:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            if is_lora(model):
                save_lora(model, out_dir, state, merged)
            else:
                model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(out_dir)


class ReferenceWorker:
    """The frozen initial policy: log-probs for the KL penalty (4-bit with --load-in-4bit, on the CPU between
    calls with --ref-reward-offload)."""

    def __init__(self, groups: ReferenceGroups) -> None:
        from rlhfctl.distributed.process_group import local_device
        from rlhfctl.models.actor import load_policy
        from rlhfctl.models.compiled import forward_for
        from rlhfctl.models.offload import Offloader

        self.train_args, self.rollout_args, load = groups.train, groups.rollout, groups.load
        self.model = load_policy(groups.model.pretrain, bf16=load.bf16, flash_attn=load.flash_attn,
                                 load_in_4bit=load.load_in_4bit).eval()
        if groups.lora.lora_path is not None:  # the policy starts from base + this adapter, and so does the KL
            from rlhfctl.models.lora import merge_adapter

            self.model = merge_adapter(self.model, groups.lora.lora_path)
        self.model.requires_grad_(False)
        self.forward_model = forward_for(self.model, groups.rollout.torch_compile)
        self.offloader = Offloader(self.model, local_device(), groups.ref_reward_offload)
        self.ring = _ring(groups.train)

    @torch.no_grad()
    def log_probs(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        from rlhfctl.models.actor import action_log_probs

        with self.offloader.onloaded():
            device = next(self.model.parameters()).device

            def forward(seqs: Tensor, mask: Tensor, width: int) -> Tensor:
                return action_log_probs(self.forward_model, seqs.to(device), mask.to(device), width,
                                        self.rollout_args.temperature, packed=self.train_args.packing_samples,
                                        ring=self.ring).cpu()

            return _rollout_forward(self.train_args, self.rollout_args, forward, sequences, attention_mask,
                                    num_actions, self.ring)

    def offload_onloads(self) -> int:
        """How many times the weights were moved to the device for a call (--ref-reward-offload)."""
        return self.offloader.onloads


class CriticWorker(_TrainedWorker):
    """V(s_t) per response token, trained on the GAE returns with the clipped value loss."""

    role = "critic"
    loss_name = "value_loss"

    def __init__(self, groups: CriticGroups, total_updates: int) -> None:
        from rlhfctl.models.critic import Critic, critic_source
        from rlhfctl.models.lora import with_adapters

        self.train_args, self.rollout_args, self.run, self.ppo = groups.train, groups.rollout, groups.run, groups.ppo
        self.rank, self.world_size = rank_and_world()
        critic = Critic.from_pretrained(
            critic_source(groups.critic.critic_pretrain, groups.reward_model.reward_pretrain, groups.model.pretrain),
            value_head_prefix=groups.reward_model.value_head_prefix,
            bf16=groups.load.bf16, flash_attn=groups.load.flash_attn,
            gradient_checkpointing=groups.train.gradient_checkpointing,
            load_in_4bit=groups.load.load_in_4bit and groups.lora.lora_rank > 0,
        )
        # a fresh adapter of --lora-rank on the backbone (--lora-path is the actor's); the value head trains whole
        critic.backbone = with_adapters(critic.backbone, groups.lora.model_copy(update={"lora_path": None}),
                                        gradient_checkpointing=groups.train.gradient_checkpointing)
        self.engine = _build_engine(critic, groups.train, groups.load, groups.train.critic_learning_rate,
                                    total_updates)
        self.engine.module.eval()
        self.ring = _ring(groups.train)

    @torch.no_grad()
    def values(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        def forward(seqs: Tensor, mask: Tensor, width: int) -> Tensor:
            return self.engine.module(seqs, mask, width, packed=self.train_args.packing_samples, ring=self.ring)

        return _rollout_forward(self.train_args, self.rollout_args, forward, sequences, attention_mask, num_actions,
                                self.ring)

    def _loss(self, mb: Experience, weights: LossWeights) -> tuple[Tensor, dict[str, float]]:
        from rlhfctl.ppo.functional import value_loss

        values = self.engine.module(mb.sequences, mb.attention_mask, mb.num_actions,
                                    packed=self.train_args.packing_samples, ring=self.ring)
        loss = value_loss(values, mb.values, mb.returns, mb.action_mask, self.ppo.value_clip)
        return weights.token * loss, {"value_loss": float(loss.detach())}

    def save_pretrained(self, out_dir: str) -> None:
        """The critic in the *ForSequenceClassification layout; with LoRA, its adapter merged in."""
        from rlhfctl.models.lora import is_lora, merged_state_dict

        if is_lora(self.engine.unwrapped.backbone):
            state = merged_state_dict(self.engine.unwrapped, self.engine.gathered, keep=self.rank == 0)
        else:
            state = self.engine.state_dict_for_save()
        if self.rank == 0:
            self.engine.unwrapped.save_pretrained(out_dir, state_dict=state)


class RewardModelWorker:
    """A local reward model (--reward-pretrain) scoring queries, as a role of its own (on the CPU between calls
    with --ref-reward-offload)."""

    def __init__(self, groups: RewardModelGroups) -> None:
        from rlhfctl.models.offload import Offloader
        from rlhfctl.rewards.factory import open_reward_model

        assert groups.model.reward_pretrain is not None  # a reward role exists only with --reward-pretrain
        self.source = open_reward_model(groups.model.reward_pretrain, groups.load, groups.model)
        model = self.source.model
        self.offloader = Offloader(model, model.device, groups.ref_reward_offload)

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        with self.offloader.onloaded():
            return self.source.score(queries, prompts, labels)

    def offload_onloads(self) -> int:
        return self.offloader.onloads
