"""The policy (actor): loading, sampling responses with HF `generate`, and log-probs of the sampled tokens.

Shapes follow OpenRLHF: a rollout is `sequences` [B, P + A] = left-padded prompt ids then right-padded response ids,
`attention_mask` over the whole sequence, and `action_mask` [B, A] that is 1 on response tokens up to and
including the first EOS. Log-probs and values are per action position, [B, A].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from rlhfctl.distributed.busy import timed
from rlhfctl.errors import ConfigError
from rlhfctl.models.capabilities import takes_logits_to_keep
from rlhfctl.models.quiet import quiet_transformers

if TYPE_CHECKING:
    from rlhfctl.models.decode import CompiledSampler
    from rlhfctl.models.ring_attention import RingGroup

_flash_warned = False


def attn_implementation(flash_attn: bool) -> str:
    """flash-attention 2 only where it can run (a CUDA GPU with flash_attn installed); warn once otherwise."""
    global _flash_warned
    if flash_attn:
        try:
            import flash_attn  # noqa: F401

            if torch.cuda.is_available():
                return "flash_attention_2"
        except ImportError:
            pass
        if not _flash_warned:
            warnings.warn("--flash-attn: flash-attention 2 needs a CUDA GPU with flash_attn installed; using sdpa")
            _flash_warned = True
    return "sdpa"


def load_tokenizer(path: str, *, disable_fast_tokenizer: bool = False) -> Any:
    """The policy's tokenizer, padding on the left (prompts end where generation starts) and cutting long
    prompts from the left (the end of a prompt is what the response follows)."""
    from transformers import AutoTokenizer

    _require_folder(path, "--pretrain")
    tok = AutoTokenizer.from_pretrained(path, use_fast=not disable_fast_tokenizer)
    if tok.pad_token_id is None:  # Llama-style tokenizers ship without one; OpenRLHF pads with EOS then
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    tok.truncation_side = "left"
    return tok


def load_policy(path: str, *, bf16: bool = False, flash_attn: bool = False,
                gradient_checkpointing: bool = False, load_in_4bit: bool = False) -> Any:
    """An AutoModelForCausalLM from a local folder, in fp32 (or bf16, or 4-bit on a GPU for a frozen copy), train
    mode off."""
    from transformers import AutoModelForCausalLM

    from rlhfctl.models.reward import four_bit_kwargs

    quiet_transformers()
    _require_folder(path, "--pretrain")
    dtype = torch.bfloat16 if bf16 else torch.float32
    extra = four_bit_kwargs(dtype) if load_in_4bit else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation(flash_attn), **extra
    )
    model.config.use_cache = True
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _require_folder(path: str, flag: str) -> None:
    if not Path(path).is_dir():
        from rlhfctl.hub import missing_folder

        raise ConfigError(f"{flag} {path}: {missing_folder(path)}")


@dataclass
class Rollout:
    """What `generate` returns: token tensors, the response texts, and the queries the reward will read."""

    sequences: Tensor
    attention_mask: Tensor
    action_mask: Tensor
    responses: list[str]
    queries: list[str]
    truncated: Optional[Tensor] = None  # [B] bool: no EOS within max_new_tokens (cut at the length limit)


def decode_queries(tokenizer: Any, prompt_ids: Tensor, prompt_mask: Tensor, responses: Tensor, action_mask: Tensor,
                   eos_token_id: int | list[int] | None) -> list[str]:
    """The reward's query texts as OpenRLHF builds them: the prompt's tokens as the policy saw them (left-truncated
    to --prompt-max-len, pads removed) and the response's, decoded as ONE sequence.

    Decoding the two halves apart and joining the texts differs for SentencePiece-style tokenizers: the response's
    first token "▁4" decodes to "4" on its own but to " 4" after the prompt. Special tokens inside the text (a chat
    template's) stay, as OpenRLHF keeps them; the EOS that ends a response is left out, as OpenRLHF's reward server
    strips it."""
    eos = set(eos_token_id if isinstance(eos_token_id, list) else [] if eos_token_id is None else [eos_token_id])
    queries = []
    for p_ids, p_mask, r_ids, r_mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), responses.tolist(),
                                             action_mask.tolist()):
        ids = [t for t, m in zip(p_ids, p_mask) if m] + [t for t, m in zip(r_ids, r_mask) if m and t not in eos]
        queries.append(tokenizer.decode(ids, skip_special_tokens=False))
    return queries


def tokenize_prompts(tokenizer: Any, prompts: list[str], prompt_max_len: int) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids and mask, each prompt cut to its last `prompt_max_len` tokens.

    Prompts are already formatted (chat template applied), so no special tokens are added again."""
    with timed("tokenize"):
        enc = tokenizer(
            prompts, return_tensors="pt", padding=True, truncation=True, max_length=prompt_max_len,
            add_special_tokens=False,
        )
    return enc["input_ids"], enc["attention_mask"]


def response_action_mask(responses: Tensor, eos_token_id: int | list[int] | None) -> Tensor:
    """1 on response tokens up to and including the first EOS (what the policy chose), 0 on what follows."""
    if eos_token_id is None:
        return torch.ones_like(responses, dtype=torch.long)
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    is_eos = torch.isin(responses, eos_ids).long()
    ended_before = (is_eos.cumsum(dim=1) - is_eos) > 0
    return (~ended_before).long()


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    prompt_max_len: int = 1024,
    sampler: CompiledSampler | None = None,
) -> Rollout:
    """Sample one response per prompt with the KV cache; the global torch RNG drives sampling (seeded per worker).

    A temperature of 0 decodes greedily (evaluation). A prompt repeated for its group's samples is tokenized
    once; with `sampler` (--torch-compile, models/decode.py) its forward also runs once."""
    unique = list(dict.fromkeys(prompts))
    ids, mask = tokenize_prompts(tokenizer, unique, prompt_max_len)
    row_of = {prompt: i for i, prompt in enumerate(unique)}
    rows = torch.tensor([row_of[p] for p in prompts], dtype=torch.long)
    input_ids, prompt_mask = ids[rows], mask[rows]
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 \
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if sampler is not None:
        responses = sampler.sample(ids, mask, rows, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    else:
        responses = model.generate(
            input_ids=input_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens, use_cache=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, **sampling,
        )[:, input_ids.shape[1]:]
    action_mask = response_action_mask(responses, eos)
    truncated = ~_ends_with_eos(responses, action_mask, eos)
    responses = responses.masked_fill(action_mask == 0, tokenizer.pad_token_id)
    sequences = torch.cat([input_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, action_mask], dim=1)
    with timed("tokenize"):
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        queries = decode_queries(tokenizer, input_ids, prompt_mask, responses, action_mask, eos)
    return Rollout(sequences, attention_mask, action_mask, texts, queries, truncated)


def _ends_with_eos(responses: Tensor, action_mask: Tensor, eos_token_id: int | list[int] | None) -> Tensor:
    """[B] bool: the last action token of each row is an EOS (the response stopped by itself)."""
    if eos_token_id is None:
        return torch.zeros(responses.shape[0], dtype=torch.bool)
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    last = (action_mask.sum(dim=1) - 1).clamp(min=0)
    return torch.isin(responses.gather(1, last.unsqueeze(1)).squeeze(1), eos_ids)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, so a prompt's tokens sit at the same positions whatever the batch."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def action_log_probs(model: Any, sequences: Tensor, attention_mask: Tensor, num_actions: int,
                     temperature: float = 1.0, return_entropy: bool = False,
                     packed: bool = False, ring: RingGroup | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """log pi(a_t | s_t) of the last `num_actions` tokens of each sequence, [B, num_actions].

    The logits are divided by the sampling temperature, as OpenRLHF does, so the ratio compares the
    distribution the samples were drawn from. `return_entropy` also returns the entropy of that distribution at
    each of those positions, [B, num_actions] (for --entropy-loss-coef). `packed` runs the rows as one packed row
    without padding (--packing-samples, models/packing.py): the same values, 0 on response padding. With `ring`
    this worker runs its share of that row (--ring-attn-size, models/ring_attention.py) and the ring's values are
    gathered, so every worker of the ring returns the whole result."""
    if packed and ring is not None:
        return _ring_action_log_probs(model, sequences, attention_mask, num_actions, temperature, return_entropy,
                                      ring)
    targets = sequences[:, -num_actions:]
    restore = (lambda t: t)  # noqa: E731
    if packed:  # logits of the real action tokens only, [N, V]; back to [B, A] at the end
        from rlhfctl.models import packing

        rows = packing.pack(sequences, attention_mask, num_actions)
        logits = packing.gather_actions(model(**packing.forward_kwargs(model, rows)).logits, rows).float()
        targets = targets[rows.action_valid]
        restore = (lambda t: packing.scatter_actions(t, rows))  # noqa: E731
    else:
        from rlhfctl.models import shared_prompt

        positions = position_ids(attention_mask)
        logits = shared_prompt.action_logits(model, sequences, attention_mask, num_actions, positions)
        if logits is None:
            keep = {"logits_to_keep": num_actions + 1} if takes_logits_to_keep(model) else {}
            logits = model(sequences, attention_mask=attention_mask, position_ids=positions, use_cache=False,
                           **keep).logits[:, -num_actions - 1:-1]
        logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = restore(torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1))
    if not return_entropy:
        return log_probs
    return log_probs, restore(entropy_from_logits(logits))


