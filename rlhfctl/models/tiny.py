"""Tiny models and tokenizers built offline, for tests, benchmarks and the demo.

Nothing here downloads anything: the tokenizer is trained in milliseconds on a corpus generated in code, and the
models are randomly initialised Llamas. Everything is deterministic for a seed, so two runs (or two test workers)
build byte-identical folders, and every folder loads offline with the `Auto*` classes.

Why this is in the installed package rather than under tests/: the benchmarks, the arithmetic example's
train_models.py and the GPU check script (shared/gpu/check.sh, run from a `pip install` of the project) build their
models with it, and a user can build the same tiny policy and reward model to smoke-test a cluster or a launch
script before pointing it at real weights. It is imported by nothing on a command's path, so `rlhfctl --help` and
every subcommand load without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    PreTrainedTokenizerFast,
)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Role markers are special tokens, so the chat template renders with any vocabulary (the char tokenizer included).
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
MIN_HEAD_DIM = 32  # vLLM's CPU attention kernels reject smaller heads.

_WORDS = (
    "the a an one two three four five six seven eight nine ten is are was were be has have had do does did "
    "what which who when where why how can could will would should may might must not no yes and or but if "
    "then so because of to in on at by for with from about into over under after before between answer "
    "question number sum total add plus minus times equals result model reward policy train value score "
    "good bad better best small large tiny fast slow first last next step think reason explain show write "
    "read say tell give make take find check count list word text line story cat dog bird tree house river "
    "city water light dark red blue green day night time year people world work play learn know want need"
).split()


def _corpus(seed: int, n_lines: int = 1500) -> list[str]:
    """English-ish sentences, arithmetic and chat-like lines: enough variety for a few hundred BPE merges."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        kind = i % 3
        if kind == 0:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
        elif kind == 1:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            op = rng.choice("+-*")
            lines.append(f"What is {a} {op} {b}? The answer is {eval(f'{a}{op}{b}')}.")  # noqa: S307 (our own ints)
        else:
            lines.append(f"User: {rng.choice(_WORDS)} {rng.choice(_WORDS)}?\nAssistant: {rng.choice(_WORDS)}.")
    return lines


