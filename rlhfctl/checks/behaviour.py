"""Turning scored runs into checks: the contract (type, length, finite values), exceptions, the timeout, and the
behaviour checks (deterministic, not constant, not all zeros, reads the labels, fast enough), plus statistics.

Behaviour findings are warnings unless --strict, which makes them failures; contract breaks, exceptions and
timeouts always fail, since training would stop on them (or, worse in older frameworks, turn them into zeros).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from rlhfctl.checks.report import Report, finding
from rlhfctl.checks.samples import Sample
from rlhfctl.checks.scoring import Fault, Run, call, sample_of
from rlhfctl.config import CheckArgs, RewardExecArgs, RolloutArgs
from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardSource

# The reward failed to run (vs. ran and broke the contract); "crashed": its worker process died.
CALL_KINDS = {"raised", "http", "error", "unreachable", "crashed"}
SHOW = 5  # failing samples detailed per check
ATOL, RTOL = 1e-6, 1e-5  # "the same reward" for the determinism check


# ------------------------------------------------------------------------------------------------ contract
def failure_checks(report: Report, runs: list[Run], batch_size: int, timeout: float, *,
                   ignored_keys: Sequence[str] = (), per_sample: bool = False, strict: bool = False) -> None:
    """The contract, exceptions and timeout checks, from every call made in every run. `ignored_keys`: dict keys
    the function returned that OpenRLHF (and rlhfctl) ignore, a warning; `per_sample`: it was called per sample."""
    faults = [(run, f) for run in runs for f in run.faults]
    calls = sum(len(run.call_seconds) for run in runs)
    returned = calls - len({(run.name, f.batch) for run, f in faults if f.kind != "timeout"})
    contract = [(r, f) for r, f in faults if f.kind not in CALL_KINDS and f.kind != "timeout"]
    raised = [(r, f) for r, f in faults if f.kind in CALL_KINDS]
    timeouts = [(r, f) for r, f in faults if f.kind == "timeout"]
    if contract:
        report.add("contract", "fail", _summary(contract, calls), [sample_of(r, f) for r, f in contract[:SHOW]])
    elif returned:
        extra = sorted({k for run in runs for k in run.extra_logs})
        logs = f"; extra_logs: {', '.join(extra)}" if extra else ""
        how = (" (called once per sample: it returns one value per call, as OpenRLHF v0.11 reward functions do)"
               if per_sample else "")
        if ignored_keys:
            keys = ", ".join(map(repr, ignored_keys))
            report.add("contract", finding(strict), f"it returns dict keys that are ignored: {keys} (OpenRLHF reads "
                       "only 'rewards', 'scores' and 'extra_logs'; a misspelt key is lost silently there)")
        else:
            report.add("contract", "pass", f"{returned} calls of up to {batch_size} queries each returned one "
                       f"finite reward per query{logs}{how}")
    if raised:
        report.add("exceptions", "fail", _summary(raised, calls), [sample_of(r, f) for r, f in raised[:SHOW]])
    elif calls:
        report.add("exceptions", "pass", f"no call raised ({calls} calls)")
    if timeouts:
        run, fault = timeouts[0]
        start, end = fault.batch
        left = sum(r.unscored + f.batch[1] - f.batch[0] for r, f in timeouts)
        report.add("timeout", "fail",
                   f"{fault.message} (samples {start}-{end - 1} of the {run.name} run); stopped there, "
                   f"{left} samples not scored", [sample_of(run, fault)])
    else:
        slowest = max((s for run in runs for _, s in run.call_seconds), default=0.0)
        report.add("timeout", "pass",
                   f"no call reached the --reward-timeout of {timeout:g}s (slowest {_secs(slowest)})")


def _summary(faults: list[tuple[Run, Fault]], calls: int) -> str:
    """The first fault in full, where it happened, and how widespread the problem is."""
    run, first = faults[0]
    if first.sample is not None:
        s = run.samples[first.sample]
        where = f"sample {s.index} (row {s.row}, label {_short(s.label)})"
    else:
        where = f"samples {first.batch[0]}-{first.batch[1] - 1}"
        if first.kind == "raised":
            where += " (no sample fails alone: the failure depends on the batch)"
    if run.name == "control":
        where += " with another row's label"
    failed = len({(r.name, f.batch) for r, f in faults})
    return f"{where}: {first.message}; {failed} of {calls} calls failed"


# ------------------------------------------------------------------------------------------------ behaviour
def determinism_check(report: Report, source: RewardSource, run: Run, batch_size: int, check: CheckArgs) -> None:
    """Score the first batch that succeeded again: the same queries must get the same rewards."""
    span = run.first_good_batch(batch_size)
    if span is None:
        report.add("determinism", "skip", "no batch was scored, so none could be scored twice")
        return
    start, end = span
    try:
        again = call(source, run.samples[start:end]).rewards
    except RewardError as exc:
        report.add("determinism", "fail", f"scoring samples {start}-{end - 1} a second time failed: "
                   f"{getattr(exc, 'problem', exc)}")
        return
    first = run.rewards[start:end]
    diffs = [(start + i, a, b) for i, (a, b) in enumerate(zip(first, again))
             if a is not None and not math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)]
    if diffs:
        i, a, b = diffs[0]
        report.add("determinism", finding(check.strict),
                   f"the same batch scored twice gave different rewards for {len(diffs)} of {end - start} samples "
                   f"(sample {i}: {a:.6g} then {b:.6g}); a reward that changes by itself is noise to PPO "
                   "(seed any sampling, or score at temperature 0)")
    else:
        report.add("determinism", "pass", f"samples {start}-{end - 1} scored twice gave the same rewards")


def pairwise_check(report: Report, source: RewardSource, samples: list[Sample]) -> None:
    """A pairwise reward needs several responses per prompt: with one, every reward is the neutral value."""
    if not source.pairwise:
        return
    sizes: dict[str, int] = {}
    for sample in samples:
        sizes[sample.prompt] = sizes.get(sample.prompt, 0) + 1
    if max(sizes.values(), default=0) < 2:
        report.add("pairwise", "warn", "a pairwise reward compares the responses to one prompt, and each prompt here "
                   "has one, so every reward is the neutral value: give several, e.g. --responses model:DIR "
                   "--n-samples-per-prompt 4")
    else:
        report.add("pairwise", "pass", f"{min(sizes.values())}-{max(sizes.values())} responses per prompt compared "
                   "with each other")


def value_checks(report: Report, runs: list[Run], check: CheckArgs) -> None:
    """Constant and all-zero rewards, over every sample scored (main and control runs)."""
    values = [v for run in runs for v in run.values]
    if len(values) < 2:
        report.add("constant", "skip", "fewer than 2 rewards were scored")
        report.add("zeros", "skip", "fewer than 2 rewards were scored")
        return
    lo, hi = min(values), max(values)
    if lo == hi == 0:
        report.add("zeros", finding(check.strict),
                   f"every reward is 0 ({len(values)} samples, right and wrong answers alike): a reward that "
                   "never rises teaches nothing; is a parse failing, or an exception swallowed into 0?")
        report.add("constant", "skip", "every reward is 0 (see zeros)")
        return
    nonzero = sum(1 for v in values if v != 0)
    report.add("zeros", "pass", f"{nonzero} of {len(values)} rewards are non-zero")
    if math.isclose(lo, hi, rel_tol=1e-9, abs_tol=1e-12):
        report.add("constant", finding(check.strict),
                   f"every reward is {lo:.6g} ({len(values)} samples, right and wrong answers alike): a constant "
                   "reward gives PPO no signal")
    else:
        report.add("constant", "pass", f"rewards range from {lo:.4g} to {hi:.4g}")


def separation_check(report: Report, main: Run, control: Run | None, matched_is_main: bool, check: CheckArgs) -> None:
    """Answers scored against their own label must beat the same kind of answers scored against another row's."""
    if control is None:
        report.add("separation", "skip", "needs at least 2 rows with different labels")
        return
    matched, mismatched = (main, control) if matched_is_main else (control, main)
    pairs = [(a, b) for a, b in zip(matched.rewards, mismatched.rewards) if a is not None and b is not None]
    if len(pairs) < 2:
        report.add("separation", "skip", "fewer than 2 samples were scored in both runs")
        return
    right = [a for a, _ in pairs]
    wrong = [b for _, b in pairs]
    m_right, m_wrong = statistics.fmean(right), statistics.fmean(wrong)
    diff = m_right - m_wrong
    se = math.sqrt(statistics.pvariance(right) / len(pairs) + statistics.pvariance(wrong) / len(pairs))
    report.stats["separation"] = {"matched_mean": m_right, "mismatched_mean": m_wrong, "difference": diff,
                                  "standard_error": se, "samples": len(pairs)}
    figures = f"mean with the right labels {m_right:.4g}, with shuffled labels {m_wrong:.4g} (difference {diff:+.4g})"
    if diff > 1e-9 and diff > 2 * se:
        report.add("separation", "pass", f"{figures}: the reward reads the labels")
    elif diff < -1e-9 and -diff > 2 * se:
        report.add("separation", finding(check.strict),
                   f"{figures}: wrong answers score HIGHER than right ones; is the comparison inverted?")
    else:
        report.add("separation", finding(check.strict),
                   f"no separation: {figures}; does your reward look at the labels?")


