"""--profile's arithmetic (ppo/profile.py) and the busy-time recorder every worker runs (distributed/busy.py)."""

from __future__ import annotations

import time

import pytest

from rlhfctl.distributed import busy
from rlhfctl.ppo.profile import busiest, step_profile


def test_a_phase_overhead_is_its_wall_time_minus_its_busiest_worker():
    timings = {"time/generate": 1.0, "time/reward": 0.3, "time/make_experience": 0.2, "time/train": 0.5,
               "time/weight_sync": 0.1, "time/step": 2.0}
    compute = {"actor": busiest([{"log_probs": 0.1, "train": 0.45, "broadcast_weights": 0.08},
                                 {"log_probs": 0.12, "train": 0.4}]),
               "ref": {"log_probs": 0.4}, "vllm": {"generate_samples": 0.7, "tokenize": 0.05}}
    out = step_profile(timings, compute)
    assert out["profile/actor/log_probs"] == 0.12  # the slower of the two actor workers
    assert out["profile/vllm/tokenize"] == 0.05
    assert out["profile/overhead/generate"] == pytest.approx(0.3)
    # the experience phase ran the reward (0.3 s, in the driver) beside the forwards; the ref's 0.4 s is its floor
    assert out["profile/overhead/experience"] == pytest.approx(0.5 - 0.4)
    assert out["profile/overhead/train"] == pytest.approx(0.05)
    assert out["profile/overhead/weight_sync"] == pytest.approx(0.02)


def test_a_phase_the_step_did_not_run_has_no_overhead_figure():
    out = step_profile({"time/generate": 0.5, "time/train": 0.2}, {"actor": {"generate": 0.4, "train": 0.2}})
    assert "profile/overhead/weight_sync" not in out and "profile/overhead/experience" not in out
    assert out["profile/overhead/train"] == 0.0


def test_busy_time_adds_up_per_name_and_is_read_once():
    busy.take()
    for _ in range(2):
        with busy.timed("tokenize"):
            time.sleep(0.01)
    with pytest.raises(ValueError), busy.timed("train"):  # time spent before a failure still counts
        raise ValueError
    seconds = busy.take()
    assert set(seconds) == {"tokenize", "train"} and seconds["tokenize"] >= 0.02
    assert busy.take() == {}
