"""A fixture for test modules that build DeepSpeed engines in the test process."""

from __future__ import annotations

import sys

import pytest
import torch.distributed as dist


def _deepspeed_holds_the_group() -> bool:
    """DeepSpeed keeps the process group it started with (deepspeed.utils.groups' _WORLD_GROUP and the like) for
    the life of the process: a second group after a destroy is "not registered" to it."""
    comm = sys.modules.get("deepspeed.comm.comm")
    return comm is not None and getattr(comm, "cdb", None) is not None


@pytest.fixture(scope="module", autouse=True)
def own_process_group():
    """A one-process group that this module's engines made is dropped afterwards, unless DeepSpeed used it: then the
    next module's DeepSpeed engines need that same group, and it stays.

    Import it into a test module to use it there (it is autouse)."""
    had = dist.is_available() and dist.is_initialized()
    yield
    if not had and dist.is_initialized() and not _deepspeed_holds_the_group():
        dist.destroy_process_group()