def speed_check(report: Report, runs: list[Run], check: CheckArgs, rollout: RolloutArgs,
                exec_args: RewardExecArgs) -> None:
    """Per-sample time, the slowest call, and what that means for one rollout batch of training."""
    calls = [(n, s) for run in runs for n, s in run.call_seconds]
    if not calls:
        report.add("speed", "skip", "no call finished")
        return
    total_n = sum(n for n, _ in calls)
    per_sample = sum(s for _, s in calls) / total_n
    slowest = max(s for _, s in calls)
    rollout_samples = rollout.rollout_batch_size * rollout.n_samples_per_prompt
    projected = per_sample * rollout_samples
    timeout = exec_args.reward_timeout
    report.timing.update(calls=len(calls), per_sample_s=per_sample, slowest_call_s=slowest,
                         rollout_samples=rollout_samples, projected_rollout_batch_s=projected, timeout_s=timeout)
    figures = (f"{_secs(per_sample)} per sample, slowest call {_secs(slowest)}; about {_secs(projected)} of reward "
               f"time per rollout batch of {rollout_samples} samples, called one batch at a time")
    if slowest > timeout / 2:
        report.add("speed", finding(check.strict),
                   f"slow: the slowest call took {_secs(slowest)}, over half the --reward-timeout of {timeout:g}s; "
                   f"{figures}")
    else:
        report.add("speed", "pass", figures)


