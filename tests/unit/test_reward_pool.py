"""reward_func.py in worker processes (FunctionPool), as train-ppo, serve-rm and check-reward run it: a timeout
kills a hung call (sleeping or spinning in pure Python), a crash or an exception reaches the caller at once with the
file, function and sample, the next call works; OpenRLHF v0.11's per-sample functions score the same as batch ones."""

from __future__ import annotations

import time

import pytest
import yaml
import torch

from rlhfctl.config import resolve
from rlhfctl.ppo.experience import Samples
from rlhfctl.ppo.checkpoint import TrainerState
from rlhfctl.ppo.failures import Failures
from rlhfctl.ppo.scoring import Scorer
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.pool import FunctionPool
from tests.helpers import run_cli, write
from tests.helpers.meeting import MEET, overlapped

QUERIES = ["What is 2+2? 4", "What is 3+3? 7", "Say hi: hi", "What is 5+5? 10"]
PROMPTS = ["What is 2+2?", "What is 3+3?", "Say hi:", "What is 5+5?"]
LABELS = ["4", "6", "hi", "10"]
EXPECTED = [1.0, 0.0, 1.0, 1.0]

BATCH = '''
import torch
def reward_func(queries, prompts, labels):
    rewards = torch.tensor([float(q.endswith(" " + l)) for q, l in zip(queries, labels)])
    lengths = torch.tensor([float(len(q)) for q in queries])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"len": lengths}}
'''
# OpenRLHF v0.11 calls reward_func once per sample: users index [0] and return scalars or 1-element tensors.
PER_SAMPLE = {
    "float": '''
def reward_func(queries, prompts, labels):
    return float(queries[0].endswith(" " + labels[0]))
''',
    "tensor": '''
import torch
def reward_func(queries, prompts, labels, **kwargs):
    q, label = queries[0], labels[0]
    r = torch.tensor([float(q.endswith(" " + label))])
    return {"rewards": r, "scores": r, "extra_logs": {"len": torch.tensor([float(len(q))])}, "info": "ignored"}
''',
}
MISBEHAVING = '''
import os, time
def reward_func(queries, prompts, labels):
    if "sleep" in queries:
        time.sleep(1000)
    if "spin" in queries:
        while True:
            pass
    if "exit" in queries:
        os._exit(9)
    if "raise" in queries:
        raise ValueError("cannot parse raise")
    return [float(len(x)) for x in queries]
'''


@pytest.fixture(scope="module")
def misbehaving(tmp_path_factory):
    pool = FunctionPool(write(tmp_path_factory.mktemp("bad"), MISBEHAVING), timeout=1.0)
    yield pool
    pool.close()


# ------------------------------------------------------------------------------------------------ stopping
@pytest.mark.parametrize("query", ["sleep", "spin"])
def test_a_hung_call_is_killed_at_the_timeout_and_the_next_call_works(misbehaving, query):
    started = time.perf_counter()
    with pytest.raises(RewardFault) as info:
        misbehaving.score(["ok", query], ["", ""], ["", ""])
    assert time.perf_counter() - started < 5
    fault = info.value
    assert fault.kind == "timeout" and "timeout of 1s on a batch of 2" in str(fault)
    assert "reward_func.py:reward_func" in str(fault) and "killed" in str(fault)
    assert misbehaving.score(["abc"], [""], [""]).rewards == [3.0]
    assert misbehaving.health()["status"] == "degraded"


def test_a_function_that_exits_its_process_is_an_error_and_the_next_call_works(misbehaving):
    with pytest.raises(RewardFault) as info:
        misbehaving.score(["exit"], [""], [""])
    assert info.value.kind == "crashed" and "exited (code 9)" in str(info.value) and "(sample 0)" in str(info.value)
    assert misbehaving.score(["ab"], [""], [""]).rewards == [2.0]


def test_an_exception_reaches_the_caller_with_the_users_traceback(misbehaving):
    with pytest.raises(RewardFault) as info:
        misbehaving.score(["raise"], [""], [""])
    assert info.value.kind == "raised"  # at once: not a "timeout" after the pool's 1 s and "ValueError: cannot parse raise (line 12)" in str(info.value)
    assert 'reward_func.py", line 12, in reward_func' in info.value.user_traceback


def test_a_file_that_hangs_at_import_fails_at_the_load_timeout(tmp_path):
    path = write(tmp_path, "import time\ntime.sleep(1000)\ndef reward_func(q, p, l):\n    return [0.0] * len(q)\n")
    started = time.perf_counter()
    with pytest.raises(RewardFault) as info:
        FunctionPool(path, load_timeout=1.0)
    assert time.perf_counter() - started < 5
    assert "load timeout of 1s" in str(info.value) and str(path) in str(info.value)