def _wrap(tok: Tokenizer, *, unk: bool = False) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` for transformers, with our special tokens and chat template."""
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK if unk else None,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a built-in corpus (deterministic, well under a second).

    Byte-level means any text encodes without unknown tokens, as with real Llama/Qwen tokenizers. Ids 0, 1, 2 are
    `<pad>`, `<s>`, `</s>`; the role markers follow. Plain text is encoded without BOS/EOS; the chat template adds
    them, so a prompt formatted with the template and tokenized again gets exactly one BOS.
    """
    specials = [PAD, BOS, EOS, *ROLE_TOKENS]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(specials) + len(alphabet):
        raise ValueError(f"vocab_size must be >= {len(specials) + len(alphabet)} (256 bytes + special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=sorted(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    return _wrap(tok)


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: every character of `alphabet` is one token, anything else is `<unk>`.

    For the arithmetic demo, where a tiny policy learns faster when "123" is three tokens. It is a BPE model with
    no merges and no pre-tokenizer, so each character maps to its own id and decoding just joins them.
    """
    chars = list(dict.fromkeys(alphabet))  # de-duplicate, keep order: ids follow the alphabet
    if not chars:
        raise ValueError("alphabet must contain at least one character")
    specials = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return _wrap(tok, unk=True)


@dataclass(frozen=True)
class TinyArch:
    """The size and seed of a tiny Llama (policy or reward model); head_dim must be at least MIN_HEAD_DIM."""

    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int | None = None  # default 4 x hidden_size
    max_position_embeddings: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        head_dim = self.hidden_size // self.num_heads
        if head_dim < MIN_HEAD_DIM:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {head_dim} < {MIN_HEAD_DIM}: vLLM's CPU attention needs "
                f"head_dim >= {MIN_HEAD_DIM}; use fewer heads or a larger hidden_size"
            )

    def tokenizer(self) -> PreTrainedTokenizerFast:
        return build_tokenizer(self.vocab_size, self.seed)

    def llama_config(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size or 4 * self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
            torch_dtype="float32",
        )


def _save(model: nn.Module, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path, max_len: int) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = max_len
    tokenizer.save_pretrained(out)
    return out


def make_tiny_policy(out_dir: str | Path, arch: TinyArch = TinyArch()) -> Path:
    """Save a randomly initialised LlamaForCausalLM and its tokenizer (safetensors) to `out_dir`; return the path.

    The same seed gives identical weights; the global torch RNG is left as it was.
    """
    tokenizer = arch.tokenizer()
    config = arch.llama_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        model = LlamaForCausalLM(config)
    return _save(model, tokenizer, out_dir, arch.max_position_embeddings)


class RewardModel(LlamaPreTrainedModel):
    """OpenRLHF's reward-model layout (`openrlhf.models.model._get_reward_model`), used here only to save one.

    Keys: the base model under `model.` (Llama's base_model_prefix) and `{value_head_prefix}.weight` for a
    `Linear(hidden, 1, bias=False)` head. OpenRLHF's class has the same name, so `architectures` matches too.
    """

    def __init__(self, config: LlamaConfig, value_head_prefix: str = "score") -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.value_head_prefix = value_head_prefix
        setattr(self, value_head_prefix, nn.Linear(config.hidden_size, 1, bias=False))
        self.post_init()


def make_tiny_reward_model(
    out_dir: str | Path,
    arch: TinyArch = TinyArch(),
    *,
    format: Literal["seqcls", "openrlhf"] = "seqcls",  # noqa: A002 (the name users pass)
    value_head_prefix: str = "score",
    normalize_reward: bool = False,
    mean: float = 0.0,
    std: float = 1.0,
) -> Path:
    """Save a tiny reward model in one of the two layouts a reward server must read; return the path.

    "seqcls": LlamaForSequenceClassification (num_labels=1, pad_token_id set), the Hugging Face layout.
    "openrlhf": what OpenRLHF's reward training saves: `model.*` + `{value_head_prefix}.weight`, with
    `normalize_reward`, `mean`, `std` and `value_head_prefix` in config.json (OpenRLHF computes
    (reward - mean) / std at inference when normalize_reward is set). Both layouts carry those config fields.

    For one seed both formats hold the same weights (the openrlhf one is the seqcls one re-keyed), so they give
    the same raw reward for a text. The head is initialised with std 1/sqrt(hidden) rather than 0.02 so rewards
    of different texts differ visibly.
    """
    if format not in ("seqcls", "openrlhf"):
        raise ValueError(f"format must be 'seqcls' or 'openrlhf', not {format!r}")
    if format == "seqcls" and value_head_prefix != "score":
        raise ValueError("a seqcls reward model's head is always 'score'; value_head_prefix is for format='openrlhf'")
    if std <= 0:
        raise ValueError(f"std must be > 0, not {std}")
    tokenizer = arch.tokenizer()
    config = arch.llama_config(tokenizer)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        seqcls = LlamaForSequenceClassification(config)
        nn.init.normal_(seqcls.score.weight, mean=0.0, std=arch.hidden_size**-0.5)
        model: nn.Module = seqcls
        if format == "openrlhf":
            model = RewardModel(config, value_head_prefix)
            state = seqcls.state_dict()
            state[f"{value_head_prefix}.weight"] = state.pop("score.weight")
            model.load_state_dict(state, strict=True)
    model.config.normalize_reward = bool(normalize_reward)
    model.config.mean = float(mean)
    model.config.std = float(std)
    model.config.value_head_prefix = value_head_prefix
    return _save(model, tokenizer, out_dir, arch.max_position_embeddings)
