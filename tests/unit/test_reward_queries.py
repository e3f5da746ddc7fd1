"""The reward's query text is what OpenRLHF builds: prompt and response token ids decoded as one sequence, with the
prompt cut from the left to --prompt-max-len as the policy saw it. Shown with a SentencePiece-style (Metaspace)
tokenizer, where decoding the halves apart drops the space before the response."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

from rlhfctl.models.actor import decode_queries, generate, tokenize_prompts
from rlhfctl.models.tiny import BOS, EOS, PAD, ROLE_TOKENS, _corpus, _wrap

PROMPT = "What is 12 + 30? The answer is"
RESPONSE = " 42."


def metaspace_tokenizer():
    """A BPE tokenizer with SentencePiece's Metaspace pre-tokenizer and decoder ("▁" marks a word's space), as
    Llama-2 and Mistral tokenizers have."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(_corpus(0), trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS], show_progress=False))
    hf = _wrap(tok)
    hf.padding_side = hf.truncation_side = "left"
    return hf


def split_ids(tokenizer, prompt, response):
    full = tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return full[:n], full[n:]


def test_decoding_halves_apart_loses_the_space_one_sequence_keeps_it():
    tokenizer = metaspace_tokenizer()
    prompt_ids, response_ids = split_ids(tokenizer, PROMPT, RESPONSE)
    apart = tokenizer.decode(prompt_ids) + tokenizer.decode(response_ids)
    assert apart != PROMPT + RESPONSE  # the premise: "...is42." with SentencePiece decoding
    eos = tokenizer.eos_token_id
    query = decode_queries(tokenizer, torch.tensor([prompt_ids]), torch.ones(1, len(prompt_ids), dtype=torch.long),
                           torch.tensor([response_ids + [eos]]), torch.ones(1, len(response_ids) + 1,
                                                                                dtype=torch.long), eos)
    assert query == [PROMPT + RESPONSE]  # the response's leading space kept, the closing EOS left out


def test_left_padding_and_padding_after_eos_are_not_in_the_query():
    tokenizer = metaspace_tokenizer()
    prompt_ids, response_ids = split_ids(tokenizer, PROMPT, RESPONSE)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = torch.tensor([[pad, pad] + prompt_ids])
    mask = torch.tensor([[0, 0] + [1] * len(prompt_ids)])
    responses = torch.tensor([response_ids + [eos, pad, pad]])
    action = torch.tensor([[1] * (len(response_ids) + 1) + [0, 0]])
    assert decode_queries(tokenizer, ids, mask, responses, action, eos) == [PROMPT + RESPONSE]


def test_generated_queries_are_the_whole_sequence_with_the_prompt_cut_from_the_left():
    tokenizer = metaspace_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    prompts = [PROMPT, "Hello there friend, what is 3 + 4?"]
    rollout = generate(model, tokenizer, prompts, max_new_tokens=6, temperature=1.0, prompt_max_len=5)
    input_ids, mask = tokenize_prompts(tokenizer, prompts, 5)
    for i, prompt in enumerate(prompts):
        kept = [t for t, m in zip(input_ids[i].tolist(), mask[i].tolist()) if m]
        assert len(kept) == 5 and kept == tokenizer(prompt, add_special_tokens=False)["input_ids"][-5:]
        response = [t for t, m in zip(rollout.sequences[i, input_ids.shape[1]:].tolist(),
                                      rollout.action_mask[i].tolist()) if m and t != tokenizer.eos_token_id]
        assert rollout.queries[i] == tokenizer.decode(kept + response)
        assert not rollout.queries[i].startswith(prompt[:10])  # the policy never saw the prompt's start