def test_a_file_that_does_not_import_says_why_from_the_worker(tmp_path):
    path = write(tmp_path, "import no_such_module_xyz\n")
    with pytest.raises(RewardFault) as info:
        FunctionPool(path)
    assert info.value.kind == "import" and "No module named 'no_such_module_xyz'" in str(info.value)


# ------------------------------------------------------------------------------------------------ per sample
@pytest.fixture(scope="module")
def functions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vintages")
    return {"batch": write(folder, BATCH, "batch.py"),
            **{name: write(folder, text, f"{name}.py") for name, text in PER_SAMPLE.items()}}


def trainer_score(pool, queries=QUERIES, micro_rollout_batch_size=2):
    """Scorer.score as train-ppo's rollouts call it on a reward_func.py (no failure expected: nothing is saved)."""
    n = len(queries)
    samples = Samples(torch.ones(n, 3, dtype=torch.long), torch.ones(n, 3), torch.ones(n, 1), PROMPTS[:n],
                      LABELS[:n], [q.rsplit(" ", 1)[1] for q in queries], queries=list(queries))
    failures = Failures(TrainerState(), save=lambda: pytest.fail("the reward failed"), checkpoints=None,
                        tracker=None, skip_nonfinite_batches=False, trained_roles={"actor"})
    scorer = Scorer(pool, failures, micro_rollout_batch_size=micro_rollout_batch_size, n_samples_per_prompt=1,
                    eval_n_samples_per_prompt=1)
    return scorer.score(samples)


@pytest.mark.parametrize("vintage", ["float", "tensor"])
@pytest.mark.parametrize("batching", ["auto", "per-sample"])
def test_per_sample_functions_score_as_the_batch_function_does_through_the_trainer(functions, vintage, batching):
    with FunctionPool(functions["batch"]) as reference, \
            FunctionPool(functions[vintage], batching=batching, workers=2) as pool:
        expected, got = trainer_score(reference), trainer_score(pool)
        assert expected.rewards == EXPECTED and got.rewards == expected.rewards
        if vintage == "tensor":
            assert got.extra_logs == expected.extra_logs and pool.ignored_keys == {"info"}
        assert pool.per_sample is True


def test_batch_mode_refuses_a_per_sample_function_naming_the_option(functions):
    with FunctionPool(functions["float"], batching="batch") as pool:
        with pytest.raises(RewardFault, match="--reward-func-batching per-sample"):
            pool.score(QUERIES, PROMPTS, LABELS)


def test_the_trainer_names_the_failing_sample_of_the_whole_batch(tmp_path):
    path = write(tmp_path, "def reward_func(q, p, l):\n    return [1 / (x != 'bad') for x in q]\n")
    with FunctionPool(path) as pool:
        with pytest.raises(RewardFault) as info:
            pool.score_chunks(["a", "b", "c", "bad"], [""] * 4, [""] * 4, 2)
    assert info.value.index == 3 and "ZeroDivisionError" in str(info.value)


MEETING = MEET + """
def reward_func(q, p, l):
    meet(q[0])
    return [0.0] * len(q)
"""


@pytest.mark.parametrize("workers,at_once", [(1, False), (2, True)])
def test_workers_run_chunks_at_once(tmp_path, workers, at_once):
    spans = str(tmp_path / "spans")
    with FunctionPool(write(tmp_path, MEETING), workers=workers) as pool:
        pool.score_chunks([spans] * 4, [""] * 4, [""] * 4, 2)
    assert overlapped(spans) == at_once, open(spans).read()


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("flag,value,words", [
    ("--reward-timeout", "0", "--reward-timeout: Input should be greater than 0"),
    ("--reward-timeout", "-1", "--reward-timeout: Input should be greater than 0"),
    ("--reward-workers", "0", "--reward-workers: Input should be greater than or equal to 1"),
    ("--reward-load-timeout", "0", "--reward-load-timeout: Input should be greater than 0"),
    ("--reward-func-batching", "sometimes", "--reward-func-batching: Input should be 'auto', 'batch' or 'per-sample'"),
])
@pytest.mark.parametrize("command", ["serve-rm", "train-ppo", "check-reward"])
def test_bad_values_exit_2_naming_the_flag(functions, command, flag, value, words, capsys, tmp_path):
    func = str(functions["batch"])
    args = {"serve-rm": ["serve-rm", "--reward-func", func],
            "train-ppo": ["train-ppo", "--pretrain", str(tmp_path), "--prompt-data", "x.jsonl",
                          "--remote-rm-url", func],
            "check-reward": ["check-reward", func, "--prompt-data", "x.jsonl"]}[command]
    code, out, err = run_cli([*args, flag, value, "--print-config"], capsys)
    assert code == 2 and words in " ".join((out + err).split()), (out, err)


