"""`rlhfctl serve-rm` as users run it: a subprocess on port 0, SIGTERM draining, and clean errors."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx
import pytest

from tests.helpers import run_rlhfctl, start_server
from tests.helpers.seed_commands import SERVE_RM, argv



@pytest.mark.slow
def test_sigterm_answers_the_request_in_flight_then_exits_0(tmp_path):
    func = tmp_path / "slow.py"
    func.write_text("import time\ndef reward_func(queries, prompts, labels):\n    time.sleep(1.0)\n"
                    "    return [0.5] * len(queries)\n")
    proc, url, lines = start_server("--port", "0", "--reward-func", str(func))
    try:
        answer: dict = {}
        client = threading.Thread(target=lambda: answer.update(r=httpx.post(url, json={"query": ["a"]}, timeout=30)))
        client.start()
        time.sleep(0.3)  # the request is inside the reward function now
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert answer["r"].status_code == 200 and answer["r"].json()["rewards"] == [0.5]
    assert "Traceback" not in "".join(lines)


@pytest.mark.slow
def test_serves_a_model_given_with_openrlhf_flag_spellings(tiny_rm_openrlhf_dir):
    proc, url, _ = start_server("--port", "0", "--reward_pretrain", str(tiny_rm_openrlhf_dir), "--value_head_prefix", "value_head",
                                "--normalize_reward", "--max_len", "512", "--batch_size", "4", "--api-key", "k")
    try:
        answer = httpx.post(url, json={"query": ["2+2=4", "hi"]}, headers={"Authorization": "Bearer k"}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["rewards"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def serve_rm(*args: str) -> subprocess.CompletedProcess:
    return run_rlhfctl("serve-rm", *args, timeout=120)


def test_seed_command_on_cpu_exits_with_the_4bit_message(tiny_rm_seqcls_dir):
    # The source document's serve command, verbatim but for the model path and port: --load_in_4bit cannot run here.
    result = serve_rm(*argv(SERVE_RM, reward_pretrain=str(tiny_rm_seqcls_dir), port="0", value_head_prefix="score"))
    if result.returncode == 0:
        pytest.skip("this machine can load in 4 bits")
    assert result.returncode == 2
    assert "--load-in-4bit needs bitsandbytes" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--reward-pretrain", "/no/such/rm"], "no such folder"),
    (["--reward-func", "/no/such/reward_func.py"], "no such file"),
    ([], "exactly one of --reward-pretrain"),
])
def test_bad_sources_exit_with_a_message(args, message):
    result = serve_rm(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    func = tmp_path / "f.py"
    func.write_text("def reward_func(queries, prompts, labels):\n    return [0.0] * len(queries)\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve_rm("--reward-func", str(func), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr and "--port" in result.stderr
