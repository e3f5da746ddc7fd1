"""Shared test set-up: offline, one torch thread, tiny models built once per session, and one Ray cluster for the
end-to-end runs that can share it."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["RAY_AUTH_MODE"] = "disabled"  # a driver in this process joins the tests' clusters

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import PROMPTS, write_jsonl  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A tiny LlamaForCausalLM + tokenizer folder (hidden 64, 2 layers, 2 heads, head_dim 32). Read-only."""
    from rlhfctl.models.tiny import TinyArch, make_tiny_policy

    arch = TinyArch(hidden_size=64, num_layers=2, num_heads=2)
    return make_tiny_policy(tmp_path_factory.mktemp("tiny_policy"), arch)


@pytest.fixture(scope="session")
def tiny_rm_seqcls_dir(tmp_path_factory):
    """A tiny LlamaForSequenceClassification reward model (num_labels=1). Read-only."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(tmp_path_factory.mktemp("tiny_rm_seqcls"), format="seqcls")


@pytest.fixture(scope="session")
def tiny_rm_openrlhf_dir(tmp_path_factory):
    """A tiny reward model in OpenRLHF's layout: head "value_head", normalize_reward, mean 0.5, std 2.0."""
    from rlhfctl.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(
        tmp_path_factory.mktemp("tiny_rm_openrlhf"),
        format="openrlhf",
        value_head_prefix="value_head",
        normalize_reward=True,
        mean=0.5,
        std=2.0,
    )


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory):
    """A small .jsonl prompt file with keys "input" and "answer" (rows in `PROMPTS`). Read-only."""
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", PROMPTS)


@pytest.fixture(scope="session")
def count_rm_dir(tmp_path_factory):
    """A custom-code reward model (auto_map -> modeling_count.py): score = how many "x" the text holds."""
    from rlhfctl.models.tiny_kinds import make_count_model

    return make_count_model(tmp_path_factory.mktemp("count_rm"), count_char="x")


@pytest.fixture(scope="session")
def pairwise_dir(tmp_path_factory):
    """A custom-code pairwise model: logit of P(A beats B) = x's in response A - x's in response B."""
    from rlhfctl.models.tiny_kinds import make_count_model

    return make_count_model(tmp_path_factory.mktemp("pairwise_rm"), count_char="x", pairwise=True)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory, worker_id):
    """One Ray cluster for the whole test run (no GPU), started by `ray start` in processes of its own: train-ppo
    runs join it with --ray-address instead of starting a local Ray each, and a test that drives Ray in this process
    joins it with ray.init(address=...) (and ray.shutdown() after). Under xdist the first worker that asks starts it
    and the others join it (an idle Ray cluster costs about 4 CPU seconds a minute, and 8 to start); the controller
    stops it at the end (pytest_sessionfinish). Tests that need a topology of their own (several nodes, a job
    server) start their own cluster."""
    from filelock import FileLock

    from tests.helpers.ray_cluster import SESSION_CPUS, LocalCluster, start_cluster

    if worker_id == "master":  # not under xdist: this process owns it
        cluster = start_cluster([("node_session", SESSION_CPUS)], fast_node_loss=False)
        yield cluster.address
        cluster.stop()
        return
    shared = _shared_cluster_file(tmp_path_factory.getbasetemp().parent)
    with FileLock(str(shared) + ".lock"):
        if not shared.exists():
            shared.write_text(start_cluster([("node_session", SESSION_CPUS)], fast_node_loss=False).to_json())
        address = LocalCluster.from_json(shared.read_text()).address
    yield address


def _shared_cluster_file(root: Path) -> Path:
    """Where the xdist workers find the shared cluster: the run's temp root, the parent of each worker's basetemp."""
    return root / "ray_session_cluster.json"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The xdist controller, once every worker is done: stop the Ray cluster the workers shared."""
    if hasattr(session.config, "workerinput"):
        return
    shared = _shared_cluster_file(session.config._tmp_path_factory.getbasetemp())
    if shared.exists():
        from tests.helpers.ray_cluster import LocalCluster

        LocalCluster.from_json(shared.read_text()).stop()


# Seconds each module took in a full run (3 workers on 2 cores, loaded; only the order matters).
# xdist hands out whole modules (--dist loadfile, --no-loadscope-reorder) in collection order, so the costliest start
# first and no long module starts last to hold the run open while the other workers idle; unlisted modules are cheap
# and go last, in their usual order. Re-measure with --durations=0 when a module's cost changes much.
MODULE_SECONDS = {
    "tests.e2e.test_async_train_e2e": 167, "tests.e2e.test_vllm_train_ppo": 136, "tests.e2e.test_hub_e2e": 132,
    "tests.e2e.test_cluster_job": 82, "tests.e2e.test_vllm_engine": 75, "tests.e2e.test_lora_train_ppo": 70,
    "tests.e2e.test_vllm_tensor_parallel": 63, "tests.e2e.test_cluster": 56, "tests.e2e.test_serve_rm_vllm_judge": 54,
    "tests.e2e.test_train_ppo_resume": 35, "tests.e2e.test_serve_rm_vllm": 34, "tests.unit.test_hub": 31,
    "tests.e2e.test_packing_e2e": 30, "tests.e2e.test_train_ppo_e2e": 45, "tests.unit.test_judge": 26,
    "tests.e2e.test_train_ppo_robust": 24, "tests.e2e.test_demo": 23, "tests.e2e.test_bench_rm": 21,
    "tests.unit.test_reward_pool": 20, "tests.unit.test_engine": 19, "tests.e2e.test_ctrl_c": 16,
    "tests.e2e.test_sandbox": 14,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The costliest modules first (MODULE_SECONDS); a module's tests keep their order."""
    def cost(item: pytest.Item) -> int:
        module = getattr(item, "module", None)
        return -MODULE_SECONDS.get(getattr(module, "__name__", ""), 0)
    items.sort(key=cost)  # stable
