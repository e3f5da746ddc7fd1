"""Load checks: open the reward under test, a reward_func.py or reward server URL(s), and say precisely why not.

A file must exist, import, define the function and accept (queries, prompts, labels); a URL must be reachable and
answer the protocol, probed with one real query before the dataset is sent.
"""

from __future__ import annotations

from rlhfctl.checks.probe import HttpProbe
from rlhfctl.checks.report import Report, finding
from rlhfctl.checks.samples import Sample
from rlhfctl.config import CheckRewardConfig
from rlhfctl.errors import RewardError, UsageError
from rlhfctl.rewards.base import RewardSource
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.factory import is_url, open_function as open_pool, open_reward
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


def open_function(cfg: CheckRewardConfig, report: Report) -> FunctionPool | None:
    """The reward_func under test (in worker processes, as train-ppo runs it), after the load and signature
    checks; None if either failed."""
    try:
        source = open_pool(cfg.reward, cfg)
    except RewardFault as fault:
        name = "signature" if fault.kind == "signature" else "load"
        if name == "signature":
            report.add("load", "pass", f"{cfg.reward} imports and defines {cfg.function!r}")
        report.add(name, "fail", str(fault), [{"kind": fault.kind, "traceback": fault.user_traceback}]
                   if fault.user_traceback else [{"kind": fault.kind}])
        return None
    flavour = "an async function" if source.is_async else "a function"
    report.add("load", "pass", f"{cfg.reward} imports and defines {cfg.function!r} ({flavour})")
    if not source.positional:
        report.add("signature", finding(cfg.strict),
                   f"{cfg.function} takes its arguments by keyword only: rlhfctl calls it so, but OpenRLHF calls "
                   "reward_func(queries, prompts, labels) positionally and would fail; define it as "
                   "def reward_func(queries, prompts, labels, **kwargs)")
    else:
        kwargs = ", **kwargs" if source.accepts_kwargs else ""
        note = "" if source.accepts_kwargs else " (add **kwargs to stay compatible with callers that pass more)"
        report.add("signature", "pass", f"{cfg.function}(queries, prompts, labels{kwargs}) is callable as "
                   f"OpenRLHF calls it{note}")
    return source


def open_server(cfg: CheckRewardConfig, urls: list[str], report: Report, probe: Sample) -> RewardSource | None:
    """The reward client training would use, after one real query reached every URL and got a valid answer."""
    for url in urls:
        client = HttpProbe(url, api_key=cfg.api_key, timeout=cfg.reward_timeout)
        try:
            client.score([probe.query], [probe.prompt], [probe.label])
        except RewardError as exc:
            report.add("load", "fail", str(exc), [{"kind": getattr(exc, "kind", "error"), "url": url}])
            return None
        finally:
            client.close()
    where = urls[0] if len(urls) == 1 else f"{len(urls)} servers"
    report.add("load", "pass", f"{where} answered a query with a valid {{'rewards': [...]}}")
    return open_reward(",".join(urls), cfg, timeout=cfg.reward_timeout)


def open_judge_source(cfg: CheckRewardConfig, report: Report) -> RewardSource:
    """The LLM judge of --judge-model (loaded here) or --judge-url (a chat client): loading errors are usage
    errors (a bad template, a score token outside the vocabulary), so they exit 2 rather than fail a check."""
    from rlhfctl.rewards.factory import open_judge

    source = open_judge(cfg.model_copy(update={"rm_timeout": cfg.reward_timeout}))  # as for a reward server
    report.add("load", "pass", f"{source.name} loaded")
    return source
