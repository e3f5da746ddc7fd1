"""--packing-samples: a micro-batch's samples in one row without padding give the padded path's log-probs, entropy,
values and losses (fp32: within 1e-5), and attention never crosses from one sample into another."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlhfctl.config import TrainPPOConfig
from rlhfctl.errors import ConfigError
from rlhfctl.ppo.experience import Experience
from rlhfctl.ppo.micro_batching import LossWeights

PROMPT, ACTIONS = 7, 9
# (left pads of the prompt, right pads of the response) per row: lengths from 7 to 16 tokens
PADS = [(0, 0), (3, 2), (6, 8), (1, 5), (2, 0), (5, 7)]


def mixed_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.randint(3, 300, (len(PADS), PROMPT + ACTIONS), generator=gen)
    attn = torch.ones_like(seqs)
    for row, (left, right) in enumerate(PADS):
        attn[row, :left] = 0
        if right:
            attn[row, -right:] = 0
    seqs = seqs.masked_fill(attn == 0, 0)
    return seqs, attn


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    from rlhfctl.models.actor import load_policy

    return load_policy(str(tiny_policy_dir))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_log_probs_and_entropy_equal_the_padded_ones(attention, tiny_policy_dir):
    """sdpa: attention per sample's slice (packing.sdpa_varlen); eager: transformers' block-diagonal mask."""
    from rlhfctl.models.actor import action_log_probs, load_policy

    policy = load_policy(str(tiny_policy_dir))
    policy.set_attn_implementation(attention)
    seqs, attn = mixed_batch()
    real = attn[:, -ACTIONS:].bool()
    padded_lp, padded_ent = action_log_probs(policy, seqs, attn, ACTIONS, 0.7, return_entropy=True)
    packed_lp, packed_ent = action_log_probs(policy, seqs, attn, ACTIONS, 0.7, return_entropy=True, packed=True)
    assert torch.allclose(packed_lp[real], padded_lp[real], atol=1e-5)
    assert torch.allclose(packed_ent[real], padded_ent[real], atol=1e-5)
    assert packed_lp[~real].abs().max() == 0  # response padding: 0, never a stray value


def test_attention_stays_within_each_packed_sample(policy):
    """Changing one sample's tokens changes its own log-probs and no other sample's."""
    from rlhfctl.models.actor import action_log_probs

    seqs, attn = mixed_batch()
    before = action_log_probs(policy, seqs, attn, ACTIONS, packed=True)
    changed = seqs.clone()
    changed[1, 3:PROMPT] = 11  # row 1's real prompt tokens
    after = action_log_probs(policy, changed, attn, ACTIONS, packed=True)
    assert (after[1] - before[1]).abs().max() > 1e-3
    assert torch.equal(torch.cat([after[:1], after[2:]]), torch.cat([before[:1], before[2:]]))


def test_packed_critic_values_equal_the_padded_ones(tiny_policy_dir):
    from rlhfctl.models.critic import Critic

    critic = Critic.from_pretrained(str(tiny_policy_dir))
    seqs, attn = mixed_batch(1)
    real = attn[:, -ACTIONS:].bool()
    with torch.no_grad():
        padded = critic(seqs, attn, ACTIONS)
        packed = critic(seqs, attn, ACTIONS, packed=True)
    assert torch.allclose(packed[real], padded[real], atol=1e-5)


def _experience(seed: int) -> Experience:
    seqs, attn = mixed_batch(seed)
    act = attn[:, -ACTIONS:].clone()
    gen = torch.Generator().manual_seed(seed + 100)
    per_token = lambda scale, shift: (torch.randn(act.shape, generator=gen) * scale + shift) * act  # noqa: E731
    return Experience(seqs, attn, act, log_probs=per_token(0.3, -3.0), rewards=torch.zeros(len(act)),
                      ref_log_probs=per_token(0.3, -3.0), values=per_token(0.5, 0.0), advantages=per_token(1.0, 0.0),
                      returns=per_token(1.0, 0.0), kl_loss_coef=0.1)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_packed_actor_and_critic_losses_and_gradients_equal_the_padded_ones(loss_agg, tiny_policy_dir):
    """The actor worker's loss (policy loss + KL loss - entropy bonus) and the critic's value loss, and their
    gradients, with and without --packing-samples."""
    from rlhfctl.config.slices import CriticGroups, PolicyGroups
    from rlhfctl.ppo.workers import CriticWorker, PolicyWorker

    common = dict(pretrain=str(tiny_policy_dir), prompt_data="p.jsonl", remote_rm_url="r.py", engine="torch",
                  micro_train_batch_size=6, train_batch_size=6, use_kl_loss=True, entropy_loss_coef=0.01,
                  loss_agg_mode=loss_agg)
    mb = _experience(2)
    for worker_cls, groups in ((PolicyWorker, PolicyGroups), (CriticWorker, CriticGroups)):
        results = []
        for packing in (False, True):
            torch.manual_seed(0)  # the critic's fresh value head: the same for both
            worker = worker_cls(groups.of(TrainPPOConfig(**common, packing_samples=packing)), total_updates=1)
            loss, _ = worker._loss(mb, LossWeights())
            loss.backward()
            grads = torch.cat([p.grad.reshape(-1) for p in worker.engine.unwrapped.parameters() if p.grad is not None])
            results.append((loss.detach(), grads))
        (loss_a, grad_a), (loss_b, grad_b) = results
        assert abs(float(loss_a - loss_b)) < 1e-5, worker_cls.__name__
        assert torch.allclose(grad_a, grad_b, atol=1e-5, rtol=1e-4), worker_cls.__name__


def test_flash_attention_packing_off_a_gpu_says_what_it_needs():
    from rlhfctl.models import packing

    seqs, attn = mixed_batch()
    rows = packing.pack(seqs, attn, ACTIONS)
    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    with pytest.raises(ConfigError, match="varlen kernel, which needs a CUDA GPU"):
        packing.forward_kwargs(model, rows)
    eager = packing.forward_kwargs(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager")), rows)
    assert eager["attention_mask"] is None and "cu_seq_lens_q" not in eager  # transformers' block-diagonal mask
    assert rows.cu_seqlens.tolist() == [0, *attn.sum(1).cumsum(0).tolist()]
    assert rows.position_ids[0, :16].tolist() == list(range(16))  # row 0 unpadded, then row 1 restarts at 0
    assert rows.position_ids[0, 16] == 0
