"""check-reward from start to finish: load, data, responses, contract run, control run, behaviour checks."""

from __future__ import annotations

from rlhfctl.checks import behaviour
from rlhfctl.checks.report import Report
from rlhfctl.checks.samples import Sample, build_samples, control_samples, load_examples
from rlhfctl.checks.scoring import Progress, Run, score_run
from rlhfctl.checks.source import describe, open_combined_checked, open_function, open_server, single_source, url_list
from rlhfctl.config import (CheckArgs, CheckRewardConfig, CombinedRewardArgs, RewardExecArgs, RolloutArgs,
                            RunArgs)
from rlhfctl.config.reward_groups import SourceGroups
from rlhfctl.config.slices import CheckSampleGroups
from rlhfctl.rewards.base import RewardSource


CONTROL_SAMPLES = 1024  # the separation check needs a fair sample of mismatched answers, not the whole dataset


def run_checks(cfg: CheckRewardConfig, progress: Progress | None = None) -> Report:
    """Every check of check-reward on `cfg`; the report says what passed, warned and failed.

    Usage errors (unreadable data, a missing column) raise UsageError; everything the reward does wrong is a
    failed check in the report, never an exception. `progress(run, done, total)` is called before each call.
    """
    from rlhfctl.config.hub_ids import resolve_fields

    spec = single_source(cfg.slice(CombinedRewardArgs))
    report = Report(reward=spec or describe(cfg.slice(CombinedRewardArgs)), responses=cfg.responses)
    cfg = resolve_fields(cfg, ["responses", "judge_model"] + (["pretrain"] if cfg.apply_chat_template else []))
    urls = url_list(spec) if spec else None
    source: RewardSource | None = None
    if spec is None:
        source = open_combined_checked(cfg.slice(CombinedRewardArgs), SourceGroups.of(cfg), report)
        if source is None:
            return report
    elif urls is None:
        source = open_function(SourceGroups.of(cfg), cfg.slice(CheckArgs), spec, report)
        if source is None:
            return report
    try:
        examples = load_examples(CheckSampleGroups.of(cfg), report)
        if not examples:
            return report
        samples = build_samples(examples, CheckSampleGroups.of(cfg))
        if urls is not None:
            source = open_server(SourceGroups.of(cfg), urls, report, samples[0])
            if source is None:
                return report
        assert source is not None
        _score(report, source, samples, cfg, progress)
    finally:
        if source is not None:
            source.close()
    return report


def _score(report: Report, source: RewardSource, samples: list[Sample], cfg: CheckRewardConfig,
           progress: Progress | None) -> None:
    # As train-ppo calls a reward: a micro-rollout batch of prompts with all their samples (whole groups, which a
    # pairwise reward compares); responses from a dataset have one sample per prompt.
    per_prompt = cfg.n_samples_per_prompt if cfg.responses.startswith("model:") else 1
    size = cfg.micro_rollout_batch_size * per_prompt
    main = score_run(source, samples, size, "main", cfg.reward_timeout, progress)
    runs = [main]
    control: Run | None = None
    matched_is_main = True
    pair = control_samples(samples[:CONTROL_SAMPLES], cfg.slice(CheckArgs), cfg.slice(RunArgs)) if main.values and not main.timed_out else None
    if pair is not None:
        control_list, matched_is_main = pair
        control = score_run(source, control_list, size, "control", cfg.reward_timeout, progress)
        runs.append(control)
    behaviour.failure_checks(report, runs, size, cfg.reward_timeout,
                             ignored_keys=sorted(source.ignored_keys), per_sample=bool(source.per_sample),
                             strict=cfg.strict)
    behaviour.statistics_of(report, main, cfg.slice(CheckArgs))
    if not main.values:
        return
    if any(run.timed_out for run in runs):
        report.add("determinism", "skip", "not run: a call reached the timeout")
        report.add("separation", "skip", "not run: a call reached the timeout")
    else:
        behaviour.determinism_check(report, source, main, size, cfg.slice(CheckArgs))
        if cfg.label_key is None:
            report.add("separation", "skip", "no --label-key: nothing to separate by")
        else:
            behaviour.separation_check(report, main, control, matched_is_main, cfg.slice(CheckArgs))
    behaviour.value_checks(report, runs, cfg.slice(CheckArgs))
    behaviour.pairwise_check(report, source, samples)
    behaviour.speed_check(report, runs, cfg.slice(CheckArgs), cfg.slice(RolloutArgs), cfg.slice(RewardExecArgs))
