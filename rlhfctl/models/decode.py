"""Sampling with a static KV cache and a `torch.compile`d one-token step (--torch-compile).

HF `generate` runs each decode step as a few hundred eager torch calls plus its logits processors, stopping
criteria and cache bookkeeping; for the small policies of CPU runs that Python work, not the matrix products, is most
of a step. Here the cache is preallocated once per (batch, cache length) and the whole step (the model's forward on
one token per row, temperature, top-p and the draw) is one compiled graph, so a step costs its kernels and a guard
check. The prompt's forward (prefill) stays eager: its length changes from batch to batch.

A compiled graph reads the parameters as inputs, so it follows the optimizer's in-place updates without being
compiled again; the temperature is an input too, so training's and evaluation's sampling share it. It is compiled
again for each new (batch, cache length): cache lengths are rounded up to a power of two so that varying prompt
lengths reuse a few graphs. Rows are sampled independently as HF does: softmax(logits / temperature), the top-p
nucleus, one categorical draw from the global torch RNG; temperature 0 takes the argmax.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from rlhfctl.errors import ConfigError

# generation_config.json settings that make HF generate change the logits beyond temperature and top-p, with the
# value at which they do nothing; the compiled step does not apply them, so a policy that sets one is refused.
_LOGITS_SETTINGS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0,
    "min_new_tokens": None, "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None,
    "exponential_decay_length_penalty": None, "num_beams": 1, "min_p": None, "top_h": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "guidance_scale": 1.0, "watermarking_config": None,
}


def cache_length(prompt_len: int, max_new_tokens: int) -> int:
    """The static cache's length: prompt plus new tokens, rounded up to a power of two (at least 64)."""
    need = prompt_len + max_new_tokens
    return max(64, 1 << (need - 1).bit_length())


def next_tokens(logits: Tensor, temperature: float | Tensor, top_p: float) -> Tensor:
    """[B] token ids drawn from the last position's [B, V] logits as HF's sampling draws them (top_k off); a
    temperature of 0 takes the argmax. A tensor temperature keeps both in one graph, chosen per call."""
    logits = logits.float()
    if not isinstance(temperature, Tensor) and temperature <= 0:
        return logits.argmax(-1)
    t = temperature.clamp(min=1e-6) if isinstance(temperature, Tensor) else temperature
    probs = (logits / t).softmax(-1)
    if top_p < 1.0:
        # HF's TopPLogitsWarper: drop the tokens whose cumulative probability, ascending, stays within 1 - top_p;
        # the most likely token always stays.
        sorted_probs, order = probs.sort(-1)
        drop_sorted = sorted_probs.cumsum(-1) <= (1 - top_p)
        drop_sorted[..., -1] = False
        probs = probs.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), 0.0)
    # A categorical draw per row as the argmax of probs / Exp(1): a token of probability 0 never wins.
    drawn = (probs / torch.empty_like(probs).exponential_()).argmax(-1)
    return torch.where(temperature > 0, drawn, logits.argmax(-1)) if isinstance(temperature, Tensor) else drawn


def _cache_mask(prompt_mask: Tensor, length: int) -> Tensor:
    """The attention mask over a static cache of `length` slots: the prompt's, then 1 for every slot to come (the
    causal mask hides the slots not yet written)."""
    return torch.cat([prompt_mask, prompt_mask.new_ones(prompt_mask.shape[0], length - prompt_mask.shape[1])], dim=1)


