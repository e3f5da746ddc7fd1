"""A model or dataset named by a local folder or a Hugging Face Hub ID (`org/name`) -> a local folder.

Hub IDs resolve through huggingface_hub's own cache and settings (HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN),
so a model downloaded once, by rlhfctl, transformers or `hf download`, is found again offline. A process resolves
the names it was given once, where the run starts (the train-ppo driver, the serve-rm and bench-rm processes), and
hands local folders to the processes it starts: Ray workers and a serve-rm model process never call the Hub.
Nothing here runs for `--print-config`.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from rlhfctl.errors import RlhfctlError, UsageError

RepoType = Literal["model", "dataset"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files a model repository may carry that no loader here reads: other frameworks' weights and the original
# (pre-conversion) checkpoints, which for a Llama 3 repository double the download.
_NOT_LOADED = ["original/*", "*.pth", "*.gguf", "*.onnx", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.tflite",
               "*.mlmodel", "coreml/*", "openvino/*"]
_TRUE = ("1", "true", "yes", "on")


def is_hub_id(name: str) -> bool:
    """`org/name` as the Hub spells repositories (a bare `gpt2` is taken as a folder: it is too easily a typo)."""
    if not _HUB_ID.match(name):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def cache_dir() -> Path:
    """The Hub cache huggingface_hub uses, read from the environment now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve(name: str, *, flag: str | None = None, revision: str | None = None,
            repo_type: RepoType = "model") -> str:
    """A local folder for `name`: the folder itself, or the Hub repository's snapshot (downloaded if need be).

    `flag` names the option in messages. Raises UsageError (exit 2) for a name that is neither, a repository that
    is gated, missing or refuses the token, and a repository that is not cached while offline."""
    local = Path(name).expanduser()
    if local.exists():
        return str(local)
    what = name if not flag else f"{flag}{name}" if flag.endswith(":") else f"{flag} {name}"
    if not is_hub_id(name):
        noun = "model" if repo_type == "model" else "dataset"
        raise UsageError(f"{what}: no such folder, and not a Hugging Face Hub {noun} ID (org/name)")
    folder = _snapshot(name, what, revision, repo_type)
    shown = f" at revision {revision}" if revision else ""
    print(f"rlhfctl: {what}{shown}: Hub snapshot {Path(folder).name[:12]} in {folder}", file=sys.stderr)
    return folder


def missing_folder(path: str | Path) -> str:
    """Why a folder a model loader was handed is not there. A Hub ID resolves where the run starts, so a worker on
    another machine needs that machine to see the same cache."""
    if "/snapshots/" in str(path) and "models--" in str(path):
        return ("no such folder on this machine: a Hub snapshot resolved where the run started; on a multi-node "
                "Ray cluster, put HF_HUB_CACHE (or HF_HOME) on a folder every node shares")
    return "no such folder"


# ---------------------------------------------------------------------------------------------------- download
def _snapshot(repo_id: str, what: str, revision: str | None, repo_type: RepoType) -> str:
    """snapshot_download, with each way it fails turned into one message. Online, huggingface_hub itself falls
    back to the cache when the Hub cannot be reached or refuses the request, and raises only when that fails too."""
    from huggingface_hub import errors, snapshot_download

    cache = cache_dir()
    try:
        # The same patterns offline as online: huggingface_hub checks a cached snapshot against the file list it
        # saved when downloading, less the files skipped.
        ignore = _skipped(repo_id, revision, repo_type, cache)
        if offline():
            return snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache,
                                     local_files_only=True, ignore_patterns=ignore)
        with _progress_bars():
            return snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache,
                                     ignore_patterns=ignore)
    except errors.LocalEntryNotFoundError as exc:
        refused = _refused_token(exc.__cause__, what)
        raise UsageError(refused or _not_cached(repo_id, what, revision, repo_type, cache, exc)) from None
    except errors.GatedRepoError:
        raise UsageError(f"{what}: a gated repository: accept its terms at https://huggingface.co/"
                         f"{_url_path(repo_id, repo_type)}, then set HF_TOKEN to a token of that account "
                         "(or run `hf auth login`)") from None
    except errors.RepositoryNotFoundError:
        raise UsageError(f"{what}: no such {repo_type} repository on the Hugging Face Hub, or a private one that "
                         "HF_TOKEN (missing or without access) cannot see; check the ID and the token") from None
    except errors.RevisionNotFoundError:
        raise UsageError(f"{what}: the repository has no revision {revision!r} (--revision: a branch, tag or "
                         "commit)") from None
    except errors.HfHubHTTPError as exc:
        raise (UsageError(refused) if (refused := _refused_token(exc, what)) else
               RlhfctlError(f"{what}: downloading from the Hugging Face Hub failed: {exc}")) from None
    except errors.HFValidationError as exc:
        raise UsageError(f"{what}: {exc}") from None
    except OSError as exc:  # disk full, a cache folder we may not write
        raise RlhfctlError(f"{what}: cannot store the download in {cache}: {exc}") from None


