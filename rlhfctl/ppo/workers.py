"""One role's model (and training engine) in one process: plain classes, hosted by Ray actors (distributed/roles.py).

PolicyWorker samples responses and takes clipped-policy-loss steps; ReferenceWorker gives the frozen reference
log-probs for the KL term; CriticWorker gives values and takes clipped-value-loss steps; RewardModelWorker scores
queries with a local reward model. Each reads the run's TrainPPOConfig and its rank from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhfctl.ppo.experience import Experience, Samples


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def step_seed(seed: int, step: int, rank: int, salt: int) -> int:
    """A seed per (run seed, step, rank, purpose): resumed runs redraw what the uninterrupted run drew."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + salt) % (2**63 - 1)


def _forward_chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _mean_metrics(records: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in records for k in r}
    out = {}
    for key in keys:
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _build_engine(model: torch.nn.Module, cfg: Any, learning_rate: float, total_updates: int) -> Any:
    from rlhfctl.distributed.engine import build_engine

    return build_engine(
        model, kind=cfg.engine, learning_rate=learning_rate, total_steps=total_updates,
        warmup_ratio=cfg.lr_warmup_ratio, max_norm=cfg.max_norm, zero_stage=cfg.zero_stage,
        adam_offload=cfg.adam_offload, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        micro_train_batch_size=cfg.micro_train_batch_size, train_batch_size=cfg.train_batch_size,
    )


class _TrainedWorker:
    """What the actor and critic share: an engine, PPO epochs over micro-batches, checkpoints."""

    engine: Any
    cfg: Any
    rank: int

    def _loss(self, mb: Experience) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def train(self, experience: Experience, step: int) -> dict[str, float]:
        """--max-epochs passes over this worker's share, in shuffled micro-batches; mean metrics of the passes."""
        generator = torch.Generator().manual_seed(step_seed(self.cfg.seed, step, self.rank, salt=2))
        self.engine.module.train()
        records = []
        for _ in range(self.cfg.max_epochs):
            for mb in experience.micro_batches(self.cfg.micro_train_batch_size, generator):
                loss, stats = self._loss(mb)
                self.engine.backward(loss)
                update = self.engine.step()
                if update.get("stepped"):
                    stats.update(lr=float(update["lr"]))
                    if update.get("grad_norm") is not None:
                        stats.update(grad_norm=float(update["grad_norm"]))
                records.append(stats)
        self.engine.module.eval()
        return _mean_metrics(records)

    def save_checkpoint(self, folder: str) -> None:
        self.engine.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.engine.load_checkpoint(folder)