def check_compilable(model_class: type, config: Any, generation: dict[str, Any]) -> None:
    """Refuse a policy whose class has no static-cache compiled path, whose static cache holds other than plain
    full-attention layers (sliding windows, linear attention: the prefill copy and the decode mask assume plain
    ones), or whose generation config asks HF generate for logits processing this sampler does not do."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    if not getattr(model_class, "_can_compile_fullgraph", False):
        raise ConfigError(f"--torch-compile: {model_class.__name__} does not support a static KV cache under "
                          "torch.compile; leave the option out (HF generate then runs eagerly)")
    layers = {type(layer).__name__ for layer in StaticCache(config=config, max_cache_len=64).layers}
    if layers != {StaticLayer.__name__}:
        raise ConfigError(f"--torch-compile samples over a cache of full-attention layers only; "
                          f"{model_class.__name__}'s cache has {', '.join(sorted(layers))}; leave the option out "
                          "(HF generate then runs eagerly)")
    applied = [f"{name}={generation[name]!r}" for name, neutral in _LOGITS_SETTINGS.items()
               if generation.get(name, neutral) not in (neutral, None, 0, [])]
    if applied:
        raise ConfigError(f"--torch-compile samples from temperature and top-p only, but the policy's "
                          f"generation_config sets {', '.join(applied)}, which HF generate applies; leave the "
                          "option out, or remove those settings from generation_config.json")


class CompiledSampler:
    """Samples responses for one policy; keeps a static cache and a compiled step per shape it has seen."""

    def __init__(self, model: Any) -> None:
        from transformers import StaticCache

        from rlhfctl.models.capabilities import transformers_model

        base = transformers_model(model)  # under a PEFT wrapper, the class and configs are its base model's
        check_compilable(type(base), base.config, base.generation_config.to_dict() if base.generation_config else {})
        self.model = model
        self._static_cache = StaticCache
        self._caches: dict[tuple[str, int, int], Any] = {}
        self._step: Callable[..., Tensor] = torch.compile(self._decode_step, fullgraph=True, dynamic=False)

    def _decode_step(self, token: Tensor, position: Tensor, cache_position: Tensor, mask: Tensor, cache: Any,
                     temperature: Tensor, top_p: float) -> Tensor:
        out = self.model(input_ids=token, position_ids=position, cache_position=cache_position, attention_mask=mask,
                         past_key_values=cache, use_cache=True)
        return next_tokens(out.logits[:, -1], temperature, top_p)

    def _cache(self, use: str, batch: int, length: int) -> Any:
        """The static cache for `use` ("prefill": one row per distinct prompt, "decode": one per sample), emptied;
        the two are never the same object, even when every prompt is distinct. Kept for the run: the compiled step
        is specialised to the decode cache's tensors."""
        cache = self._caches.get((use, batch, length))
        if cache is None:
            cache = self._caches[(use, batch, length)] = self._static_cache(config=self.model.config,
                                                                           max_cache_len=length)
        else:
            cache.reset()
        return cache

    def _prefill(self, prompt_ids: Tensor, prompt_mask: Tensor, rows: Tensor, length: int) -> tuple[Tensor, Any]:
        """The prompts' forward, each distinct prompt once, into a cache of one row per sample: [B, V] logits of
        the last prompt position, and that cache. A group's n samples share their prompt's keys and values."""
        from rlhfctl.models.actor import position_ids
        from rlhfctl.models.capabilities import takes_logits_to_keep

        unique = self._cache("prefill", prompt_ids.shape[0], length)
        keep = {"logits_to_keep": 1} if takes_logits_to_keep(self.model) else {}
        out = self.model(input_ids=prompt_ids, position_ids=position_ids(prompt_mask),
                         attention_mask=_cache_mask(prompt_mask, length), past_key_values=unique,
                         cache_position=torch.arange(prompt_ids.shape[1], device=prompt_ids.device), use_cache=True,
                         **keep)
        cache = self._cache("decode", rows.shape[0], length)
        for src, dst in zip(unique.layers, cache.layers):
            if not dst.is_initialized:
                dst.lazy_initialization(src.keys.index_select(0, rows), src.values.index_select(0, rows))
            torch.index_select(src.keys, 0, rows, out=dst.keys)
            torch.index_select(src.values, 0, rows, out=dst.values)
            dst.cumulative_length.copy_(src.cumulative_length)
        return out.logits[:, -1].index_select(0, rows), cache

    @torch.no_grad()
    def sample(self, prompt_ids: Tensor, prompt_mask: Tensor, rows: Tensor, *, max_new_tokens: int,
               temperature: float, top_p: float, eos_token_id: int | list[int] | None, pad_token_id: int) -> Tensor:
        """[B, R] response ids, R <= max_new_tokens, for sample b of left-padded prompt `rows[b]` (prompt_ids is
        [U, P], one row per distinct prompt): as `generate` returns them, pads after a row's EOS, and no more steps
        once every row has ended."""
        device, origin = next(self.model.parameters()).device, prompt_ids.device
        prompt_ids, prompt_mask, rows = prompt_ids.to(device), prompt_mask.to(device), rows.to(device)
        prompt_len = prompt_ids.shape[1]
        length = cache_length(prompt_len, max_new_tokens)
        logits, cache = self._prefill(prompt_ids, prompt_mask, rows, length)
        token = next_tokens(logits, temperature, top_p)
        temperature_t = torch.tensor(float(temperature), device=device)  # an input: one graph for all
        mask = _cache_mask(prompt_mask, length).index_select(0, rows)
        position = (prompt_mask.long().sum(-1, keepdim=True) - 1).clamp(min=0).index_select(0, rows)
        eos = torch.tensor([] if eos_token_id is None else eos_token_id if isinstance(eos_token_id, list)
                           else [eos_token_id], dtype=torch.long, device=device)
        done = torch.zeros(rows.shape[0], dtype=torch.bool, device=device)
        tokens = []
        for i in range(max_new_tokens):
            token = token.masked_fill(done, pad_token_id)
            tokens.append(token)
            done = done | torch.isin(token, eos)
            if i == max_new_tokens - 1 or bool(done.all()):
                break
            position = position + 1
            token = self._step(token[:, None], position, torch.tensor([prompt_len + i], device=device), mask, cache,
                               temperature_t, top_p)
        return torch.stack(tokens, dim=1).to(origin)

