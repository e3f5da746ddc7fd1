"""Every check that spans fields, in one place: what the four commands refuse, and what they warn is unused.

`problems(cfg)` gathers all of a command's mistakes (one message lists them all, never one per run); `unused(cfg)`
names options given that the chosen mode cannot use (a warning each at start). The sizes that need the dataset
(`check_sizes`, `check_eval`) run once the prompts are read, before Ray starts.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel

from rlhfctl.config.fields import Group, flag_name
from rlhfctl.config.groups import (CheckArgs, FunctionNameArgs, JudgeArgs, ModelLoadArgs, RemoteRewardArgs,
                                   RewardExecArgs, RewardModelArgs, RewardModelOptions, ServerArgs, VLLMEngineArgs)
from rlhfctl.config.train_groups import LoRAArgs, TrainArgs, VLLMArgs
from rlhfctl.config.verify_rules import Terms, bench_sandbox_problems, builtin_problems
from rlhfctl.config.actor_rules import (compile_problems, data_parallel_problems, lora_problems, ptx_problems,
                                        ptx_unused)
from rlhfctl.errors import ConfigError, UsageError
from rlhfctl.rewards.terms import has_function_term, has_judge_term, has_kind_term, has_model_term

if TYPE_CHECKING:
    from rlhfctl.config.commands import BenchRMConfig, CheckRewardConfig, ServeRMConfig, TrainPPOConfig


def _changed(group: type[Group], cfg: BaseModel, skip: tuple[str, ...] = ()) -> list[str]:
    """Fields of `group` whose value is not the default (a saved config repeats defaults, so "given" is not enough)."""
    fields = group.model_fields
    return [n for n in fields if n not in skip and getattr(cfg, n) != fields[n].default]


def _flag(group: type[Group], name: str) -> str:
    return flag_name(name, group.model_fields[name])


# ----------------------------------------------------------------------------------------------- per group
def pairwise_problems(rm: RewardModelOptions) -> list[str]:
    if rm.pairwise:
        return []
    return [f"{_flag(RewardModelOptions, n)} has no effect without --pairwise"
            for n in _changed(RewardModelOptions, rm) if n in ("pairwise_score", "pairwise_template")]


def responses_problems(check: CheckArgs) -> list[str]:
    kind, _, arg = check.responses.partition(":")
    if (kind in ("oracle", "shuffled") and not arg) or (kind in ("column", "model") and arg):
        return []
    return [f"--responses must be oracle, shuffled, column:NAME or model:DIR, not {check.responses!r}"]


def reward_exec_misused(exec_args: RewardExecArgs, is_function: bool, what: str, *,
                        also_for_urls: tuple[str, ...] = ()) -> list[str]:
    """Reward-function options given where no reward_func.py runs (they would do nothing); `also_for_urls` names
    options that act on a reward server too (check-reward's --reward-timeout)."""
    if is_function:
        return []
    return [f"{_flag(RewardExecArgs, n)} applies to a reward_func.py only, not to {what}"
            for n in _changed(RewardExecArgs, exec_args, also_for_urls)]


def judge_problems(judge: JudgeArgs) -> list[str]:
    """Judge options that contradict each other, name a bad file or value, or are given without a judge."""
    from rlhfctl.rewards.judge import JudgeSettings, chat_url

    changed = _changed(JudgeArgs, judge, ("judge_model", "judge_url"))
    if judge.judge is None:
        return [f"{_flag(JudgeArgs, n)} applies to an LLM judge (--judge-model or --judge-url) only" for n in changed]
    problems = []
    if judge.judge_model is not None and judge.judge_url is not None:
        problems.append("give one judge: --judge-model DIR or --judge-url URL, not both")
    if judge.judge_url is not None:
        try:
            chat_url(judge.judge_url)
        except UsageError as exc:
            problems.append(str(exc))
        if not judge.judge_api_model:
            problems.append("--judge-url needs --judge-api-model NAME: the model the server serves (its /v1/models "
                            "lists them)")
        problems += [f"{_flag(JudgeArgs, n)} applies to --judge-model only"
                     for n in ("judge_chat_template", "judge_max_len") if n in changed]
    else:
        problems += [f"{_flag(JudgeArgs, n)} applies to --judge-url only"
                     for n in ("judge_api_model", "judge_concurrency", "judge_rpm") if n in changed]
    other_mode = {"logprobs": ("judge_score_regex", "judge_max_new_tokens", "judge_fallback_reward"),
                  "generate": ("judge_score_tokens",)}[judge.judge_mode]
    problems += [f"{_flag(JudgeArgs, n)} has no effect with --judge-mode {judge.judge_mode}"
                 for n in other_mode if n in changed]
    try:
        JudgeSettings.from_config(judge)
    except UsageError as exc:
        problems.append(str(exc))
    return problems


def judge_term_problems(terms: Terms, judge: Optional[str]) -> list[str]:
    """A `judge` SOURCE needs --judge-model or --judge-url, and a judge given beside --reward must be one of its
    terms (else it would be loaded and never asked)."""
    if has_judge_term(terms) and judge is None:
        return ["a reward SOURCE `judge` is the LLM judge of --judge-model DIR or --judge-url URL: give one"]
    if terms is not None and judge is not None and not has_judge_term(terms):
        return ["--judge-model/--judge-url given, but no reward SOURCE is `judge`: add it as NAME=judge:WEIGHT"]
    return []


def _judge_all(cfg: JudgeArgs, terms: Terms) -> list[str]:
    return judge_problems(cfg) + judge_term_problems(terms, cfg.judge)


# ----------------------------------------------------------------------------------------------- per command
def serve_rm_problems(cfg: ServeRMConfig) -> list[str]:
    judge = None if has_judge_term(cfg.reward) else cfg.judge
    given = [v for v in (cfg.reward_pretrain, cfg.reward_func, cfg.reward, judge) if v is not None]
    if len(given) != 1:
        return ["give exactly one of --reward-pretrain DIR, --reward-func FILE.py, --judge-model DIR, --judge-url URL "
                "or --reward NAME=SOURCE:WEIGHT (repeatable)"]
    return (pairwise_problems(cfg)
            + reward_exec_misused(cfg, cfg.reward_func is not None or has_function_term(cfg.reward),
                                  "a reward model (--reward-pretrain)")
            + _judge_all(cfg, cfg.reward) + builtin_problems(cfg, cfg, cfg.reward) + backend_problems(cfg))


def backend_problems(cfg: ServeRMConfig) -> list[str]:
    """--backend vllm serves a one-label *ForSequenceClassification model on vLLM's pooling runner, or a
    --judge-model on its generate runner: every other source or model form needs --backend hf, and the vLLM engine
    options need --backend vllm."""
    if cfg.backend == "hf":
        return [f"{_flag(VLLMEngineArgs, n)} has no effect without --backend vllm"
                for n in _changed(VLLMEngineArgs, cfg)]
    hf_only = "; use --backend hf"
    problems = [f"--backend vllm serves a reward model (--reward-pretrain) or a --judge-model, not {what}{hf_only}"
                for what, given in (("a --reward-func", cfg.reward_func), ("a combined --reward", cfg.reward),
                                    ("a --judge-url client", cfg.judge_url)) if given is not None]
    for flag, given, why in (
            ("--pairwise", cfg.pairwise, "vLLM's pooling runner scores each text alone, a pairwise model compares two"),
            ("--trust-remote-code", cfg.trust_remote_code,
             "a model with its own code is read from a named output, which vLLM's pooling runner cannot return"),
            ("--reward-output", cfg.reward_output is not None,
             "vLLM's pooling runner returns the classification head's output only"),
            ("--value-head-prefix", cfg.value_head_prefix not in (None, "score"),
             "vLLM loads a *ForSequenceClassification model's `score` head, not an OpenRLHF value head"),
            ("--load-in-4bit", cfg.load_in_4bit, "bitsandbytes 4-bit loading is built for transformers only")):
        if given:
            problems.append(f"{flag} cannot be served with --backend vllm: {why}{hf_only}")
    return problems


def check_reward_problems(cfg: CheckRewardConfig) -> list[str]:
    problems = pairwise_problems(cfg) + responses_problems(cfg)
    if problems:
        return problems
    if cfg.prompt_data is None:
        return ["--prompt-data is required: the labels to check the reward against come from it"]
    if (cfg.reward is None) == (cfg.agent_func_path is None):
        return ["give exactly one of REWARD (a reward_func.py, reward server URL(s), a reward model folder, `judge`, "
                "or several as NAME=SOURCE:WEIGHT) or --agent-func-path agent_func.py"]
    if cfg.agent_func_path is not None:
        if cfg.responses.startswith("column:"):
            return ["--responses column:NAME cannot answer an environment turn by turn: with --agent-func-path use "
                    "oracle, shuffled, model:DIR or --pretrain DIR"]
        return []
    if cfg.apply_chat_template and cfg.pretrain is None and not cfg.responses.startswith("model:"):
        return ["--apply-chat-template needs --pretrain DIR (the tokenizer whose template train-ppo uses)"]
    return (reward_exec_misused(cfg, has_function_term(cfg.reward), "a reward server URL, model or judge",
                                also_for_urls=("reward_timeout",))
            + _judge_all(cfg, cfg.reward) + builtin_problems(cfg, cfg, cfg.reward))


def bench_rm_problems(cfg: BenchRMConfig) -> list[str]:
    problems = pairwise_problems(cfg)
    targets = [n for n, v in (("--url", cfg.url), ("--reward-pretrain", cfg.reward_pretrain),
                              ("--reward-func", cfg.reward_func), ("--reward", cfg.reward)) if v is not None]
    if len(targets) != 1:
        return problems + ["give exactly one target: --url URL, --reward-pretrain DIR, --reward-func FILE.py or "
                           "--reward NAME=SOURCE:WEIGHT" + (f" (got {', '.join(targets)})" if targets else "")]
    if cfg.in_process and cfg.url is not None:
        problems.append("--in-process scores without HTTP, so it needs --reward-pretrain or --reward-func, not --url")
    if cfg.min_tokens > cfg.max_tokens:
        problems.append(f"--min-tokens ({cfg.min_tokens}) is above --max-tokens ({cfg.max_tokens})")
    return problems + reward_exec_misused(cfg, cfg.reward_func is not None or has_function_term(cfg.reward),
                                          "--url or --reward-pretrain") + builtin_problems(cfg, cfg, cfg.reward) \
        + bench_sandbox_problems(cfg.reward)


def train_ppo_problems(cfg: TrainPPOConfig) -> list[str]:
    problems = pairwise_problems(cfg)
    if cfg.pretrain is None:
        problems.append("--pretrain is required: the policy to train")
    if cfg.prompt_data is None:
        problems.append("--prompt-data is required: the prompts to train on")
    judge = None if has_judge_term(cfg.reward) else cfg.judge
    rewards = [v for v in (cfg.remote_rm_url, cfg.reward_pretrain, cfg.reward, judge) if v is not None]
    if cfg.agent_func_path is not None:
        problems += _agent_problems(cfg)
    elif not rewards:
        problems.append("give a reward: --remote-rm-url URL[,URL...] or reward_func.py, --reward-pretrain DIR, a judge "
                        "(--judge-model DIR, --judge-url URL), --reward NAME=SOURCE:WEIGHT (repeatable), or an "
                        "environment: --agent-func-path agent_func.py")
    elif cfg.reward is not None and len(rewards) > 1:
        problems.append("--reward names all of the run's reward: put --remote-rm-url, --reward-pretrain or the judge "
                        "in as --reward NAME=SOURCE:WEIGHT (a judge's SOURCE is the word judge)")
    elif judge is not None and len(rewards) > 1:
        problems.append("a judge (--judge-model, --judge-url) is the run's reward: drop --remote-rm-url and "
                        "--reward-pretrain, or combine them with --reward NAME=SOURCE:WEIGHT")
    problems += _judge_all(cfg, cfg.reward) + builtin_problems(cfg, cfg, cfg.reward)
    if cfg.advantage_estimator in ("rloo", "reinforce_baseline", "group_norm", "dr_grpo") \
            and cfg.n_samples_per_prompt < 2:
        problems.append(f"--advantage-estimator {cfg.advantage_estimator} compares the samples of one prompt, so it "
                        f"needs --n-samples-per-prompt of at least 2 (got {cfg.n_samples_per_prompt})")
    worlds = {cfg.actor_world_size: ""}
    if cfg.advantage_estimator == "gae":  # the critic trains on the same batches with workers of its own
        worlds.setdefault(cfg.critic_num_nodes * cfg.critic_num_gpus_per_node, " (the critic's)")
    problems += data_parallel_problems(cfg.slice(TrainArgs), worlds)
    if cfg.save_steps == 0 or cfg.save_steps < -1:
        problems.append(f"--save-steps must be a positive number of steps, or -1 (got {cfg.save_steps})")
    if cfg.eval_steps == 0 or cfg.eval_steps < -1:
        problems.append(f"--eval-steps must be a positive number of steps, or -1 (got {cfg.eval_steps})")
    lo, hi = cfg.reward_clip_range
    if not lo < hi:
        problems.append(f"--reward-clip-range needs LOW < HIGH (got {lo},{hi})")
    problems += _algorithm_problems(cfg) + _vllm_problems(cfg) + _async_problems(cfg) \
        + compile_problems(cfg.slice(TrainArgs), cfg.torch_compile) + lora_problems(
        cfg.slice(LoRAArgs), four_bit_zero3=cfg.load_in_4bit and cfg.engine == "deepspeed" and cfg.zero_stage == 3,
        ema=cfg.enable_ema)
    is_function = (cfg.remote_rm_url is not None and cfg.remote_rm_url.strip().endswith(".py")) \
        or has_function_term(cfg.reward)
    return problems + reward_exec_misused(cfg, is_function, "a reward server URL or --reward-pretrain")


def _agent_problems(cfg: TrainPPOConfig) -> list[str]:
    """With --agent-func-path the environment gives the reward; a second reward would be ignored (OpenRLHF ignores
    --remote_rm_url then), so it is refused instead. An environment can call a reward server itself."""
    given = [flag for flag, value in (("--remote-rm-url", cfg.remote_rm_url), ("--reward-pretrain", cfg.reward_pretrain),
                                      ("--judge-model/--judge-url", cfg.judge)) if value is not None]
    if given:
        return [f"--agent-func-path: the environment gives the rewards, so {' and '.join(given)} would not be used; "
                "give one or the other (an environment's step() may call a reward server itself)"]
    return []


def _algorithm_problems(cfg: TrainPPOConfig) -> list[str]:
    """The policy-optimisation options that only make sense together or within bounds."""
    problems = []
    if cfg.eps_clip_low_high is not None and min(cfg.eps_clip_low_high) < 0:
        problems.append(f"--eps-clip-low-high needs LOW, HIGH >= 0 (got {cfg.eps_clip_low_high})")
    if cfg.dynamic_filtering:
        lo, hi = cfg.dynamic_filtering_reward_range
        if not lo < hi:
            problems.append(f"--dynamic-filtering-reward-range needs LOW < HIGH (got {lo},{hi})")
        if cfg.n_samples_per_prompt < 2:
            problems.append("--dynamic-filtering keeps or drops groups of samples of one prompt, so it needs "
                            f"--n-samples-per-prompt of at least 2 (got {cfg.n_samples_per_prompt})")
    if cfg.overlong_buffer_len is not None and cfg.overlong_buffer_len > cfg.generate_max_len:
        problems.append(f"--overlong-buffer-len ({cfg.overlong_buffer_len:g}) is more than --generate-max-len "
                        f"({cfg.generate_max_len})")
    if cfg.stop_properly_penalty_coef is not None and cfg.stop_properly_penalty_coef > 1:
        problems.append("--stop-properly-penalty-coef must be in [0, 1] (a scale) or negative (a fixed reward), got "
                        f"{cfg.stop_properly_penalty_coef:g}")
    lo, hi = cfg.vllm_is_truncated_threshold
    if not 0 <= lo < hi:
        problems.append(f"--vllm-is-truncated-threshold needs 0 <= LOW < HIGH (got {lo},{hi})")
    if cfg.dual_clip is not None and cfg.policy_loss_type == "cispo":
        problems.append("--dual-clip bounds PPO's clipped objective; --policy-loss-type cispo has none to bound")
    fields = type(cfg).model_fields
    for option, needs in (("overlong_penalty_factor", "overlong_buffer_len"), ("ema_beta", "enable_ema"),
                          ("dynamic_filtering_reward_range", "dynamic_filtering"),
                          ("dynamic_filtering_max_rounds", "dynamic_filtering"),
                          ("vllm_is_truncated_threshold", "enable_vllm_is_correction"),
                          ("vllm_is_correction_type", "enable_vllm_is_correction")):
        if getattr(cfg, needs) in (None, False) and getattr(cfg, option) != fields[option].default:
            problems.append(f"--{option.replace('_', '-')} has no effect without --{needs.replace('_', '-')}")
    if cfg.freezing_actor_steps > 0 and cfg.advantage_estimator != "gae":
        problems.append(f"--freezing-actor-steps {cfg.freezing_actor_steps} warms up the critic, which only gae has "
                        f"(--advantage-estimator is {cfg.advantage_estimator}): nothing would train")
    return problems + ptx_problems(cfg)


def _vllm_problems(cfg: TrainPPOConfig) -> list[str]:
    """vLLM options need engines, and only what the engines can honour."""
    if cfg.vllm_num_engines:
        return []
    return [f"{_flag(VLLMArgs, name)} has no effect without --vllm-num-engines (rollouts use Hugging Face generate "
            "on the actor workers)" for name in _changed(VLLMArgs, cfg)]


def _async_problems(cfg: TrainPPOConfig) -> list[str]:
    """--async-train overlaps the engines' generation with training (without engines the actors would do both)."""
    if not cfg.async_train:
        return ([] if cfg.async_queue_size == 1 else ["--async-queue-size has no effect without --async-train"]) + (
            ["--partial-rollout needs --async-train (else no sync lands mid-generation)"] * cfg.partial_rollout)
    if not cfg.vllm_num_engines:
        return ["--async-train needs --vllm-num-engines >= 1: with Hugging Face generate the actor workers both "
                "generate and train, so generation cannot overlap training"]
    return []


# ----------------------------------------------------------------------------------------------- with the data
def check_sizes(cfg: TrainPPOConfig, num_prompts: int) -> None:
    """The rollout batch against the prompts read: more prompts than there are, or not whole prompts per worker."""
    if num_prompts < cfg.rollout_batch_size:
        raise ConfigError(f"--rollout-batch-size ({cfg.rollout_batch_size}) is more than the {num_prompts} prompts "
                          f"in {cfg.prompt_data}: lower it, or add prompts")
    if cfg.rollout_batch_size % cfg.actor_world_size:
        raise ConfigError(f"--rollout-batch-size ({cfg.rollout_batch_size}) must be a multiple of the actor's "
                          f"data-parallel size ({cfg.actor_world_size}), so every worker gets whole prompts")
    rows = cfg.rollout_batch_size * cfg.n_samples_per_prompt * cfg.max_epochs
    if rows % cfg.train_batch_size:
        warnings.warn(f"each step trains on {rows} samples (--rollout-batch-size x --n-samples-per-prompt x "
                      f"--max-epochs), not a multiple of --train-batch-size {cfg.train_batch_size}: optimizer "
                      "updates will straddle steps", stacklevel=3)


def check_eval(cfg: TrainPPOConfig, num_prompts: int) -> None:
    if num_prompts < cfg.actor_world_size:
        raise ConfigError(f"--eval-dataset has {num_prompts} prompt(s), fewer than the {cfg.actor_world_size} actor "
                          "workers that sample them: give at least one per worker (--eval-max-samples)")
    if cfg.eval_temperature == 0 and cfg.eval_n_samples_per_prompt > 1:
        warnings.warn(f"--eval-temperature 0 is greedy: the {cfg.eval_n_samples_per_prompt} samples per prompt "
                      "(--eval-n-samples-per-prompt) will be identical", stacklevel=3)


# ----------------------------------------------------------------------------------------------- unused options
_MODEL_ONLY = (set(ModelLoadArgs.model_fields) | set(RewardModelArgs.model_fields)
               | {"batch_size", "max_batch_tokens"}) - {"reward_pretrain"}
Unused = list[tuple[set[str], str]]


def serve_rm_unused(cfg: ServeRMConfig) -> Unused:
    rules: Unused = []
    if cfg.reward_func is not None:
        rules.append((_MODEL_ONLY, "acts on a reward model (--reward-pretrain) only; a --reward-func does not use it"))
    if cfg.judge_model is not None:
        rules.append((set(RewardModelArgs.model_fields) - {"reward_pretrain"},
                      "acts on a reward model (--reward-pretrain) only; a --judge-model does not use it"))
    if cfg.judge_url is not None:
        rules.append((_MODEL_ONLY, "acts on a model loaded here; --judge-url's server runs its own"))
    elif not has_kind_term(cfg.reward, "url"):
        rules.append((set(RemoteRewardArgs.model_fields), "acts on a reward server client only (--judge-url, or a "
                                                          "--reward term's URLs)"))
    if cfg.backend == "vllm":
        rules.append(({"max_wait_ms"}, "paces serve-rm's own batcher (--backend hf); vLLM's scheduler batches "
                                       "continuously"))
        rules.append(({"num_threads"}, "sets torch's threads for --backend hf; vLLM sizes its workers' threads "
                                       "itself"))
        rules.append(({"flash_attn"}, "vLLM picks its own attention kernels"))
    return rules + _no_model_term(cfg.reward)


def _no_model_term(terms: Terms) -> Unused:
    if terms is not None and not has_model_term(terms):
        return [(_MODEL_ONLY, "acts on a reward model only, and no SOURCE of --reward is a model")]
    return []


def bench_rm_unused(cfg: BenchRMConfig) -> Unused:
    rules = _no_model_term(cfg.reward)
    if cfg.url is not None:
        rules.append((_MODEL_ONLY | set(ServerArgs.model_fields) | set(FunctionNameArgs.model_fields),
                      "applies to a serve-rm that bench-rm starts (--reward-pretrain/--reward-func); --url's server "
                      "keeps its own"))
    return rules


def check_reward_unused(cfg: CheckRewardConfig) -> Unused:
    rules: Unused = [({"rm_timeout"}, "check-reward bounds every reward call, a server's answer too, by "
                                      "--reward-timeout")]
    if not has_model_term(cfg.reward):
        rules.append((set(RewardModelOptions.model_fields), "acts on a reward model only, and the reward checked "
                                                            "names none"))
    if cfg.agent_func_path is not None or not cfg.responses.startswith("model:"):
        rules.append(({"torch_compile"}, "acts where check-reward samples responses in one shot from a policy "
                                            "(--responses model:DIR without --agent-func-path) only"))
    return rules


def train_ppo_unused(cfg: TrainPPOConfig) -> Unused:
    rules: Unused = ptx_unused(cfg)
    if (cfg.reward_pretrain is None and not has_model_term(cfg.reward)) or cfg.remote_rm_url is not None:
        unused = set(RewardModelArgs.model_fields) - {"reward_pretrain"}
        if cfg.advantage_estimator == "gae":  # the critic finds its value head by this name
            unused.discard("value_head_prefix")
        rules.append((unused, "acts on a local reward model that scores the samples (--reward-pretrain without "
                              "--remote-rm-url) only; a reward server or function applies its own (serve-rm takes "
                              "the same option)"))
    if not cfg.use_dynamic_batch:
        rules.append(({"train_max_tokens_per_gpu", "rollout_max_tokens_per_gpu"},
                      "a token budget acts with --use-dynamic-batch only; micro-batches are counts of samples"))
    if cfg.use_kl_loss and cfg.init_kl_coef == 0:
        rules.append(({"use_kl_loss"}, "the KL loss is weighted by --init-kl-coef, which is 0: no reference model is "
                                       "loaded and no KL term is added"))
    return rules


def unused_messages(cfg: BaseModel, rules: Unused) -> list[str]:
    """One warning per option the user gave that a rule says the chosen mode cannot use."""
    fields = type(cfg).model_fields
    return [f"{flag_name(name, fields[name])}: {why}" for unused, why in rules for name in fields
            if name in unused and name in cfg.model_fields_set]