def _ring_action_log_probs(model: Any, sequences: Tensor, attention_mask: Tensor, num_actions: int,
                           temperature: float, return_entropy: bool,
                           ring: RingGroup) -> Tensor | tuple[Tensor, Tensor]:
    """action_log_probs on a ring: each worker turns its action tokens' logits (the head runs on those alone) into
    one log-prob (and entropy) per token, so only those numbers, not [tokens, vocabulary] logits, are gathered."""
    from rlhfctl.models import packing

    rows = packing.pack(sequences, attention_mask, num_actions)
    start, length = packing.span(rows, ring)
    wanted = rows.action_index[rows.action_valid]  # packed places whose output predicts an action token
    local = (wanted[(wanted >= start) & (wanted < start + length)] - start).unique()
    out, part = packing.ring_forward(model, rows, ring, logits_to_keep=local)
    logits = out.logits[0].float()
    if temperature != 1.0:
        logits = logits / temperature
    chosen = torch.gather(logits.log_softmax(-1), -1, part.next_tokens[local].unsqueeze(-1)).squeeze(-1)

    def at_actions(values: Tensor) -> Tensor:
        per_token = values.new_zeros(length).index_copy(0, local, values)
        return packing.scatter_actions(packing.gather_actions(part.gather_tokens(per_token).unsqueeze(0), rows),
                                       rows)

    if not return_entropy:
        return at_actions(chosen)
    return at_actions(chosen), at_actions(entropy_from_logits(logits))


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax over the last dim, ``-sum_v p_v log p_v = logsumexp(l) - sum_v p_v l_v``.

    Per position of ``logits`` ``[..., V]``; for ``--entropy-loss-coef`` (OpenRLHF subtracts coef * the token-mean
    entropy from the actor loss, so a positive coefficient rewards exploration).
    """
    logits = logits.float()
    p = logits.softmax(-1)
    return torch.logsumexp(logits, -1) - (p * logits).sum(-1)