# ------------------------------------------------------------------------------------------------ figures
def statistics_of(report: Report, run: Run, check: CheckArgs, bins: int = 10, worst: int = 5) -> None:
    """Reward statistics, a histogram and the samples most worth a look (lowest rewards; highest when the
    responses are deliberately wrong, --responses shuffled)."""
    values = run.values
    report.stats.update(samples=len(run.samples), scored=len(values))
    if not values:
        return
    report.stats.update(
        mean=statistics.fmean(values), std=statistics.pstdev(values), min=min(values),
        median=statistics.median(values), max=max(values),
    )
    logs = {}
    for key, column in run.extra_logs.items():
        present = [v for v in column if v is not None and not math.isnan(v)]
        if present:
            logs[key] = statistics.fmean(present)
    if logs:
        report.stats["extra_logs_mean"] = logs
    report.histogram = histogram(values, bins)
    if min(values) == max(values):
        return  # no sample stands out
    highest_first = check.responses == "shuffled"
    ranked = sorted(run.scored, key=lambda pair: pair[1], reverse=highest_first)[:worst]
    report.worst = [_sample_row(s, r, run) for s, r in ranked]


def histogram(values: list[float], bins: int) -> dict[str, Any]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": [lo + i * width for i in range(bins)] + [hi], "counts": counts}


def _sample_row(sample: Sample, reward: float, run: Run) -> dict[str, Any]:
    row: dict[str, Any] = {"sample": sample.index, "row": sample.row, "reward": reward, "label": sample.label,
                           "response": sample.response}
    logs = {k: v[sample.index] for k, v in run.extra_logs.items() if v[sample.index] is not None}
    if logs:
        row["extra_logs"] = logs
    return row


def _short(text: str, limit: int = 30) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _secs(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