@pytest.mark.parametrize("command,args,what", [
    ("serve-rm", ["--reward-pretrain", "rm"], "not to a reward model"),
    ("train-ppo", ["--pretrain", "p", "--prompt-data", "d.jsonl", "--remote-rm-url", "http://h:1/get_reward"],
     "not to a reward server URL"),
    ("check-reward", ["http://h:1/get_reward", "--prompt-data", "d.jsonl"], "not to a reward server URL"),
    ("bench-rm", ["--url", "http://h:1/get_reward"], "not to --url or --reward-pretrain"),
])
def test_reward_function_options_without_a_reward_function_are_refused(command, args, what, capsys):
    code, out, err = run_cli([command, *args, "--reward-workers", "2", "--print-config"], capsys)
    assert code == 2 and "--reward-workers applies to a reward_func.py only" in err and what in err, err


def test_a_worker_killed_while_idle_is_replaced_before_the_next_call(tmp_path):
    path = write(tmp_path, "def reward_func(q, p, l):\n    return [1.0] * len(q)\n")
    with FunctionPool(path) as pool:
        worker = pool._idle.get()
        worker.process.kill()
        worker.process.wait()
        pool._idle.put(worker)
        assert pool.score(["x"], [""], [""]).rewards == [1.0]


def test_timeout_is_the_old_spelling_of_reward_timeout_in_flags_and_config_files(tmp_path, capsys):
    base = ["check-reward", "f.py", "--prompt-data", "d", "--print-config"]
    code, out, err = run_cli([*base, "--timeout", "7"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["reward_timeout"] == 7
    config = tmp_path / "run.yaml"
    config.write_text("timeout: 9\n")
    code, out, err = run_cli([*base, "--config", str(config)], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["reward_timeout"] == 9
    code, _, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d", "--remote-rm-url", "f.py",
                             "--timeout", "7"], capsys)
    assert code == 2  # one meaning per name: only check-reward had a --timeout


# ------------------------------------------------------------------------------------------------ every command
def test_per_sample_and_batch_functions_answer_alike_from_serve_rm(functions):
    import httpx

    from tests.unit.test_serve_rm_func import Served

    body = {"query": QUERIES, "prompts": PROMPTS, "labels": LABELS}
    answers = {}
    for name in ("batch", "tensor"):
        with Served(functions[name]) as handle:
            answers[name] = httpx.post(handle.url, json=body, timeout=30).json()
    assert answers["batch"]["rewards"] == EXPECTED and answers["tensor"] == answers["batch"]


def test_per_sample_and_batch_functions_check_alike_in_check_reward(tmp_path, prompt_file):
    from rlhfctl.checks import run_checks

    batch = write(tmp_path, "def reward_func(q, p, l):\n    return [float(len(x) % 3) for x in q]\n", "b.py")
    single = write(tmp_path, "import torch\ndef reward_func(q, p, l):\n"
                             "    return {'rewards': torch.tensor([float(len(q[0]) % 3)]), 'note': 'x'}\n", "s.py")
    reports = {name: run_checks(resolve("check-reward", {"reward": str(path), "prompt_data": str(prompt_file),
                                                         "label_key": "answer", "micro_rollout_batch_size": 2}))
               for name, path in (("batch", batch), ("single", single))}
    assert reports["single"].stats == reports["batch"].stats and reports["batch"].stats["max"] > 0
    contract = reports["single"].get("contract")
    assert contract.status == "warn" and "'note'" in contract.message and "ignored" in contract.message
    assert reports["batch"].get("contract").status == "pass"


def test_serve_rm_on_a_file_that_hangs_at_import_exits_with_the_message(tmp_path, capsys):
    path = write(tmp_path, "import time\ntime.sleep(1000)\n")
    started = time.perf_counter()
    code, out, err = run_cli(["serve-rm", "--reward-func", str(path), "--port", "0", "--reward-load-timeout", "1"],
                         capsys)
    assert time.perf_counter() - started < 10
    assert code != 0 and "load timeout of 1s (--reward-load-timeout" in err and "Traceback" not in err + out


def test_auto_takes_a_scalar_as_per_sample_but_a_list_of_one_as_a_batch_that_miscounts(tmp_path):
    from rlhfctl.rewards.function import FunctionReward

    scalar = FunctionReward(write(tmp_path, "def reward_func(q, p, l):\n    return float(len(q[0]))\n", "s.py"))
    assert scalar.score(["ab", "abc"], ["", ""], ["", ""]).rewards == [2.0, 3.0] and scalar.per_sample is True
    miscounts = FunctionReward(write(tmp_path, "def reward_func(q, p, l):\n    return [0.0]\n", "m.py"))
    with pytest.raises(RewardFault) as info:
        miscounts.score(["ab", "abc"], ["", ""], ["", ""])
    assert info.value.kind == "length" and "rewards has 1 value for 2 queries" in str(info.value)
    assert "--reward-func-batching per-sample" in str(info.value) and miscounts.per_sample is None
