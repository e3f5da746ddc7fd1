"""Fixtures of the end-to-end runs (the session's Ray cluster is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.helpers import write
from tests.helpers.train_ppo import REWARD_WITH_LABELS



@pytest.fixture(scope="session")
def reward_file(tmp_path_factory):
    """A reward_func.py that checks the labels reached it (REWARD_WITH_LABELS). Read-only."""
    return write(tmp_path_factory.mktemp("reward"), REWARD_WITH_LABELS)


@pytest.fixture(scope="session")
def tied_policies(tmp_path_factory):
    """Paths of two tiny tied-embedding policies, A and B (tests/helpers/vllm_engines.py). Read-only."""
    from tests.helpers.vllm_engines import tied_policy

    root = tmp_path_factory.mktemp("tied_policies")
    return tied_policy(root / "a", 1), tied_policy(root / "b", 2)
