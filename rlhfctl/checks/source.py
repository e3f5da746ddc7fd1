"""Load checks: open the reward under test, a reward_func.py or reward server URL(s), and say precisely why not.

A file must exist, import, define the function and accept (queries, prompts, labels); a URL must be reachable and
answer the protocol, probed with one real query before the dataset is sent.
"""

from __future__ import annotations

from rlhfctl.checks.probe import HttpProbe
from rlhfctl.checks.report import Report, finding
from rlhfctl.checks.samples import Sample
from rlhfctl.config import CheckArgs, CombinedRewardArgs
from rlhfctl.errors import RewardError, UsageError
from rlhfctl.rewards.base import RewardSource
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.config.reward_groups import SourceGroups
from rlhfctl.rewards.factory import is_url, open_combined, open_function as open_pool, open_reward
from rlhfctl.rewards.terms import source_kind
from rlhfctl.rewards.pool import FunctionPool
from rlhfctl.rewards.remote import parse_urls


def url_list(spec: str) -> list[str] | None:
    """The URLs of a comma-separated spec (a bare http://HOST:PORT gets /get_reward, as the training client
    does), None when it is not URLs; a mix of URLs and paths is a usage error."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or not any(is_url(p) for p in parts):
        return None
    if not all(is_url(p) for p in parts):
        raise UsageError(f"{spec!r} mixes URLs and other text: give reward server URLs only, or one .py file")
    return parse_urls(parts)


def single_source(reward: CombinedRewardArgs) -> str | None:
    """The one reward_func.py or URL(s) under test, checked as such; None for a model, a judge, a built-in verifier,
    the code sandbox or several sources, which are opened as a combined reward (rewards/combined.py)."""
    assert reward.reward is not None
    (term,) = reward.reward.values() if len(reward.reward) == 1 else (None,)
    if term is None or term.weight != 1.0 or source_kind(term.source) not in ("url", "function"):
        return None
    return term.source


def describe(reward: CombinedRewardArgs) -> str:
    assert reward.reward is not None
    return " + ".join(f"{t.weight:g} x {name}={t.source}" for name, t in reward.reward.items())


def open_combined_checked(reward: CombinedRewardArgs, sources: SourceGroups, report: Report) -> RewardSource | None:
    """A reward model or several named sources, opened as train-ppo opens --reward; a source that fails to load is
    a failed load check naming it (a bad option, such as --reward-output, stays a usage error)."""
    assert reward.reward is not None
    try:
        source = open_combined(reward.reward, sources)
    except UsageError:
        raise
    except RewardError as exc:
        report.add("load", "fail", str(exc), [{"kind": getattr(exc, "kind", "error")}])
        return None
    report.add("load", "pass", f"opened {source.name}")
    return source


def open_function(sources: SourceGroups, check: CheckArgs, spec: str, report: Report) -> FunctionPool | None:
    """The reward_func under test (in worker processes, as train-ppo runs it), after the load and signature
    checks; None if either failed."""
    function = sources.function.function
    try:
        source = open_pool(spec, sources.execution, sources.function)
    except RewardFault as fault:
        name = "signature" if fault.kind == "signature" else "load"
        if name == "signature":
            report.add("load", "pass", f"{spec} imports and defines {function!r}")
        report.add(name, "fail", str(fault), [{"kind": fault.kind, "traceback": fault.user_traceback}]
                   if fault.user_traceback else [{"kind": fault.kind}])
        return None
    flavour = "an async function" if source.is_async else "a function"
    report.add("load", "pass", f"{spec} imports and defines {function!r} ({flavour})")
    if not source.positional:
        report.add("signature", finding(check.strict),
                   f"{function} takes its arguments by keyword only: rlhfctl calls it so, but OpenRLHF calls "
                   "reward_func(queries, prompts, labels) positionally and would fail; define it as "
                   "def reward_func(queries, prompts, labels, **kwargs)")
    else:
        kwargs = ", **kwargs" if source.accepts_kwargs else ""
        note = "" if source.accepts_kwargs else " (add **kwargs to stay compatible with callers that pass more)"
        report.add("signature", "pass", f"{function}(queries, prompts, labels{kwargs}) is callable as "
                   f"OpenRLHF calls it{note}")
    return source


def open_server(sources: SourceGroups, urls: list[str], report: Report, probe: Sample) -> RewardSource | None:
    """The reward client training would use, after one real query reached every URL and got a valid answer."""
    api_key = sources.auth.api_key if sources.auth is not None else None
    timeout = sources.execution.reward_timeout
    for url in urls:
        client = HttpProbe(url, api_key=api_key, timeout=timeout)
        try:
            client.score([probe.query], [probe.prompt], [probe.label])
        except RewardError as exc:
            report.add("load", "fail", str(exc), [{"kind": getattr(exc, "kind", "error"), "url": url}])
            return None
        finally:
            client.close()
    where = urls[0] if len(urls) == 1 else f"{len(urls)} servers"
    report.add("load", "pass", f"{where} answered a query with a valid {{'rewards': [...]}}")
    return open_reward(",".join(urls), sources, timeout=timeout)
