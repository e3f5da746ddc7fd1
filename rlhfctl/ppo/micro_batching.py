"""Token-budget micro-batches (--use-dynamic-batch): group samples by what they cost, not by a fixed count.

A fixed count of samples per forward wastes compute on padding when lengths vary, and a count that fits the longest
samples leaves the short ones in tiny batches. Here each optimiser step's samples (--train-batch-size per step, over
the data-parallel workers, as OpenRLHF counts it) are split, longest first, into micro-batches whose cost stays
within a token budget: the padded size (rows x (longest prompt + longest response)), or with --packing-samples the
real tokens. A sample longer than the budget goes alone in a micro-batch (a sample cannot be split), with a warning.

The update must not depend on the grouping: each micro-batch's loss is weighted by its share of the step (action
tokens for token means, rows for per-sequence means), so the accumulated gradient is that of the step's loss over
all its samples at once (`LossWeights`). Data-parallel ranks agree on the number of micro-batches of each step
(ZeRO-3 gathers parameters in every forward, so all ranks must run as many).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rlhfctl.ppo.experience import Experience

log = logging.getLogger(__name__)
_warned_long = False


@dataclass(frozen=True)
class LossWeights:
    """What a micro-batch's loss terms are multiplied by before backward: its share of the optimiser step, times the
    engine's accumulation count (the engine divides every loss by that count)."""

    token: float = 1.0  # for terms averaged over action tokens (token-mean, KL loss, entropy, value loss)
    row: float = 1.0  # for terms averaged over sequences (seq-mean-token-mean, seq-mean-token-sum-norm)

    def for_mode(self, loss_agg: str) -> float:
        return self.token if loss_agg == "token-mean" else self.row


@dataclass
class MicroBatch:
    experience: Experience
    weights: LossWeights
    boundary: bool | None  # ends an optimiser step (None: the engine counts --micro-train-batch-size batches)


def row_lengths(attention_mask: Tensor, num_actions: int) -> tuple[Tensor, Tensor]:
    """(prompt tokens, response tokens up to the last real one) per row of a [B, P + A] mask."""
    prompt = attention_mask[:, :attention_mask.shape[1] - num_actions].sum(dim=1)
    response = attention_mask[:, -num_actions:]
    last = torch.arange(1, num_actions + 1).expand_as(response) * (response != 0)
    return prompt, last.max(dim=1).values


def used_columns(attention_mask: Tensor, num_actions: int) -> tuple[int, int]:
    """(first prompt column any row uses, response columns any row uses): the rest is padding in every row."""
    num_prompt = attention_mask.shape[1] - num_actions
    used_prompt = attention_mask[:, :num_prompt].any(dim=0).nonzero()
    start = int(used_prompt[0]) if len(used_prompt) else num_prompt
    used_actions = attention_mask[:, num_prompt:].any(dim=0).nonzero()
    return start, int(used_actions[-1]) + 1 if len(used_actions) else 1


def token_budget_groups(prompt_lens: list[int], response_lens: list[int], budget: int, packed: bool) -> list[list[int]]:
    """Row indices in groups whose cost is within `budget`, longest rows first (first-fit decreasing).

    Cost: the real tokens when `packed`, else rows x (longest prompt + longest response), the padded tensor's size.
    A row that alone exceeds the budget gets a group of its own."""
    global _warned_long
    if budget < 1:
        raise ValueError(f"a token budget must be >= 1, got {budget}")
    order = sorted(range(len(prompt_lens)), key=lambda i: -(prompt_lens[i] + response_lens[i]))
    groups: list[list[int]] = []
    state: list[tuple[int, int, int]] = []  # per group: (longest prompt, longest response, real tokens)
    for i in order:
        p, r = prompt_lens[i], response_lens[i]
        for g, (gp, gr, tokens) in enumerate(state):
            cost = tokens + p + r if packed else (len(groups[g]) + 1) * (max(gp, p) + max(gr, r))
            if cost <= budget:
                groups[g].append(i)
                state[g] = (max(gp, p), max(gr, r), tokens + p + r)
                break
        else:
            if p + r > budget and not _warned_long:
                _warned_long = True
                log.warning("a sample of %d tokens is longer than the token budget (%d): it runs alone in its "
                            "micro-batch (raise --train/--rollout-max-tokens-per-gpu to avoid this)", p + r, budget)
            groups.append([i])
            state.append((p, r, p + r))
    return groups


