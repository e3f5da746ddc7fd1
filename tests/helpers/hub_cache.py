"""Lay out a Hugging Face Hub cache in a folder, as huggingface_hub writes it, so Hub IDs resolve offline in tests.

    CACHE/models--ORG--NAME/snapshots/<40-hex commit>/<files>     (datasets--ORG--NAME for datasets)
    CACHE/models--ORG--NAME/refs/main                             (the commit of the branch; a tag gets refs/TAG)

Files are plain copies in the snapshot folder (huggingface_hub itself links them to blobs/; readers don't care).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def commit_of(repo_id: str, ref: str = "main") -> str:
    """A fixed 40-hex "commit" per (repository, ref)."""
    return hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()


def add_to_hub_cache(cache: Path, repo_id: str, source: Path, *, repo_type: str = "model",
                     ref: str = "main") -> Path:
    """Copy the files of `source` (a folder) into CACHE as `repo_id` at `ref`; return the snapshot folder."""
    repo = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit_of(repo_id, ref)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot
