"""The RewardSource base class: every reward source is one, every capability is declared on it with its default,
and nothing in the package probes a source with getattr/hasattr any more."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import time
from pathlib import Path

import pytest

import rlhfctl.rewards
from rlhfctl.ppo.reward_role import RoleReward
from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.batched import BatchedSource

PACKAGE = Path(rlhfctl.__file__).parent
# Every capability callers read from a source, and its default (what a plain reward model or function has).
DEFAULTS = {"cacheable": False, "pairwise": False, "concurrency": None, "per_sample": False,
            "ignored_keys": frozenset()}
METHODS = ("score", "score_chunks", "health", "close")
# What serve-rm's batcher, /health, check-reward and train-ppo read from a source (or a scorer) today.
PROBED = ("cacheable", "pairwise", "concurrency", "per_sample", "ignored_keys", "score_chunks", "health", "render",
          "info", "terms", "failure", "encode", "forward", "batch_size", "max_batch_tokens")
KNOWN_SOURCES = {"RemoteReward", "FunctionReward", "FunctionPool", "ModelReward", "JudgeModel", "ChatJudge",
                 "PairwiseReward", "CombinedReward", "CachedReward"}


def _scoring_classes() -> dict[str, type]:
    """Every concrete class defined in rlhfctl.rewards that has a score() method."""
    found = {}
    for info in pkgutil.iter_modules(rlhfctl.rewards.__path__):
        module = importlib.import_module(f"rlhfctl.rewards.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "score", None)) \
                    and not inspect.isabstract(cls):
                found[name] = cls
    return found


class _Lengths(RewardSource):
    name = "lengths"

    def score(self, queries: list[str], prompts: list[str], labels: list[str]) -> RewardBatch:
        return RewardBatch(rewards=[float(len(q)) for q in queries])


def test_every_reward_source_subclasses_the_base():
    found = _scoring_classes()
    assert KNOWN_SOURCES <= set(found), f"not found: {KNOWN_SOURCES - set(found)}"
    not_sources = [name for name, cls in {**found, "RoleReward": RoleReward}.items()
                   if not issubclass(cls, RewardSource)]
    assert not_sources == []
    assert issubclass(found["ModelReward"], BatchedSource) and issubclass(found["JudgeModel"], BatchedSource)


def test_the_base_declares_each_capability_with_its_default():
    for name, default in DEFAULTS.items():
        assert name in RewardSource.__dict__, f"RewardSource does not declare {name}"
        assert getattr(RewardSource, name) == default, name
    for name in METHODS:
        assert callable(RewardSource.__dict__.get(name)), f"RewardSource does not declare {name}()"
    with pytest.raises(TypeError):
        RewardSource()  # type: ignore[abstract]  # score() has no default
    source = _Lengths()
    assert source.health() == {}
    assert source.score_chunks(["ab", "c", "def"], [""] * 3, [""] * 3, 2).rewards == [2.0, 1.0, 3.0]
    source.close()
    assert BatchedSource.cacheable is True  # a text's reward depends on that text alone


def test_sources_that_differ_say_so():
    from rlhfctl.rewards.combined import CombinedReward
    from rlhfctl.rewards.judge_remote import ChatJudge
    from rlhfctl.rewards.pairwise import PairwiseReward

    assert PairwiseReward.pairwise is True and PairwiseReward.cacheable is False
    assert ChatJudge.cacheable is True
    both = CombinedReward([("a", 1.0, _Lengths()), ("b", 2.0, _Lengths())])
    assert both.cacheable is False and both.pairwise is False  # _Lengths keeps the defaults
    both.close()


def test_reading_a_remote_sources_capabilities_makes_no_request():
    from rlhfctl.rewards.remote import RemoteReward

    client = RemoteReward("http://192.0.2.1:9/get_reward", timeout=5, max_retries=0)  # TEST-NET-1: never answers
    started = time.monotonic()
    assert (client.cacheable, client.pairwise, client.concurrency, client.health()) == (False, False, None, {})
    assert time.monotonic() - started < 2.5  # a request would wait out the 5 s timeout
    client.close()


def test_no_reward_source_is_probed_with_getattr_or_hasattr():
    probe = re.compile(r"\b(?:getattr|hasattr)\(\s*[\w.]+\s*,\s*[\"'](" + "|".join(PROBED) + r")[\"']")
    found = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) for n, line in enumerate(path.read_text().splitlines(), 1)
             if probe.search(line)]
    assert found == []


def test_models_import_nothing_from_rewards_and_quiet_transformers_is_one():
    models = sorted((PACKAGE / "models").glob("*.py"))
    assert [p.name for p in models if re.search(r"\brlhfctl\.rewards\b", p.read_text())] == []
    defined = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")
               if re.search(r"^(?:def|class) quiet_transformers\b", p.read_text(), re.M)]
    assert [str(p) for p in defined] == ["models/quiet.py"]


def test_quiet_transformers_restores_as_a_context_manager_and_stays_quiet_when_called():
    from transformers.utils import logging as hf_logging

    from rlhfctl.models.quiet import quiet_transformers

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        with quiet_transformers():
            assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
        quiet_transformers()  # a worker at start: quiet from now on
        assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
