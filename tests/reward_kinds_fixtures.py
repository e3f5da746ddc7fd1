"""Tiny models of the reward kinds of issue 15, built once per session (import the fixtures into a test module)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def count_rm_dir(tmp_path_factory):
    """A custom-code reward model (auto_map -> modeling_count.py): score = how many "x" the text holds."""
    from rlhfctl.models.tiny_kinds import make_count_model

    return make_count_model(tmp_path_factory.mktemp("count_rm"), count_char="x")


@pytest.fixture(scope="session")
def pairwise_dir(tmp_path_factory):
    """A custom-code pairwise model: logit of P(A beats B) = x's in response A - x's in response B."""
    from rlhfctl.models.tiny_kinds import make_count_model

    return make_count_model(tmp_path_factory.mktemp("pairwise_rm"), count_char="x", pairwise=True)


def write(path, text: str):
    path.write_text(text)
    return path
