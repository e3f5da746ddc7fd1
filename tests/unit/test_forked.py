"""The test helper that forks `rlhfctl` runs from a preloaded process (tests/helpers/forked.py)."""

from __future__ import annotations

import importlib.util

from tests.helpers.forked import ForkedRun
from tests.helpers.forked_preload import MODULES


def test_every_preloaded_module_exists():
    """multiprocessing's forkserver skips a preload module that fails to import without a word, and every run would
    then pay for the imports again: a renamed module must fail here instead."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    assert not missing


def test_a_forked_run_has_its_own_exit_code_output_and_environment(tmp_path):
    args = ["train-ppo", "--config", "missing.yaml", "--pretrain", "x"]
    plain = ForkedRun(args, cwd=tmp_path).result(120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert "--config missing.yaml: no such file" in plain.stderr and "Traceback" not in plain.stderr
    debug = ForkedRun(args, cwd=tmp_path, env={"RLHFCTL_DEBUG": "1", "PATH": "/usr/bin"}).result(120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # the environment reached the run