def _refused_token(exc: BaseException | None, what: str) -> str | None:
    from huggingface_hub import errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.HfHubHTTPError) and status in (401, 403):
        return (f"{what}: the Hub refused the token (HTTP {status}): HF_TOKEN or the token saved by "
                "`hf auth login` is invalid or lacks access")
    return None


def _not_cached(repo_id: str, what: str, revision: str | None, repo_type: RepoType, cache: Path,
                exc: Exception) -> str:
    """One message: not here, why it was not fetched, and the three ways to fix it."""
    which = f"revision {revision} of {repo_id}" if revision else repo_id
    download = f"hf download {repo_id}" + (f" --repo-type {repo_type}" if repo_type != "model" else "") \
        + (f" --revision {revision}" if revision else "")
    if offline():
        why = "HF_HUB_OFFLINE=1 forbids downloading it"
    else:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        why = f"the Hub cannot be reached ({cause})"
    local = "folder" if repo_type == "model" else "file or folder"
    return (f"{what}: no such local {local}, and {which} is not in the Hugging Face cache {cache} while {why}. "
            f"Run once with network access, set HF_HUB_OFFLINE=0, or download it first with `{download}` "
            "(HF_HUB_CACHE / HF_HOME choose the cache)")


def _url_path(repo_id: str, repo_type: RepoType) -> str:
    return repo_id if repo_type == "model" else f"datasets/{repo_id}"


def _skipped(repo_id: str, revision: str | None, repo_type: RepoType, cache: Path) -> list[str]:
    """Files of a model repository that no loader here reads (other formats, original checkpoints), and the .bin
    weights where the repository also has them as safetensors, which transformers reads."""
    if repo_type != "model":
        return []
    from huggingface_hub import HfApi, get_cached_repo_tree

    files: list[str] = []
    try:  # online, the Hub's listing (a branch may have moved); offline, the one saved with the download
        info = None if offline() else HfApi().repo_info(repo_id, revision=revision)  # fails fast (no retries)
        files = [f.rfilename for f in info.siblings or []] if info is not None else []
    except Exception:  # unreachable, gated, missing: snapshot_download decides (it may still find the cache)
        pass
    if not files:
        try:
            files = [f.path for f in get_cached_repo_tree(repo_id, revision=revision, cache_dir=cache)]
        except Exception:  # never downloaded by snapshot_download: nothing to compare a snapshot with
            pass
    duplicates = ["*.bin", "*.pt"] if any(f.endswith(".safetensors") for f in files) else []
    return _NOT_LOADED + duplicates


@contextmanager
def _progress_bars() -> Iterator[None]:
    """Downloads show the Hub's progress bars, even after transformers was told to hide its own (which hides the
    Hub's too); HF_HUB_DISABLE_PROGRESS_BARS=1 still turns them off."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if was_disabled and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").lower() not in _TRUE:
        enable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            disable_progress_bars()
