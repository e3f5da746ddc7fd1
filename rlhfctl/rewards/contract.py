"""The reward contract: what a reward function or server may return, turned into a RewardBatch or a precise error.

OpenRLHF has accepted two shapes over its versions: a tensor of one reward per query, and a dict
`{"rewards", "scores"?, "extra_logs"?}` of tensors. Users also return lists and numpy arrays. Everything that reads
a reward (FunctionReward, a server's answer, check-reward) goes through `to_reward_batch`, so the rules and the
messages live in one place and a broken return is reported with the sample it concerns, never turned into zeros.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Sequence

from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardBatch

DICT_KEYS = ("rewards", "scores", "extra_logs")


class RewardFault(RewardError):
    """A reward source broke the contract or failed on a batch: what (`problem`), in which source (`where`),
    on which sample (`index`, relative to the batch it was called with), plus the user's traceback if any.

    `kind` is a stable short code (e.g. "length", "nan", "raised", "timeout", "syntax") that check-reward reports
    and that tests match on, so messages can be reworded without breaking either.
    """

    def __init__(
        self, problem: str, *, kind: str, where: str = "reward", index: int | None = None, user_traceback: str = ""
    ) -> None:
        self.problem = problem
        self.kind = kind
        self.where = where
        self.index = index
        self.user_traceback = user_traceback
        super().__init__(self.render())

    def render(self, offset: int = 0) -> str:
        """The message, with the sample index shifted by `offset` (where the batch starts in the dataset)."""
        at = f" (sample {self.index + offset})" if self.index is not None else ""
        return f"{self.where}: {self.problem}{at}"


def to_reward_batch(value: Any, n: int, *, where: str = "reward", allow_extra_keys: bool = False) -> RewardBatch:
    """Check `value` (what a reward returned for `n` queries) and turn it into a RewardBatch.

    Accepted: a 1-D tensor / ndarray / list / tuple of n finite numbers, or a dict with `rewards` (that), optional
    `scores` (that) and optional `extra_logs` (name -> n numbers; NaN allowed there, meaning "not logged").
    `allow_extra_keys` tolerates other dict keys (a third-party server's metadata); a reward_func's typo such as
    `score` is an error, since OpenRLHF would silently ignore it.
    """
    if isinstance(value, dict):
        return _from_dict(value, n, where, allow_extra_keys)
    return RewardBatch(rewards=_numbers(value, n, where, "rewards", finite=True))


def _from_dict(value: dict, n: int, where: str, allow_extra_keys: bool) -> RewardBatch:
    keys = [str(k) for k in value]
    unknown = [k for k in keys if k not in DICT_KEYS]
    if "rewards" not in value:
        hint = _did_you_mean(unknown, "rewards")
        raise RewardFault(
            f"returned a dict without the key 'rewards' (its keys: {', '.join(map(repr, keys)) or 'none'}){hint}; "
            "a reward dict is {'rewards': ..., 'scores': ... (optional), 'extra_logs': {...} (optional)}",
            kind="dict_keys", where=where,
        )
    if unknown and not allow_extra_keys:
        hints = "".join(_did_you_mean([k], *DICT_KEYS) for k in unknown)
        raise RewardFault(
            f"returned a dict with unexpected key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}{hints}; only 'rewards', 'scores' and 'extra_logs' are read",
            kind="dict_keys", where=where,
        )
    rewards = _numbers(value["rewards"], n, where, "rewards", finite=True)
    scores = None
    if value.get("scores") is not None:
        scores = _numbers(value["scores"], n, where, "scores", finite=True)
    extra_logs: dict[str, list[float]] = {}
    logs = value.get("extra_logs")
    if logs is not None:
        if not isinstance(logs, dict):
            raise RewardFault(
                f"'extra_logs' is {_type_name(logs)}; it must be a dict of name -> one number per query",
                kind="extra_logs", where=where,
            )
        for name, values in logs.items():
            extra_logs[str(name)] = _numbers(values, n, where, f"extra_logs[{str(name)!r}]", finite=False)
    return RewardBatch(rewards=rewards, scores=scores, extra_logs=extra_logs)


def _numbers(value: Any, n: int, where: str, field: str, *, finite: bool) -> list[float]:
    """One float per query from a tensor, ndarray, list or tuple; `field` names it in messages."""
    kind = "extra_logs" if field.startswith("extra_logs") else None
    if value is None:
        raise RewardFault(f"{field} is None (a missing return statement?)", kind=kind or "type", where=where)
    if isinstance(value, (str, bytes)):
        raise RewardFault(
            f"{field} is a string ({_short(value)}); return numbers, one per query", kind=kind or "non_number",
            where=where,
        )
    if _is_array(value):
        shape = tuple(int(d) for d in value.shape)
        if len(shape) != 1:
            fix = " (use .squeeze(-1) or .flatten())" if len(shape) == 2 and shape == (n, 1) else ""
            what = "a single number" if len(shape) == 0 else f"shape {shape}"
            raise RewardFault(
                f"{field} has {what}; it must be 1-D with one value per query (length {n}){fix}",
                kind=kind or ("length" if len(shape) == 0 else "shape"), where=where,
            )
        items: Sequence[Any] = value.tolist()
    elif isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, numbers.Number):
        raise RewardFault(
            f"{field} is a single number ({value!r}) for {n} queries; return one value per query",
            kind=kind or "length", where=where,
        )
    else:
        raise RewardFault(
            f"{field} is {_type_name(value)}; return a tensor, list or numpy array of {n} numbers "
            "(or a dict with 'rewards')",
            kind=kind or "type", where=where,
        )
    if len(items) != n:
        raise RewardFault(
            f"{field} has {len(items)} value{'s' if len(items) != 1 else ''} for {n} quer{'ies' if n != 1 else 'y'}; "
            "return exactly one per query, in order",
            kind=kind or "length", where=where,
        )
    out = []
    for i, item in enumerate(items):
        number = _as_float(item)
        if number is None:
            what = f"a string ({_short(item)})" if isinstance(item, (str, bytes)) else _type_name(item)
            raise RewardFault(
                f"{field} value is {what}, not a number", kind=kind or "non_number", where=where, index=i
            )
        if finite and not math.isfinite(number):
            raise RewardFault(f"{field} value is {number}, not a finite number", kind="nan", where=where, index=i)
        out.append(number)
    return out


def _as_float(item: Any) -> float | None:
    """A real number (bool, int, float, numpy scalar, 0-d tensor) as a float; None for anything else."""
    if isinstance(item, numbers.Real):
        return float(item)
    if _is_array(item) and tuple(item.shape) in ((), (1,)):
        inner = item.item() if hasattr(item, "item") else None
        return float(inner) if isinstance(inner, numbers.Real) else None
    return None


def _is_array(value: Any) -> bool:
    """A torch tensor or numpy array, recognised without importing either."""
    return hasattr(value, "shape") and hasattr(value, "tolist") and not isinstance(value, (str, bytes))


def _type_name(value: Any) -> str:
    mod = type(value).__module__
    name = type(value).__qualname__ if mod in ("builtins", None) else f"{mod}.{type(value).__qualname__}"
    return f"a {name}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _did_you_mean(candidates: list[str], *targets: str) -> str:
    for word in candidates:
        match = difflib.get_close_matches(word, targets, n=1, cutoff=0.6)
        if match and match[0] != word:
            return f" (did you mean {match[0]!r} instead of {word!r}?)"
    return ""