def split_to(groups: list[list[int]], count: int) -> list[list[int]]:
    """`groups` split (largest first, in halves) until there are `count`: what ranks agreed on. Splitting a group
    never raises its cost."""
    groups = [list(g) for g in groups]
    while len(groups) < count:
        largest = max(range(len(groups)), key=lambda g: len(groups[g]))
        rows = groups[largest]
        if len(rows) < 2:
            raise RuntimeError(f"cannot form {count} micro-batches from {sum(map(len, groups))} samples: "
                               "data-parallel workers hold too few samples for the step another worker needs")
        groups[largest:largest + 1] = [rows[:len(rows) // 2], rows[len(rows) // 2:]]
    return groups


def agree_max(counts: list[int], device: torch.device) -> list[int]:
    """The element-wise maximum of `counts` over the data-parallel ranks (unchanged for one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return counts
    steps = torch.tensor([len(counts)], device=device)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    if int(steps) != len(counts):
        raise RuntimeError(f"this worker has {len(counts)} optimiser step(s) of samples and another {int(steps)}: "
                           "give every data-parallel worker the same number of samples")
    t = torch.tensor(counts, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(c) for c in t.tolist()]


def dynamic_micro_batches(experience: Experience, rows_per_step: int, budget: int, packed: bool,
                          accumulation_steps: int, generator: torch.Generator | None = None,
                          device: torch.device | None = None) -> list[MicroBatch]:
    """One epoch of token-budget micro-batches: shuffled rows, `rows_per_step` per optimiser step (the last step
    may have fewer), each step split within `budget`, every micro-batch weighted by its share of its step."""
    n = len(experience)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    prompt, response = row_lengths(experience.attention_mask, experience.num_actions)
    action_tokens = experience.action_mask.sum(dim=1)
    steps = [order[i:i + rows_per_step] for i in range(0, n, rows_per_step)]
    grouped = [token_budget_groups(prompt[s].tolist(), response[s].tolist(), budget, packed) for s in steps]
    counts = agree_max([len(g) for g in grouped], device or torch.device("cpu"))
    out: list[MicroBatch] = []
    for rows, groups, count in zip(steps, grouped, counts):
        step_tokens = float(action_tokens[rows].sum().clamp(min=1))
        for k, group in enumerate(split_to(groups, count)):
            index = rows[group]
            weights = LossWeights(token=float(action_tokens[index].sum()) / step_tokens * accumulation_steps,
                                  row=len(group) / len(rows) * accumulation_steps)
            out.append(MicroBatch(experience.select(index), weights, boundary=k == count - 1))
    return out


def rollout_groups(attention_mask: Tensor, num_actions: int, size: int, budget: int | None,
                   packed: bool) -> list[list[int]]:
    """The rows of each log-prob/value forward while making experience: `size` at a time in order, or within a
    token `budget` (--rollout-max-tokens-per-gpu) when one is given."""
    n = attention_mask.shape[0]
    if budget is None:
        return [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    prompt, response = row_lengths(attention_mask, num_actions)
    return token_budget_groups(prompt.tolist(), response.tolist(), budget, packed)


def forward_in_groups(forward: Callable[[Tensor, Tensor, int], Tensor], sequences: Tensor, attention_mask: Tensor,
                      num_actions: int, groups: list[list[int]], trim: bool) -> Tensor:
    """`forward(sequences, attention_mask, num_actions) -> [b, num_actions]` over `groups` of rows, the results
    put back in row order, [B, num_actions]. `trim` drops the columns that are padding in every row of a group
    first (what a token budget counts), and pads the group's result back with 0 on the right."""
    out: Tensor | None = None
    for group in groups:
        index = torch.as_tensor(group, dtype=torch.long)
        seqs, mask, width = sequences[index], attention_mask[index], num_actions
        if trim:
            start, width = used_columns(mask, num_actions)
            end = mask.shape[1] - num_actions + width
            seqs, mask = seqs[:, start:end], mask[:, start:end]
        result = forward(seqs, mask, width)
        if out is None:
            out = result.new_zeros(len(sequences), num_actions)
        out[index.to(out.device), :width] = result
    return out if out is not None else torch.zeros(0, num_actions)
