"""A prompt's group: the consecutive samples sharing one prompt, which a pairwise reward compares with each other.

Wherever a batch is split (over reward servers, over reward-model workers), it is split between groups, never
inside one, so a group always reaches one scorer whole. A sample without a prompt ("") is a group of its own.
"""

from __future__ import annotations

from typing import Sequence


def group_starts(prompts: Sequence[str]) -> list[int]:
    """Indices where a new group begins."""
    return [i for i, p in enumerate(prompts) if i == 0 or p == "" or p != prompts[i - 1]]


def group_shards(prompts: Sequence[str], parts: int) -> list[slice]:
    """At most `parts` contiguous slices covering the batch, cut only between groups, with as equal a number of
    groups each as can be; none empty (fewer slices when there are fewer groups)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, not {parts}")
    starts = group_starts(prompts)
    if not starts:
        return []
    bounds = [*starts, len(prompts)]
    parts = min(parts, len(starts))
    cuts = [bounds[len(starts) * r // parts] for r in range(parts + 1)]
    return [slice(cuts[r], cuts[r + 1]) for r in range(parts)]


def groups_by_prompt(prompts: Sequence[str]) -> list[list[int]]:
    """Indices of the samples of each distinct prompt, in order of first appearance (a request may interleave)."""
    out: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault(p, []).append(i)
    return list(out.values())
