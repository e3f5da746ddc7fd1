"""Run the reward server: from a config in the foreground (`run_server`, the CLI), or any app from create_app on
a background thread (`serve_in_thread`: tests, in-process use). Port 0 binds a free port; the actual URL is logged
and handed to `ready_callback`. `run_server` loads a reward model in a worker process (serving/worker.py) and a
reward function in its own process; `open_source` gives either in this process (bench-rm --in-process).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rlhfctl.config.slices import AppGroups, ServedModelGroups
from rlhfctl.errors import UsageError
from rlhfctl.serving.sources import open_source

if TYPE_CHECKING:
    from rlhfctl.config import ServeRMConfig
    from rlhfctl.rewards.base import RewardSource
    from rlhfctl.serving.vllm_backend import VLLMBackend
    from rlhfctl.serving.worker import ModelProcess

log = logging.getLogger("rlhfctl.serve")


def open_served_source(cfg: ServeRMConfig) -> RewardSource | ModelProcess | VLLMBackend:
    """What serve-rm serves: a reward model or --judge-model on vLLM (--backend vllm: VLLMScorer, VLLMJudge), or a
    reward model or --judge-model in a worker process (ModelProcess); both return once the model is loaded. Or, in
    this process (called once per request, from a thread), a pairwise model, which compares the texts of one request
    with each other, a combined reward, a --judge-url client, or a reward function in --reward-workers worker
    processes."""
    if cfg.backend == "vllm":  # rules.py: a --reward-pretrain model or a --judge-model, nothing else
        scorer = _vllm_scorer(cfg)
        scorer.launch()
        return scorer
    if cfg.reward_func is None and cfg.reward is None and not cfg.pairwise and cfg.judge_url is None:
        from rlhfctl.models.remote_code import announce

        if cfg.judge_model is None:
            announce(cfg.reward_pretrain, cfg.trust_remote_code)
        from rlhfctl.serving.worker import ModelProcess

        worker = ModelProcess(ServedModelGroups.of(cfg))
        worker.launch()
        return worker
    return open_source(cfg)


def _vllm_scorer(cfg: ServeRMConfig) -> VLLMBackend:
    from rlhfctl.config import (JudgeArgs, ModelLoadArgs, RewardModelOptions, ServerArgs, ServerBatchArgs,
                                VLLMEngineArgs)

    shared = (cfg.slice(ServerBatchArgs), cfg.slice(VLLMEngineArgs), cfg.slice(ServerArgs))
    if cfg.judge_model is not None:
        from rlhfctl.serving.vllm_judge import VLLMJudge

        return VLLMJudge(cfg.slice(JudgeArgs), cfg.slice(ModelLoadArgs), *shared)
    from rlhfctl.serving.vllm_scorer import VLLMScorer

    assert cfg.reward_pretrain is not None
    return VLLMScorer(cfg.reward_pretrain, cfg.slice(ModelLoadArgs), cfg.slice(RewardModelOptions), *shared)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (0: a free port), or a UsageError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                         + (" (another server is using the port; pick another with --port, or 0 for a free one)"
                            if getattr(exc, "errno", None) == errno.EADDRINUSE else "")) from None
    return sock


def endpoint_url(sock: socket.socket) -> str:
    """`http://HOST:PORT/get_reward` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/get_reward"


KEEP_ALIVE_S = 75  # seconds an idle client connection stays open


def _uvicorn_server(app: Any, log_level: str) -> Any:
    import uvicorn

    # Access logs off: one line per request costs real throughput at hundreds of requests/s; /metrics counts them.
    # Keep-alive well above the clients' idle expiry (httpx, RemoteReward: 4 s; bench-rm: 4 s): with uvicorn's
    # default of 5 s a client reusing a connection after ~5 s idle races the server closing it, and the request
    # that loses the race gets no answer (the lost request of issue 12).
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                         timeout_keep_alive=KEEP_ALIVE_S))


class _Stop(Exception):
    """Raised by our SIGTERM/SIGINT handler once uvicorn has drained, so the CLI exits 0."""


def run_server(cfg: ServeRMConfig, ready_callback: Callable[[str], None] | None = None) -> None:
    """Load the reward source of `cfg` (a ServeRMConfig), serve it until SIGTERM/SIGINT, then drain and return.

    `ready_callback(url)` is called with the /get_reward URL once the server accepts connections. On SIGTERM,
    uvicorn stops accepting, answers the requests in flight, and the batcher scores what is queued.
    """
    from rlhfctl.config.hub_ids import resolve_fields
    from rlhfctl.serving.app import create_app

    # Before the model process starts: it is given a folder.
    cfg = resolve_fields(cfg, ["reward_pretrain", "judge_model"])
    started = time.perf_counter()
    if cfg.reward_func is None and (cfg.reward is not None or cfg.pairwise):
        from rlhfctl.serving.threads import configure_threads

        configure_threads(cfg.num_threads)  # a model scored in this process: leave the event loop a core
    source = open_served_source(cfg)
    try:
        from rlhfctl.serving.vllm_backend import VLLMBackend
        from rlhfctl.serving.worker import ModelProcess

        info = source.info if isinstance(source, (ModelProcess, VLLMBackend)) else {}
        details = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in info.items() if k != "name")
        log.info("loaded %s in %.1fs%s", source.name, time.perf_counter() - started, f" ({details})" if details else "")
        sock = bind_socket(cfg.host, cfg.port)
        server = _uvicorn_server(create_app(source, AppGroups.of(cfg)), "info")
        url = endpoint_url(sock)
        watcher = threading.Thread(target=_announce, args=(server, url, ready_callback, cfg), daemon=True)
        watcher.start()
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            server.run(sockets=[sock])
        except _Stop:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped")
    finally:
        source.close()


def _raise_stop(signum: int, frame: Any) -> None:
    # uvicorn installs its own handlers while serving (they start the graceful drain) and re-raises the signal
    # once drained; that re-raise lands here.
    raise _Stop()


def _announce(server: Any, url: str, ready_callback: Callable[[str], None] | None, cfg: ServeRMConfig) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.01)
    if not server.started:
        return
    auth = "Bearer token required" if cfg.api_key else "no auth (--api-key to require a token)"
    log.info("serving on %s (%s)", url, auth)
    if cfg.host in ("0.0.0.0", "::") and not cfg.api_key:
        log.warning("listening on every interface without --api-key: anyone who can reach this port can use it")
    if ready_callback is not None:
        ready_callback(url)


@dataclass
class ServerHandle:
    """A server running on a background thread; `url` is its /get_reward endpoint."""

    url: str
    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: stop accepting, answer requests in flight, drain the batcher."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> ServerHandle:
    """Serve `app` (from create_app) with uvicorn on a daemon thread; returns once it accepts connections."""
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="reward-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the reward server on {host}:{port} did not start within {timeout:g}s")
        time.sleep(0.005)
    return ServerHandle(endpoint_url(sock), server, thread)
