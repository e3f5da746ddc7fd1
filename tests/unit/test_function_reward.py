"""FunctionReward and the reward contract: a user's reward_func.py loaded by path, called as OpenRLHF calls it,
and every way it can go wrong reported with the file, the function and the sample."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import numpy as np
import pytest
import torch

from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardBatch, RewardSource
from rlhfctl.rewards.contract import RewardFault, to_reward_batch
from rlhfctl.rewards.function import FunctionReward
from tests.helpers import GALLERY, ROOT, write

QUERIES = ["Q: 2+3? A: 5", "Q: 7*6? A: 42", "Q: 9+9? A: 18", "Q: 3*3? A: 9"]
PROMPTS = ["Q: 2+3? A: ", "Q: 7*6? A: ", "Q: 9+9? A: ", "Q: 3*3? A: "]
LABELS = ["5", "42", "18", "9"]


def fault_of(fn, *args, **kwargs) -> RewardFault:
    with pytest.raises(RewardFault) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------------------------------ good functions
@pytest.mark.parametrize("name", ["good_sync", "good_async", "good_tensor", "good_dict"])
def test_good_functions_score_one_reward_per_query(name):
    reward = FunctionReward(GALLERY / f"{name}.py")
    try:
        assert isinstance(reward, RewardSource)
        batch = reward.score(QUERIES, PROMPTS, LABELS)
        assert isinstance(batch, RewardBatch) and len(batch) == 4
        assert all(isinstance(r, float) for r in batch.rewards)
        assert reward.score(QUERIES, PROMPTS, ["0", "0", "0", "0"]).rewards != batch.rewards  # it reads labels
    finally:
        reward.close()


def test_dict_return_keeps_scores_and_extra_logs():
    reward = FunctionReward(GALLERY / "good_dict.py")
    batch = reward.score(QUERIES, PROMPTS, LABELS)
    assert batch.scores == [1.0, 1.0, 1.0, 1.0]
    assert batch.extra_logs == {"response_length": [1.0, 2.0, 2.0, 1.0]}
    assert batch.rewards == pytest.approx([0.999, 0.998, 0.998, 0.999])


def test_example_reward_func_exact_match_and_format_logs():
    reward = FunctionReward(ROOT / "examples" / "reward_func.py")
    responses = ["2 + 3 = 5. The answer is 5.", "7 * 6 = 42, so 42 in total.", "It is 19.", "no idea"]
    batch = reward.score([p + r for p, r in zip(PROMPTS, responses)], PROMPTS, LABELS)
    assert batch.rewards == [1.0, 1.0, 0.0, 0.0]
    assert batch.scores == batch.rewards
    assert batch.extra_logs["format_has_number"] == [1.0, 1.0, 1.0, 0.0]
    assert batch.extra_logs["format_ends_with_answer"] == [1.0, 0.0, 1.0, 0.0]
    # numbers compare as numbers: 1,234 == 1234 and 12.0 == 12
    again = reward.score(["Total: 1,234", "x = 12.0"], ["", ""], ["1234", "12"])
    assert again.rewards == [1.0, 1.0]
    # special tokens left in a decoded query are not part of the answer, and the prompt's numbers never count
    decoded = reward.score(["<s>What is 2+3?</s><|assistant|>It is 5.</s><pad><pad>", "Add 7 and 5.<|im_end|>"],
                           ["<s>What is 2+3?</s><|assistant|>", "Add 7 and 5."], ["5", "12"])
    assert decoded.rewards == [1.0, 0.0]
    assert decoded.extra_logs["format_ends_with_answer"] == [1.0, 0.0]


def test_empty_batch_scores_nothing_without_calling():
    reward = FunctionReward(GALLERY / "bad_constant.py")
    assert reward.score([], [], []).rewards == []


# ------------------------------------------------------------------------------------------------ async
def test_async_function_runs_from_a_thread_and_inside_a_running_loop(tmp_path):
    path = write(tmp_path, (
        "import asyncio\n"
        "LOOPS = []\n"
        "async def reward_func(queries, prompts, labels):\n"
        "    LOOPS.append(asyncio.get_running_loop())\n"
        "    await asyncio.sleep(0)\n"
        "    return [1.0] * len(queries)\n"
    ))
    reward = FunctionReward(path)
    assert reward.is_async
    try:
        assert reward.score(["a"], ["a"], ["a"]).rewards == [1.0]
        results = []
        worker = threading.Thread(target=lambda: results.append(reward.score(["b", "c"], ["b", "c"], ["", ""])))
        worker.start()
        worker.join(10)
        assert results and results[0].rewards == [1.0, 1.0]

        async def inside_a_loop():  # e.g. a user's async server calling the sync API
            return reward.score(["d"], ["d"], ["d"])

        assert asyncio.run(inside_a_loop()).rewards == [1.0]
        loops = reward.module.LOOPS
        assert len(loops) == 3 and all(loop is loops[0] for loop in loops)  # one loop: clients survive calls
    finally:
        reward.close()


def test_sync_wrapper_returning_a_coroutine_is_awaited(tmp_path):
    path = write(tmp_path, (
        "import asyncio, functools\n"
        "async def _score(queries, prompts, labels, scale):\n"
        "    return [scale] * len(queries)\n"
        "reward_func = functools.partial(_score, scale=2.0)\n"
    ))
    assert FunctionReward(path).score(["a"], ["a"], ["a"]).rewards == [2.0]


# ------------------------------------------------------------------------------------------------ loading
def test_missing_file(tmp_path):
    fault = fault_of(FunctionReward, tmp_path / "nope.py")
    assert fault.kind == "missing_file" and "nope.py: no such file" in str(fault)
    assert isinstance(fault, RewardError)


def test_folder_and_non_python_file(tmp_path):
    assert "is a folder" in str(fault_of(FunctionReward, tmp_path))
    text = write(tmp_path, "x", "reward.txt")
    assert fault_of(FunctionReward, text).kind == "not_python"


def test_syntax_error_names_file_line_and_points_at_it():
    fault = fault_of(FunctionReward, GALLERY / "bad_syntax.py")
    assert fault.kind == "syntax"
    assert "bad_syntax.py:3: syntax error" in str(fault)
    assert "def reward_func(queries, prompts, labels)" in str(fault) and "^" in str(fault)


def test_import_error_names_file_line_and_shows_only_the_users_traceback():
    fault = fault_of(FunctionReward, GALLERY / "bad_import.py")
    assert fault.kind == "import"
    assert "bad_import.py:3: importing it raised ModuleNotFoundError" in str(fault)
    assert "bad_import.py" in fault.user_traceback and "importlib" not in fault.user_traceback
    assert "rlhfctl" not in fault.user_traceback.replace(str(GALLERY), "")


def test_missing_function_lists_what_the_file_defines():
    fault = fault_of(FunctionReward, GALLERY / "bad_no_reward_func.py")
    assert fault.kind == "no_function"
    assert "defines no function 'reward_func'" in str(fault) and "compute_reward" in str(fault)
    assert FunctionReward(GALLERY / "bad_no_reward_func.py", function="compute_reward").function == "compute_reward"


def test_misspelt_function_name_gets_a_suggestion():
    fault = fault_of(FunctionReward, GALLERY / "good_sync.py", function="reward_fn")
    assert "did you mean 'reward_func'?" in str(fault)


def test_not_callable(tmp_path):
    fault = fault_of(FunctionReward, write(tmp_path, "reward_func = 3\n"))
    assert fault.kind == "no_function" and "not a function" in str(fault)


def test_wrong_signature():
    fault = fault_of(FunctionReward, GALLERY / "bad_signature.py")
    assert fault.kind == "signature"
    assert "reward_func(queries)" in str(fault) and "reward_func(queries, prompts, labels" in str(fault)


@pytest.mark.parametrize("signature,positional,kwargs", [
    ("queries, prompts, labels", True, False),
    ("queries, prompts, labels, **kwargs", True, True),
    ("*args, **kwargs", True, True),
    ("queries, prompts=None, labels=None, extra=1", True, False),
    ("**kwargs", False, True),
    ("*, queries, prompts, labels", False, False),
])
def test_accepted_signatures(tmp_path, signature, positional, kwargs):
    reward = FunctionReward(write(tmp_path, f"def reward_func({signature}):\n    return [0.0]\n"))
    assert (reward.positional, reward.accepts_kwargs) == (positional, kwargs)
    assert reward.score(["q"], ["p"], ["l"]).rewards == [0.0]


def test_keyword_only_function_receives_each_argument_by_name(tmp_path):
    path = write(tmp_path, "def reward_func(**kw):\n    return [float(kw['labels'][0] in kw['queries'][0])]\n")
    assert FunctionReward(path).score(["p 5"], ["p "], ["5"]).rewards == [1.0]


def test_two_files_with_the_same_name_do_not_collide_and_can_import_helpers(tmp_path):
    for folder, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, f"VALUE = {value}\n", "helpers_{}.py".format(folder))
        write(tmp_path / folder, f"from helpers_{folder} import VALUE\n"
                                 "def reward_func(q, p, l):\n    return [VALUE] * len(q)\n", "reward.py")
    a, b = FunctionReward(tmp_path / "a" / "reward.py"), FunctionReward(tmp_path / "b" / "reward.py")
    assert a.score(["x"], ["x"], ["x"]).rewards == [1.0]
    assert b.score(["x"], ["x"], ["x"]).rewards == [2.0]


def test_pickles_by_path_for_ray_workers():
    reward = FunctionReward(GALLERY / "good_sync.py", timeout=5.0)
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.timeout == 5.0 and copy.score(QUERIES, PROMPTS, LABELS).rewards == [1.0] * 4


# ------------------------------------------------------------------------------------------------ calling
def test_exception_names_the_first_sample_that_raises_alone():
    fault = fault_of(FunctionReward(GALLERY / "bad_raises_some_rows.py").score, QUERIES, PROMPTS, LABELS)
    assert fault.kind == "raised" and fault.index == 1  # label '42' is the first with two digits
    assert "bad_raises_some_rows.py:reward_func: raised KeyError: '42' (line 8)" in str(fault)
    assert "(sample 1)" in str(fault)
    assert 'bad_raises_some_rows.py", line 8, in spelled' in fault.user_traceback
    assert "rlhfctl" not in fault.user_traceback.replace(str(GALLERY), "")


def test_exception_only_on_the_whole_batch_says_so(tmp_path):
    path = write(tmp_path, "def reward_func(q, p, l):\n    if len(q) > 2:\n        raise MemoryError('batch too big')\n"
                           "    return [0.0] * len(q)\n")
    fault = fault_of(FunctionReward(path).score, QUERIES, PROMPTS, LABELS)
    assert fault.index is None and "no sample raises alone" in str(fault) and "MemoryError" in str(fault)


def test_sys_exit_in_the_function_is_an_error_not_an_exit(tmp_path):
    path = write(tmp_path, "import sys\ndef reward_func(q, p, l):\n    sys.exit(3)\n")
    assert fault_of(FunctionReward(path).score, ["a"], ["a"], ["a"]).kind == "raised"


@pytest.mark.parametrize("source", [
    "import time\ndef reward_func(q, p, l):\n    time.sleep(5)\n    return [0.0] * len(q)\n",
    "import asyncio\nasync def reward_func(q, p, l):\n    await asyncio.sleep(5)\n    return [0.0] * len(q)\n",
])
def test_timeout_stops_waiting(tmp_path, source):
    reward = FunctionReward(write(tmp_path, source), timeout=0.2)
    start = time.perf_counter()
    fault = fault_of(reward.score, ["a", "b"], ["a", "b"], ["a", "b"])
    assert time.perf_counter() - start < 4  # not the call's 5 s
    assert fault.kind == "timeout" and "timeout of 0.2s on a batch of 2" in str(fault)
    reward.close()


def test_users_own_timeout_error_is_not_mistaken_for_ours(tmp_path):
    path = write(tmp_path, "async def reward_func(q, p, l):\n    raise TimeoutError('judge did not answer')\n")
    fault = fault_of(FunctionReward(path, timeout=5).score, ["a"], ["a"], ["a"])
    assert fault.kind == "raised" and "judge did not answer" in str(fault)


# ------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name,kind,text,index", [
    ("bad_wrong_length", "length", "rewards has 3 values for 4 queries", None),
    ("bad_nan", "nan", "rewards value is nan, not a finite number", 1),
    ("bad_returns_strings", "non_number", "rewards value is a string ('1.0'), not a number", 0),
    ("bad_dict_keys", "dict_keys", "did you mean 'rewards' instead of 'reward'?", None),
])
def test_gallery_contract_breaks(name, kind, text, index):
    fault = fault_of(FunctionReward(GALLERY / f"{name}.py").score, QUERIES, PROMPTS, LABELS)
    assert fault.kind == kind and text in str(fault) and fault.index == index
    assert f"{name}.py:reward_func" in str(fault)


@pytest.mark.parametrize("value", [
    [1, 2.5, True], (1.0, 2.0, 3.0), np.array([1.0, 2.0, 3.0], dtype=np.float32), torch.tensor([1.0, 2.0, 3.0]),
    torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), [np.float64(1.0), torch.tensor(2.0), 3],
    {"rewards": torch.tensor([1.0, 2.0, 3.0]), "scores": [0, 1, 1], "extra_logs": {"len": np.array([1, 2, 3])}},
])
def test_contract_accepts_every_shape_users_return(value):
    batch = to_reward_batch(value, 3)
    assert len(batch) == 3 and all(isinstance(r, float) for r in batch.rewards)


@pytest.mark.parametrize("value,kind,text", [
    (None, "type", "rewards is None (a missing return statement?)"),
    (0.5, "length", "a single number (0.5) for 3 queries"),
    ("1,1,1", "non_number", "rewards is a string"),
    ({1, 2, 3}, "type", "rewards is a set"),
    (torch.ones(3, 1), "shape", "shape (3, 1)"),
    (torch.tensor(1.0), "length", "a single number"),
    ([1.0, None, 2.0], "non_number", "value is a NoneType, not a number"),
    ([1.0, float("inf"), 2.0], "nan", "inf, not a finite number"),
    (np.array(["1", "2", "3"]), "non_number", "a string ('1')"),
    ({"rewards": [1, 2, 3], "extra_logs": {"acc": 0.5}}, "extra_logs", "extra_logs['acc'] is a single number"),
    ({"rewards": [1, 2, 3], "extra_logs": {"acc": [1, 2]}}, "extra_logs", "extra_logs['acc'] has 2 values"),
    ({"rewards": [1, 2, 3], "extra_logs": [1, 2, 3]}, "extra_logs", "'extra_logs' is a list"),
    ({"rewards": [1, 2, 3], "score": [1, 2, 3]}, "dict_keys", "did you mean 'scores' instead of 'score'?"),
    ({"rewards": [1, 2, 3], "scores": [1, float("nan"), 3]}, "nan", "scores value is nan"),
])
def test_contract_rejects_with_a_precise_message(value, kind, text):
    fault = fault_of(to_reward_batch, value, 3, where="f.py:reward_func")
    assert fault.kind == kind and text in str(fault), str(fault)
    assert str(fault).startswith("f.py:reward_func: ")


def test_contract_hint_for_a_column_tensor():
    assert "use .squeeze(-1)" in str(fault_of(to_reward_batch, torch.ones(3, 1), 3))


def test_extra_keys_allowed_for_third_party_servers_and_nan_in_extra_logs():
    batch = to_reward_batch({"rewards": [1, 2], "model": "rm-v2", "extra_logs": {"x": [float("nan"), 1]}}, 2,
                            allow_extra_keys=True)
    assert batch.rewards == [1.0, 2.0] and np.isnan(batch.extra_logs["x"][0])


def test_fault_index_shifts_to_the_dataset_position():
    fault = RewardFault("bad", kind="nan", where="f.py:reward_func", index=2)
    assert fault.render(16) == "f.py:reward_func: bad (sample 18)"
