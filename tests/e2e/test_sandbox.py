"""The code sandbox: a hostile gallery passes through with the right verdict and no harm (fork bomb, infinite
loop, memory bomb, network, a write to the home folder, reading another sample's folder, killing the parent,
sys.exit(0) before the tests, a fake "passed" line, a test that itself raises), the sandbox keeps serving, the
label formats users have are read, and where isolation cannot be had it refuses unless told --sandbox-unsafe.
Real namespaces and processes throughout; tight limits keep the gallery to seconds."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from rlhfctl.errors import UsageError
from rlhfctl.rewards.code_tests import extract_code, parse_tests
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.isolation import detect
from rlhfctl.rewards.sandbox import SandboxReward
from rlhfctl.rewards.sandbox_run import Limits
from tests.helpers import ROOT

LIMITS = Limits(timeout_s=2.0, cpu_s=1, memory_mb=256, nproc=8, file_mb=4)
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
SUM_IO = json.dumps({"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]})
GOOD_ADD = "```python\ndef add(a, b):\n    return a + b\n```"
PROMPT = "Write the code.\n"


# Root of its user namespace, the program tries to undo its mounts (also from a nested namespace of its own) and
# write to world-writable places of the host; it prints "contained" when all of that failed and it has no capability.
UNDO_MOUNTS = """import subprocess
codes = [subprocess.run(cmd, capture_output=True).returncode for cmd in (
    ["umount", "-l", "/tmp"], ["mount", "-o", "remount,rw", "/"], ["mount", "-o", "remount,rw,bind", "/dev/shm"],
    ["unshare", "-rm", "sh", "-c", "mount -o remount,rw,bind /dev/shm && touch /dev/shm/rlhfctl_sandbox_x"])]
wrote = []
for path in ("WORLD/x", "/dev/shm/rlhfctl_sandbox_x"):
    try:
        open(path, "w").write("x")
        wrote.append(path)
    except OSError:
        pass
caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith(("CapPrm", "CapEff", "CapBnd"))]
print("contained" if 0 not in codes and not wrote and set(caps) == {"0000000000000000"} else (codes, wrote, caps))
"""


@pytest.fixture(scope="module")
def sandbox():
    try:
        detect(unsafe=False)
    except RuntimeError as exc:
        pytest.skip(f"no namespaces here: {exc}")
    source = SandboxReward(workers=2, limits=LIMITS)
    yield source
    source.close()


def _score(sandbox: SandboxReward, cases: list[tuple[str, str]]):
    return sandbox.score([PROMPT + response for response, _ in cases], [PROMPT] * len(cases),
                         [label for _, label in cases])


def _verdicts(batch) -> list[str]:
    names = [k.removeprefix("verdict_") for k in batch.extra_logs if k.startswith("verdict_")]
    return [next(n for n in names if batch.extra_logs[f"verdict_{n}"][i] == 1.0) for i in range(len(batch))]


def test_hostile_gallery(sandbox, tmp_path):
    home = Path.home()
    planted = Path(sandbox.root) / "sample-other"  # another sample's folder, as the sandbox lays them out
    planted.mkdir()
    (planted / "secret.txt").write_text("s3cret")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    world = tmp_path.parent / f"world-writable-{os.getpid()}"  # under /tmp, where a sample's /tmp hides it
    world.mkdir(exist_ok=True)
    world.chmod(0o777)
    gallery = {  # name: (response, label, verdict, reward)
        "good io": ("```python\na, b = map(int, input().split())\nprint(a + b)\n```", SUM_IO, "pass", 1.0),
        "good asserts": (GOOD_ADD, ADD_TESTS, "pass", 1.0),
        "half right": ("def add(a, b):\n    return 3", ADD_TESTS, "fail", 0.5),
        "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                      ADD_TESTS, "timeout", 0.0),
        "infinite loop": ("while True:\n    pass", ADD_TESTS, "timeout", 0.0),
        "memory bomb": ("x = bytearray(4 * 1024 ** 3)", ADD_TESTS, "memory", 0.0),
        "network": (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 1)\n"
                    "    print(3)\nexcept OSError:\n    print(0)", SUM_IO, "fail", 0.0),
        "write home": (f"open({str(home / 'sandbox_was_here')!r}, 'w').write('x')\nprint(3)", SUM_IO, "fail", 0.0),
        "read other sample": (f"print(open({str(planted / 'secret.txt')!r}).read())",
                              json.dumps([{"input": "", "output": "s3cret"}]), "fail", 0.0),
        "kill parent": (f"import os, signal\nfor pid in ({os.getpid()}, os.getppid(), 1):\n    try:\n"
                        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
                        "def add(a, b):\n    return a + b", ADD_TESTS, "pass", 1.0),
        "exit before tests": ("import sys\nsys.exit(0)\ndef add(a, b):\n    return 0", ADD_TESTS, "error", 0.0),
        "fake pass line": ("print('2 passed, 0 failed')\nprint('OK')\nimport os\nos._exit(0)", ADD_TESTS, "fail",
                           0.0),
        "test that raises": (GOOD_ADD, json.dumps(["assert add(1, 2) == 3", "raise RuntimeError('broken test')"]),
                             "fail", 0.5),
        "raises at import": ("raise ValueError('no')\ndef add(a, b):\n    return a + b", ADD_TESTS, "error", 0.0),
        "no code": ("", ADD_TESTS, "error", 0.0),
        "undo the mounts": (UNDO_MOUNTS.replace("WORLD", str(world)), json.dumps([{"input": "", "output": "contained"}]),
                            "pass", 1.0),
        "fill the disk": ("for i in range(100):\n    open(f'f{i}', 'wb').write(bytes(3 * 1024 ** 2))", ADD_TESTS,
                          "error", 0.0),
    }
    started = time.monotonic()
    batch = _score(sandbox, [(r, label) for r, label, _, _ in gallery.values()])
    assert not (world / "x").exists() and not Path("/dev/shm/rlhfctl_sandbox_x").exists()
    took = time.monotonic() - started
    got = dict(zip(gallery, zip(_verdicts(batch), batch.rewards)))
    assert got == {name: (verdict, reward) for name, (_, _, verdict, reward) in gallery.items()}
    assert batch.extra_logs["tests"][0] == 2.0
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing reached the test's own listener
    assert not (home / "sandbox_was_here").exists()
    assert (planted / "secret.txt").read_text() == "s3cret"
    assert not [p for p in Path(sandbox.root).iterdir() if p != planted]  # each sample's folder removed
    assert took < 30, f"the gallery took {took:.1f}s"
    # and it keeps serving
    assert _score(sandbox, [(GOOD_ADD, ADD_TESTS)]).rewards == [1.0]


def test_no_process_outlives_its_sample(sandbox):
    started = time.monotonic()
    batch = _score(sandbox, [("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
                      "def add(a, b):\n    return a + b", ADD_TESTS)])
    assert batch.rewards == [1.0] and time.monotonic() - started < 10  # a daemon it left does not hold it up
    for _ in range(20):  # a namespace is torn down a moment after its process 1 exits
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and "harness.py" in _cmdline(p)]
        if not left:
            break
        time.sleep(0.1)
    assert left == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_label_without_tests_is_an_error_naming_the_sample(sandbox):
    with pytest.raises(RewardFault) as caught:
        _score(sandbox, [(GOOD_ADD, ADD_TESTS), (GOOD_ADD, "add(1, 2)")])
    assert caught.value.kind == "label" and caught.value.index == 1


@pytest.mark.parametrize("label,kind,n", [
    ('[{"input": "1", "output": "2"}]', "io", 1),
    ('{"inputs": ["1"], "outputs": ["2"]}', "io", 1),
    ('{"inputs": [[1, 2]], "outputs": [[3]], "fn_name": "add"}', "assert", 1),
    ('["assert f() == 1", "assert f() != 2"]', "assert", 2),
    ("from math import pi\nassert f() == 1\nassert f() > 0", "assert", 2),
])
def test_label_formats(label, kind, n):
    suite = parse_tests(label)
    assert (suite.kind, len(suite)) == (kind, n)


def test_the_program_is_the_last_python_block():
    text = "Here:\n```text\nnot code\n```\n```python\nx = 1\n```\nand better:\n```py\nx = 2\n```\n"
    assert extract_code(text) == "x = 2"
    assert extract_code("x = 3\n") == "x = 3"


def test_no_isolation_refuses_unless_unsafe(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # a machine without util-linux's unshare
    with pytest.raises(UsageError, match="--sandbox-unsafe"):
        SandboxReward(limits=LIMITS)
    unsafe = SandboxReward(workers=1, limits=LIMITS, unsafe=True)
    try:
        assert unsafe.name == "sandbox (unsafe)"
        batch = _score(unsafe, [(GOOD_ADD, ADD_TESTS), ("while True:\n    pass", ADD_TESTS)])
        assert batch.rewards == [1.0, 0.0] and _verdicts(batch) == ["pass", "timeout"]
    finally:
        unsafe.close()


CODE_DATA = ROOT / "examples" / "code" / "data.jsonl"


def test_check_reward_reports_each_verdict_on_the_code_example(sandbox):
    from rlhfctl.checks import run_checks
    from rlhfctl.config import resolve

    report = run_checks(resolve("check-reward", {
        "reward": "sandbox", "prompt_data": str(CODE_DATA), "input_key": "prompt", "label_key": "tests",
        "responses": "column:response", "micro_rollout_batch_size": 6, "sandbox_timeout": 2.0, "sandbox_cpu_s": 1,
        "sandbox_memory_mb": 256}))
    assert report.exit_code == 0
    logs = report.stats["extra_logs_mean"]
    # 4 right programs, one that exits before its tests (error), one that prints a fake pass line (1 of 2 right)
    assert report.stats["mean"] == pytest.approx((4 + 0 + 0.5) / 6)
    assert (logs["reward/verdict_pass"], logs["reward/verdict_error"], logs["reward/verdict_fail"]) == \
        pytest.approx((4 / 6, 1 / 6, 1 / 6))


def test_serve_rm_serves_the_sandbox(sandbox):
    import httpx

    from tests.helpers import start_server

    proc, url, lines = start_server("--reward", "tests=sandbox", "--sandbox-timeout", "2", "--port", "0")
    try:
        body = {"query": [GOOD_ADD, "while True:\n    pass"], "prompts": ["", ""], "labels": [ADD_TESTS] * 2}
        answer = httpx.post(url, json=body, timeout=60).json()
        assert answer["rewards"] == [1.0, 0.0]
        assert answer["extra_logs"]["tests/verdict_timeout"] == [0.0, 1.0]  # NAME/KEY, as train-ppo logs it
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_sandbox_travels_to_a_ray_worker_as_its_settings(sandbox):
    import pickle

    copy = pickle.loads(pickle.dumps(sandbox))  # finds its own isolation and folder
    try:
        assert copy.root != sandbox.root and copy.limits == sandbox.limits and copy.workers == sandbox.workers
        assert _score(copy, [(GOOD_ADD, ADD_TESTS)]).rewards == [1.0]
    finally:
        copy.close()