class PolicyWorker(_TrainedWorker):
    """The actor: generate, log-probs of sampled tokens, PPO policy updates, save_pretrained."""

    def __init__(self, cfg: Any, total_updates: int) -> None:
        from rlhfctl.models.actor import load_policy, load_tokenizer

        self.cfg = cfg
        self.rank, self.world_size = rank_and_world()
        self.tokenizer = load_tokenizer(cfg.pretrain, disable_fast_tokenizer=cfg.disable_fast_tokenizer)
        model = load_policy(cfg.pretrain, bf16=cfg.bf16, flash_attn=cfg.flash_attn,
                            gradient_checkpointing=cfg.gradient_checkpointing)
        self.engine = _build_engine(model, cfg, cfg.actor_learning_rate, total_updates)
        self.engine.module.eval()

    @torch.no_grad()
    def generate(self, prompts: list[str], labels: list[str], step: int, evaluation: bool = False) -> Samples:
        """One response per entry of `prompts` (repeated per sample by the caller), in micro-rollout batches.

        `evaluation` samples at --eval-temperature from a seed of its own, so evaluating never changes what
        training draws."""
        from rlhfctl.models.actor import generate

        torch.manual_seed(step_seed(self.cfg.seed, step, self.rank, salt=3 if evaluation else 1))
        temperature = self.cfg.eval_temperature if evaluation else self.cfg.temperature
        size = self.cfg.micro_rollout_batch_size * self.cfg.n_samples_per_prompt
        parts = []
        with self.engine.gathered_params():
            for chunk in _forward_chunks(len(prompts), size):
                rollout = generate(
                    self.engine.module, self.tokenizer, prompts[chunk], max_new_tokens=self.cfg.generate_max_len,
                    temperature=temperature, top_p=self.cfg.top_p, prompt_max_len=self.cfg.prompt_max_len,
                )
                parts.append(Samples(rollout.sequences, rollout.attention_mask, rollout.action_mask,
                                     prompts[chunk], labels[chunk], rollout.responses, rollout.queries))
        return Samples.concat(parts, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def log_probs(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        from rlhfctl.models.actor import action_log_probs

        size = self.cfg.micro_rollout_batch_size * self.cfg.n_samples_per_prompt
        out = [action_log_probs(self.engine.module, sequences[s], attention_mask[s], num_actions,
                                self.cfg.temperature) for s in _forward_chunks(len(sequences), size)]
        return torch.cat(out) if out else torch.zeros(0, num_actions)

    def _loss(self, mb: Experience) -> tuple[Tensor, dict[str, float]]:
        from rlhfctl.models.actor import action_log_probs
        from rlhfctl.ppo.functional import policy_loss

        log_probs = action_log_probs(self.engine.module, mb.sequences, mb.attention_mask, mb.num_actions,
                                     self.cfg.temperature)
        loss, clip_ratio = policy_loss(log_probs, mb.log_probs, mb.advantages, mb.action_mask, self.cfg.eps_clip)
        return loss, {"policy_loss": float(loss.detach()), "clip_ratio": float(clip_ratio)}

    def save_pretrained(self, out_dir: str) -> None:
        """The policy as a Hugging Face folder (AutoModelForCausalLM) with its tokenizer; rank 0 writes."""
        state = self.engine.state_dict_for_save()  # every rank takes part: ZeRO-3 gathers shards
        if self.rank == 0:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            self.engine.unwrapped.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(out_dir)


class ReferenceWorker:
    """The frozen initial policy: log-probs for the KL penalty."""

    def __init__(self, cfg: Any) -> None:
        from rlhfctl.models.actor import load_policy

        self.cfg = cfg
        self.model = load_policy(cfg.pretrain, bf16=cfg.bf16, flash_attn=cfg.flash_attn).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def log_probs(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        from rlhfctl.models.actor import action_log_probs

        size = self.cfg.micro_rollout_batch_size * self.cfg.n_samples_per_prompt
        out = [action_log_probs(self.model, sequences[s], attention_mask[s], num_actions, self.cfg.temperature)
               for s in _forward_chunks(len(sequences), size)]
        return torch.cat(out) if out else torch.zeros(0, num_actions)


class CriticWorker(_TrainedWorker):
    """V(s_t) per response token, trained on the GAE returns with the clipped value loss."""

    def __init__(self, cfg: Any, total_updates: int) -> None:
        from rlhfctl.models.critic import Critic, critic_source

        self.cfg = cfg
        self.rank, self.world_size = rank_and_world()
        critic = Critic.from_pretrained(
            critic_source(cfg.critic_pretrain, cfg.reward_pretrain, cfg.pretrain),
            value_head_prefix=cfg.value_head_prefix,
            bf16=cfg.bf16, flash_attn=cfg.flash_attn, gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.engine = _build_engine(critic, cfg, cfg.critic_learning_rate, total_updates)
        self.engine.module.eval()

    @torch.no_grad()
    def values(self, sequences: Tensor, attention_mask: Tensor, num_actions: int) -> Tensor:
        size = self.cfg.micro_rollout_batch_size * self.cfg.n_samples_per_prompt
        out = [self.engine.module(sequences[s], attention_mask[s], num_actions)
               for s in _forward_chunks(len(sequences), size)]
        return torch.cat(out) if out else torch.zeros(0, num_actions)

    def _loss(self, mb: Experience) -> tuple[Tensor, dict[str, float]]:
        from rlhfctl.ppo.functional import value_loss

        values = self.engine.module(mb.sequences, mb.attention_mask, mb.num_actions)
        loss = value_loss(values, mb.values, mb.returns, mb.action_mask, self.cfg.value_clip)
        return loss, {"value_loss": float(loss.detach())}

    def save_pretrained(self, out_dir: str) -> None:
        state = self.engine.state_dict_for_save()
        if self.rank == 0:
            self.engine.unwrapped.save_pretrained(out_dir, state_dict=state)


class RewardModelWorker:
    """A local reward model (--reward-pretrain) scoring queries, as a role of its own."""

    def __init__(self, cfg: Any) -> None:
        from rlhfctl.rewards.factory import open_reward_model

        self.source = open_reward_model(cfg)

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> Any:
        return self.source.score(queries, prompts, labels)
