"""The reward cache (issue 15, part 5): identical samples scored once per batch, --reward-cache-size across steps
(LRU), hits counted in cache_hit_rate, results equal to uncached, only deterministic per-sample sources."""

from __future__ import annotations

import pytest

from rlhfctl.config import resolve
from rlhfctl.rewards.cache import CachedReward, with_cache
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.factory import open_function
from tests.helpers import run_cli, write

COUNTING = '''
LOG = {log!r}
{extra}

def reward_func(queries, prompts, labels, **kwargs):
    with open(LOG, "a") as f:
        f.write("".join(q + "\\n" for q in queries))
    if "nan" in labels:
        return [float("nan") if l == "nan" else 1.0 for l in labels]
    return {{"rewards": [float(len(q)) for q in queries], "extra_logs": {{"odd": [len(q) % 2 for q in queries]}}}}
'''


@pytest.fixture()
def counted(tmp_path):
    """(a FunctionPool that logs every query it scores, the list of queries it has scored so far)."""
    log = tmp_path / "scored.txt"
    log.write_text("")
    cfg = resolve("serve-rm", {"reward_func": "x.py"})
    source = open_function(str(write(tmp_path, COUNTING.format(log=str(log), extra=""), "count.py")), cfg, cfg)
    yield source, lambda: log.read_text().splitlines()
    source.close()


def call(source, queries, labels=None):
    labels = labels or [""] * len(queries)
    return source.score(queries, [""] * len(queries), labels)


def test_identical_samples_are_scored_once_per_batch(counted):
    source, scored = counted
    queries = ["a", "bb", "a", "ccc", "bb", "a"]
    plain = call(source, queries)
    before = len(scored())
    cached = call(CachedReward(source, 0), queries)
    assert scored()[before:] == ["a", "bb", "ccc"]  # three distinct samples, three scored
    assert (cached.rewards, cached.extra_logs["odd"]) == (plain.rewards, plain.extra_logs["odd"])
    assert cached.extra_logs["cache_hit_rate"] == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]  # mean: the batch's hit rate


def test_cache_size_keeps_the_most_recently_used_across_steps(counted):
    source, scored = counted
    cache = CachedReward(source, 2)
    call(cache, ["a", "bb"])
    second = call(cache, ["a", "ccc"])  # a: a hit (now the most recent); ccc scored; bb evicted (size 2)
    third = call(cache, ["bb", "a"])
    assert scored() == ["a", "bb", "ccc", "bb"]
    assert second.extra_logs["cache_hit_rate"] == [1.0, 0.0] and third.extra_logs["cache_hit_rate"] == [0.0, 1.0]
    assert third.rewards == [2.0, 1.0]


def test_a_failing_sample_keeps_its_place_in_the_batch(counted):
    source, _ = counted
    with pytest.raises(RewardFault) as info:
        call(CachedReward(source, 0), ["a", "a", "b", "c"], ["x", "x", "x", "nan"])
    assert info.value.kind == "nan" and info.value.index == 3  # the 3rd distinct sample is the 4th of the batch


def test_a_function_that_says_it_is_not_deterministic_is_not_cached(tmp_path):
    log = tmp_path / "scored.txt"
    path = write(tmp_path, COUNTING.format(log=str(log), extra="DETERMINISTIC = False"), "sampling.py")
    cfg = resolve("serve-rm", {"reward_func": "x.py"})
    source = open_function(str(path), cfg, cfg)
    try:
        notes: list[str] = []
        assert with_cache(source, 100, notes) is source
        assert "--reward-cache-size 100" in notes[0] and "DETERMINISTIC = False" in notes[0]
    finally:
        source.close()


@pytest.mark.parametrize("value", ["-1", "many"])
def test_bad_cache_size_exits_2(value, capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", "p", "--prompt-data", "d.jsonl", "--remote-rm-url", "r.py",
                             "--reward-cache-size", value, "--print-config"], capsys)
    assert code == 2 and "--reward-cache-size" in err, err

