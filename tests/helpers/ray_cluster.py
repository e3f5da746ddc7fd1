"""A throwaway multi-node Ray cluster on this machine: a head and workers started by `ray start` as separate
processes, told apart by custom resources ({"node_a": 1}, ...). Every process it starts is found again by its temp
dir and stopped by pid, so a test never touches another Ray on the machine (no global `ray stop`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.env import ENV

RAY = str(Path(sys.executable).with_name("ray"))
SESSION_CPUS = 24  # logical CPUs of the tests' shared cluster (tests/conftest.py): 8 for each of 3 xdist workers


def free_ports(n: int) -> list[int]:
    """n different TCP ports free right now (held open together, so no two are the same)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def cluster_env(fast_node_loss: bool = True) -> dict[str, str]:
    """The environment of the cluster's processes: the tests' ENV (this checkout first on PYTHONPATH, which Ray
    workers inherit from their raylet; token auth off; the venv's scripts on PATH for a job's `rlhfctl`), and with
    `fast_node_loss` a GCS that declares a silent node dead after ~2 s (default ~30 s), so a lost node shows at once
    (a cluster that lives the whole session keeps Ray's default: a loaded machine can be silent for 2 s)."""
    if not fast_node_loss:
        return dict(ENV)
    return {**ENV, "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    name: str  # its custom resource, e.g. "node_a"
    node_manager_port: int
    agent_port: int  # its dashboard agent's HTTP port (Ray's default, 52365, is one per machine)
    node_id: str = ""


@dataclass
class LocalCluster:
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    with_dashboard: bool = False
    fast_node_loss: bool = True
    ports: list[int] = field(default_factory=list)  # spare free ports: node managers, agents, the client server
    nodes: list[Node] = field(default_factory=list)

    def to_json(self) -> str:
        """What another process needs to join this cluster and to stop it (nodes and spare ports stay here)."""
        return json.dumps({"temp_dir": str(self.temp_dir), "gcs_port": self.gcs_port,
                           "dashboard_port": self.dashboard_port, "with_dashboard": self.with_dashboard})

    @classmethod
    def from_json(cls, text: str) -> "LocalCluster":
        fields = json.loads(text)
        return cls(Path(fields["temp_dir"]), fields["gcs_port"], fields["dashboard_port"], fields["with_dashboard"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, cpus: int, head: bool) -> subprocess.Popen:
        port, agent_port = self.ports.pop(), self.ports.pop()
        # Each node's dashboard agent on a port of its own: with Ray's fixed default every agent on this machine
        # but the first fails to bind and stays up without HTTP, and `ray job submit` then answers "No available
        # agent to submit job" (the job server hands each job to the head's agent).
        args = [RAY, "start", "--num-cpus", str(cpus), "--num-gpus", "0", "--resources", json.dumps({name: 1}),
                "--node-manager-port", str(port), "--dashboard-agent-listen-port", str(agent_port),
                "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        if head:
            args += ["--head", "--port", str(self.gcs_port), "--temp-dir", str(self.temp_dir)]
            # Ports of our own, so this head never collides with another Ray on the machine.
            args += ["--include-dashboard", str(self.with_dashboard).lower(), "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(self.ports.pop())]
        else:
            # A temp dir of its own, as a machine of its own has: sharing the head's, a worker's runtime-env agent
            # unpacks a job's working_dir over the very folder the job's driver runs in on the head.
            args += ["--address", self.address, "--temp-dir", str(self.temp_dir / name)]
        self.nodes.append(Node(name, port, agent_port))
        return subprocess.Popen(args, env=cluster_env(self.fast_node_loss), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def _started(name: str, proc: subprocess.Popen) -> None:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{out[-3000:]}")

    def wait_job_server(self, timeout_s: float = 180.0) -> None:
        """Return once the job server can take a job: the dashboard answers and the head's dashboard agent, to
        which it hands each job, serves HTTP. Ray's own wait for that agent is 10 s per submission, less than its
        start takes on a loaded machine; past `timeout_s`, or once the agent logged that its HTTP server failed,
        raise with what was not ready and the agent's log."""
        checks = {"dashboard": f"{self.dashboard_url}/api/version",
                  "head's dashboard agent": f"http://127.0.0.1:{self.nodes[0].agent_port}/api/healthz"}
        agent_log = self.temp_dir / "session_latest" / "logs" / "dashboard_agent.log"
        start, errors = time.monotonic(), {}
        while checks:
            for what, url in list(checks.items()):
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        if reply.status == 200:
                            del checks[what]
                except (urllib.error.URLError, OSError) as exc:
                    errors[what] = f"{what} at {url}: {exc}"
            log = agent_log.read_text(errors="replace") if agent_log.exists() else ""
            if checks and ("Failed to start HTTP server" in log or time.monotonic() - start > timeout_s):
                pending = "; ".join(errors.get(what, what) for what in checks)
                raise RuntimeError(f"the job server at {self.dashboard_url} cannot take jobs after "
                                   f"{time.monotonic() - start:.0f} s; not ready: {pending}\n{agent_log}:\n{log[-3000:]}")
            if checks:
                time.sleep(0.5)

    def node_ids(self) -> dict[str, str]:
        """Custom resource name -> node id of the nodes alive now (asked in a subprocess: no Ray in this one)."""
        code = ("import json, ray; ray.init(address=%r, logging_level='error'); "
                "print(json.dumps({k: n['NodeID'] for n in ray.nodes() if n['Alive'] "
                "for k in n['Resources'] if k.startswith('node_')}))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=cluster_env(), capture_output=True, text=True,
                             timeout=60)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _pids(self, *needles: str) -> list[int]:
        """Processes whose command line holds one of `needles`, and their descendants (Ray renames its workers
        and agents `ray::...`, so those are found as children of their raylet)."""
        parent: dict[int, int] = {}
        matched = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") + " "
                parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if any(needle in cmdline for needle in needles):
                matched.add(int(proc.name))
        grew = True
        while grew:
            more = {pid for pid, ppid in parent.items() if ppid in matched} - matched
            matched |= more
            grew = bool(more)
        return sorted(matched)

    def _kill(self, pids: list[int], sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill_node(self, name: str) -> None:
        """The node's raylet killed (as a machine lost would): its workers exit with it, the GCS marks it dead."""
        node = next(n for n in self.nodes if n.name == name)
        self._kill(self._pids(f"--node_manager_port={node.node_manager_port} "), signal.SIGKILL)

    def stop(self) -> None:
        """Every process of this cluster (they all name its temp dir or session), by pid; then the temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._kill(self._pids(str(self.temp_dir), f":{self.gcs_port} "), sig)
            time.sleep(1.0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(nodes: list[tuple[str, int]], dashboard: bool = False, fast_node_loss: bool = True) -> LocalCluster:
    """A head (the first of `nodes`: name, CPUs) and one worker per other entry, with `dashboard` its job server
    ready for jobs; stopped again if a start fails."""
    # Ray's socket paths must stay under 107 characters: a short temp dir.
    gcs, dash, *spare = free_ports(3 + 2 * len(nodes))
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp")), gcs, dash, dashboard, fast_node_loss,
                           spare)
    try:
        cluster._started(nodes[0][0], cluster._start(*nodes[0], head=True))
        workers = [(name, cluster._start(name, cpus, head=False)) for name, cpus in nodes[1:]]  # in parallel
        for name, proc in workers:
            cluster._started(name, proc)
        ids = cluster.node_ids()
        for node in cluster.nodes:
            node.node_id = ids[node.name]
        if dashboard:
            cluster.wait_job_server()
    except BaseException:
        cluster.stop()
        raise
    return cluster
