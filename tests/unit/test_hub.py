"""Models and datasets named by Hugging Face Hub ID, resolved through a Hub cache laid out in a temporary folder with
HF_HUB_OFFLINE=1 (the real huggingface_hub reads it), and every way a Hub name can be wrong: not cached offline, a
revision that is not there, a malformed ID, a gated or missing repository and a refused token (a stub Hub endpoint
answering as the Hub does)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import ENV, PROMPTS, run_cli, run_rlhfctl
from tests.helpers.hub_cache import add_to_hub_cache, commit_of


POLICY_ID, RM_ID, DATA_ID = "org/tiny-policy", "org/tiny-rm", "org/tiny-prompts"


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, tiny_policy_dir, tiny_rm_seqcls_dir, prompt_file) -> Path:
    """A Hub cache holding a tiny policy, a tiny reward model (also at tag v1) and a prompt dataset."""
    cache = tmp_path_factory.mktemp("hub") / "cache"
    add_to_hub_cache(cache, POLICY_ID, tiny_policy_dir)
    add_to_hub_cache(cache, RM_ID, tiny_rm_seqcls_dir)
    add_to_hub_cache(cache, RM_ID, tiny_rm_seqcls_dir, ref="v1")
    data = tmp_path_factory.mktemp("dataset")
    (data / "train.jsonl").write_text(Path(prompt_file).read_text())
    add_to_hub_cache(cache, DATA_ID, data, repo_type="dataset")
    return cache


@pytest.fixture
def hub_env(hub_cache, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


# ------------------------------------------------------------------------------------------------ resolution
def test_huggingface_hub_itself_finds_the_cache_offline(hub_cache):
    from huggingface_hub import snapshot_download

    folder = snapshot_download(RM_ID, cache_dir=hub_cache, local_files_only=True)
    assert Path(folder) == hub_cache / "models--org--tiny-rm" / "snapshots" / commit_of(RM_ID)
    assert (Path(folder) / "config.json").is_file()
    tagged = snapshot_download(RM_ID, cache_dir=hub_cache, local_files_only=True, revision="v1")
    assert Path(tagged).name == commit_of(RM_ID, "v1")


def test_ids_resolve_to_snapshots_and_folders_stay_folders(hub_env, tiny_policy_dir, capsys):
    from rlhfctl.hub import resolve

    assert resolve(str(tiny_policy_dir), flag="--pretrain") == str(tiny_policy_dir)
    folder = resolve(POLICY_ID, flag="--pretrain")
    assert Path(folder).name == commit_of(POLICY_ID) and (Path(folder) / "tokenizer.json").is_file()
    assert Path(resolve(RM_ID, revision="v1")).name == commit_of(RM_ID, "v1")
    assert Path(resolve(RM_ID, revision=commit_of(RM_ID))).name == commit_of(RM_ID)  # a commit hash
    assert f"--pretrain {POLICY_ID}: Hub snapshot {commit_of(POLICY_ID)[:12]}" in capsys.readouterr().err


def test_hf_home_locates_the_cache(hub_cache, monkeypatch):
    from rlhfctl.hub import resolve

    home = hub_cache.parent / "home"
    home.mkdir(exist_ok=True)
    if not (home / "hub").exists():
        (home / "hub").symlink_to(hub_cache)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Path(resolve(POLICY_ID)).name == commit_of(POLICY_ID)


def test_train_ppo_resolves_only_the_models_it_loads():
    from rlhfctl.config import resolve as resolve_config
    from rlhfctl.ppo.run import model_fields_used

    base = {"pretrain": "a/p", "prompt_data": "d.jsonl", "reward_pretrain": "a/rm", "critic_pretrain": "a/c",
            "rollout_batch_size": 8, "train_batch_size": 8}
    cfg = resolve_config("train-ppo", base)
    assert model_fields_used(cfg, ["actor", "ref", "critic", "reward"]) == ["pretrain", "critic_pretrain",
                                                                             "reward_pretrain"]
    assert model_fields_used(cfg.model_copy(update={"critic_pretrain": None}), ["actor", "critic"]) == [
        "pretrain", "reward_pretrain"]
    assert model_fields_used(cfg, ["actor", "ref"]) == ["pretrain"]


def test_progress_bars_show_during_a_download_after_transformers_hid_them(monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled

    from rlhfctl.hub import _progress_bars
    from rlhfctl.models.quiet import quiet_transformers

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_transformers()
    assert are_progress_bars_disabled()
    with _progress_bars():
        assert not are_progress_bars_disabled()
    assert are_progress_bars_disabled()


def test_a_hub_dataset_loads_from_the_same_cache(hub_env):
    from rlhfctl.data import load_prompts

    examples = load_prompts(DATA_ID, label_key="answer")
    assert [e.label for e in examples] == [r["answer"] for r in PROMPTS]


# ------------------------------------------------------------------------------------------------ bad input
def test_an_id_not_cached_offline_is_one_clear_message(hub_env, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", "org/not-here"], capsys)
    text = " ".join(err.split())
    assert code == 2, err
    assert "--reward-pretrain org/not-here: no such local folder, and org/not-here is not in the Hugging Face " \
           f"cache {hub_env} while HF_HUB_OFFLINE=1 forbids downloading it" in text
    assert "set HF_HUB_OFFLINE=0" in text and "`hf download org/not-here`" in text
    assert "Traceback" not in err and text.count("Error:") == 1


def test_train_ppo_stops_before_ray_on_an_uncached_id(hub_env, prompt_file, capsys):
    code, _, err = run_cli(["train-ppo", "--pretrain", "org/not-here", "--prompt-data", str(prompt_file),
                             "--remote-rm-url", "http://127.0.0.1:1/get_reward"], capsys)
    assert code == 2 and "--pretrain org/not-here: no such local folder" in " ".join(err.split())


def test_a_dataset_not_cached_offline_says_so(hub_env):
    from rlhfctl.data import load_rows
    from rlhfctl.errors import DataError

    with pytest.raises(DataError, match=r"org/no-data: no such local file or folder, and org/no-data is not in the .*"
                                        r"`hf download org/no-data --repo-type dataset`"):
        load_rows("org/no-data")


def test_a_revision_not_in_the_cache_exits_2(hub_env, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", RM_ID, "--revision", "v2"], capsys)
    text = " ".join(err.split())
    assert code == 2, err
    assert f"revision v2 of {RM_ID} is not in the Hugging Face cache" in text
    assert f"`hf download {RM_ID} --revision v2`" in text


@pytest.mark.parametrize("name", ["org/has space", "a/b/c", "org/-x", "./no-such-rm", "no-such-rm", "org--x/y"])
def test_a_missing_folder_that_is_no_hub_id_is_named(hub_env, name, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", name], capsys)
    assert code == 2, err
    assert f"--reward-pretrain {name}: no such folder, and not a Hugging Face Hub model ID (org/name)" in \
        " ".join(err.split())


def test_revision_with_only_local_folders_is_refused(hub_env, tiny_rm_seqcls_dir, capsys):
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", str(tiny_rm_seqcls_dir), "--revision", "v1"], capsys)
    assert code == 2 and "--revision v1: no model of this run is named by a Hub ID" in " ".join(err.split())


def test_print_config_resolves_nothing(hub_env, capsys):
    code, out, err = run_cli(["train-ppo", "--pretrain", "org/never-downloaded", "--prompt-data", "org/no-data",
                               "--remote-rm-url", "http://x/get_reward", "--revision", "v3", "--print-config"],
                              capsys)
    assert code == 0, err
    assert "pretrain: org/never-downloaded" in out and "revision: v3" in out and "Hub snapshot" not in err


# ------------------------------------------------------------------------------------------------ online
class _StubHub(BaseHTTPRequestHandler):
    """The Hub's HTTP API as huggingface_hub calls it: repositories in FILES are listed and downloaded; the ones in
    ERRORS answer as the Hub does for a gated repo, a missing one, a refused token and a missing revision."""

    FILES: dict[str, Path] = {}
    TOKENS: set[str] = set()
    ERRORS = {"org/gated": (403, "GatedRepo"), "org/missing": (404, "RepoNotFound"), "org/bad-token": (403, None),
              "org/no-rev": (404, "RevisionNotFound")}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.TOKENS.add(self.headers.get("Authorization", ""))
        parts = self.path.split("?")[0].strip("/").split("/")
        api = parts[0] == "api"
        repo = "/".join(parts[2:4] if api else parts[0:2])
        if repo in self.ERRORS or repo not in self.FILES:
            status, code = self.ERRORS.get(repo, (404, "RepoNotFound"))
            body = json.dumps({"error": code or "Invalid credentials"}).encode()
            return self._send(status, body, {"X-Error-Code": code} if code else {})
        folder, commit = self.FILES[repo], commit_of(repo)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if api and (len(parts) == 4 or parts[4] == "revision"):  # the repository's info
            return self._send(200, json.dumps({"id": repo, "sha": commit,
                                               "siblings": [{"rfilename": f} for f in files]}).encode())
        if api:  # the tree
            return self._send(200, json.dumps([{"type": "file", "path": f, "size": (folder / f).stat().st_size,
                                                "oid": commit_of(f)} for f in files]).encode())
        data = (folder / "/".join(parts[4:])).read_bytes()
        self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{commit_of(str(len(data)) + parts[-1])}"'})

    do_HEAD = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_hub(tmp_path_factory, tiny_rm_seqcls_dir):
    """A stub Hub serving the tiny reward model as org/served, with a duplicate .bin and an original/ checkpoint
    that a download leaves out."""
    import shutil

    repo = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_rm_seqcls_dir, repo, dirs_exist_ok=True)
    (repo / "pytorch_model.bin").write_bytes(b"the same weights again")
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(b"the original checkpoint")
    _StubHub.FILES = {"org/served": repo}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def online_env(endpoint: str, cache: Path) -> dict[str, str]:
    return {**ENV, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_not_a_real_token",
            "HF_HUB_CACHE": str(cache)}


def bench_in_process(model: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_rlhfctl("bench-rm", "--reward-pretrain", model, "--in-process", "--num-requests", "4", "--warmup", "0",
                       "--json", env=env, timeout=180)


@pytest.mark.slow
def test_a_download_shows_progress_skips_duplicates_and_is_found_offline_later(stub_hub, tmp_path):
    cache = tmp_path / "cache"
    first = bench_in_process("org/served", online_env(stub_hub, cache))
    assert first.returncode == 0, first.stderr
    assert re.search(r"Fetching \d+ files: 100%", first.stderr)  # the Hub's progress bar
    snapshot = cache / "models--org--served" / "snapshots" / commit_of("org/served")
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "config.json").is_file()
    assert not (snapshot / "pytorch_model.bin").exists() and not (snapshot / "original").exists()
    assert json.loads(first.stdout)["levels"][0]["completed"] == 4
    assert "Bearer hf_not_a_real_token" in _StubHub.TOKENS  # HF_TOKEN reached the Hub
    # Later, offline, and with the Hub unreachable: the cache answers.
    for env in ({**online_env(stub_hub, cache), "HF_HUB_OFFLINE": "1"},
                online_env("http://127.0.0.1:9", cache)):
        again = bench_in_process("org/served", env)
        assert again.returncode == 0, again.stderr
        assert "Fetching" not in again.stderr and f"Hub snapshot {commit_of('org/served')[:12]}" in again.stderr


def test_an_unreachable_hub_and_no_cache_is_one_message(tmp_path):
    result = run_rlhfctl("serve-rm", "--reward-pretrain", "org/anything",
                         env=online_env("http://127.0.0.1:9", tmp_path / "cache"), timeout=120)
    assert result.returncode == 2, result.stderr
    text = " ".join(result.stderr.split())
    assert "--reward-pretrain org/anything: no such local folder, and org/anything is not in the Hugging Face " \
           "cache" in text and "while the Hub cannot be reached" in text and "Traceback" not in text


@pytest.mark.parametrize("repo,message", [
    ("org/gated", "a gated repository: accept its terms at https://huggingface.co/org/gated, then set HF_TOKEN"),
    ("org/missing", "no such model repository on the Hugging Face Hub, or a private one that HF_TOKEN"),
    ("org/bad-token", "the Hub refused the token (HTTP 403)"),
    ("org/no-rev", "the repository has no revision 'v9' (--revision"),
])
def test_gated_missing_and_refused_repositories_exit_2(stub_hub, tmp_path, repo, message):
    args = ["--revision", "v9"] if repo == "org/no-rev" else []
    result = run_rlhfctl("serve-rm", "--reward-pretrain", repo, *args, env=online_env(stub_hub, tmp_path / "cache"),
                         timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"--reward-pretrain {repo}: {message}" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_a_worker_missing_the_drivers_snapshot_is_told_to_share_the_cache(hub_env, tmp_path):
    """A Hub ID resolves on the machine that starts the run; a worker elsewhere may not see that folder."""
    from rlhfctl.errors import ConfigError
    from rlhfctl.models.actor import load_tokenizer

    elsewhere = tmp_path / "models--org--tiny-policy" / "snapshots" / commit_of(POLICY_ID)
    with pytest.raises(ConfigError, match="no such folder on this machine: .* HF_HUB_CACHE .* every node shares"):
        load_tokenizer(str(elsewhere))
