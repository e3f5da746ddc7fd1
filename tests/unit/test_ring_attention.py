"""Ring attention (--ring-attn-size): a packed row split over two gloo processes gives what one process gives.

Log-probs, entropy and critic values equal the unsplit packed forward's, for each --ring-head-stride; and the
ring's gradients, averaged as the engines average them, equal the unsplit gradient: a ring of R workers is one
data-parallel worker whose activations are split R ways."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rlhfctl.net import free_port
from tests.helpers.dist import own_process_group  # noqa: F401 - autouse fixture

TEMPERATURE = 0.7


def _batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Three rows of different prompt and response lengths (left-padded prompts, right-padded responses): 23
    real tokens, so two workers split the row unevenly and one sample crosses the cut."""
    g = torch.Generator().manual_seed(0)
    prompts, responses = [5, 3, 4], [4, 5, 2]
    width_p, width_a = max(prompts), max(responses)
    seqs = torch.randint(3, 500, (3, width_p + width_a), generator=g)
    mask = torch.zeros_like(seqs)
    for row, (p, a) in enumerate(zip(prompts, responses)):
        mask[row, width_p - p:width_p + a] = 1
    return seqs * mask, mask, width_a


def _outputs(policy_dir: str, ring) -> dict[str, torch.Tensor]:
    from rlhfctl.models.actor import action_log_probs, load_policy
    from rlhfctl.models.critic import Critic

    torch.manual_seed(0)
    model = load_policy(policy_dir)
    seqs, mask, width = _batch()
    log_probs, entropy = action_log_probs(model, seqs, mask, width, TEMPERATURE, return_entropy=True, packed=True,
                                          ring=ring)
    weights = torch.linspace(-1.0, 2.0, log_probs.numel()).view_as(log_probs)
    ((log_probs * weights).sum() + entropy.sum()).backward()
    critic = Critic.from_pretrained(policy_dir)
    with torch.no_grad():
        values = critic(seqs, mask, width, packed=True, ring=ring)
    return {"log_probs": log_probs.detach(), "entropy": entropy.detach(), "values": values,
            **{f"grad.{n}": p.grad for n, p in model.named_parameters()}}


def _ring_worker(rank: int, port: int, policy_dir: str, out: str, stride: int) -> None:
    from rlhfctl.models.ring_attention import make_ring_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ring = make_ring_group(2, stride)
    torch.save(_outputs(policy_dir, ring), Path(out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("stride", [1, 2], ids=["head-stride-1", "head-stride-2"])
def test_a_row_split_over_a_ring_gives_the_unsplit_outputs_and_gradient(tiny_policy_dir, tmp_path, stride):
    import torch.multiprocessing as mp

    mp.spawn(_ring_worker, args=(free_port(), str(tiny_policy_dir), str(tmp_path), stride), nprocs=2, join=True)
    want = _outputs(str(tiny_policy_dir), None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in ("log_probs", "entropy", "values"):
        for got in ranks:  # every worker of the ring returns the whole batch's values
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)
    assert (want["log_probs"] != 0).sum() == 11  # the 11 real response tokens, 0 on response padding
    for name in (k for k in want if k.startswith("grad.")):
        mean = (ranks[0][name] + ranks[1][name]) / 2  # what the engines' all-reduce mean gives
        torch.testing.assert_close(mean, want[name], rtol=1e-4, atol=1e-6)
        assert not torch.equal(ranks[0][name], ranks[1][name]) or not want[name].any()  # each holds a share


def test_a_ring_of_one_is_no_ring():
    from rlhfctl.models.ring_attention import make_ring_group

    assert make_ring_group(1, 1) is None


@pytest.mark.parametrize("kwarg, what", [("sliding_window", "a sliding window"), ("softcap", "logit soft-capping"),
                                         ("s_aux", "attention sinks")])
def test_attention_the_split_cannot_carry_is_refused_before_any_exchange(kwarg, what):
    """Mistral's window, Gemma's soft-capping, gpt-oss's sinks: an error naming it, not attention without it."""
    from rlhfctl.errors import ConfigError
    from rlhfctl.models.ring_attention import RingChunk, RingGroup, ring_attention

    chunk = RingChunk(RingGroup(group=None, size=2, rank=0, head_stride=1), (0, 8), 0, 4)
    q = k = v = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ConfigError, match=what):
        ring_attention(None, q, k, v, chunk, **{kwarg: 4})
    assert chunk.calls == []
