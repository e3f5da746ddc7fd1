"""The reward server's FastAPI app: OpenRLHF's POST /get_reward, plus /health, /metrics and /docs.

Everything a client can get wrong is answered with a 4xx and a message (never a 500), checked in the cheapest
order: auth, content type, size, JSON shape, then room in the queue. A 500 means the server side failed (the
reward model), and the body says so. A reward function that raises, breaks the contract or crashes its worker on a
request answers 422, and one past --reward-timeout 504, each with `"retryable": false` in the body: the same input
fails the same way again, so clients (RemoteReward) show the message at once instead of retrying. A NaN or inf
reward (from a function or a model) is such a 422 too, with `"kind": "nan"` and the query's `"index"`, so a
trainer can skip that batch (train-ppo --skip-nonfinite-batches) as it does for a local reward.
/health answers 200 with "status": "degraded" (and the reason) while reward calls time out or crash: the server
still serves, so a liveness probe must not restart it, but a person or a load balancer can read why it is slow.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from rlhfctl import __version__
from rlhfctl.config.slices import AppGroups
from rlhfctl.errors import RewardError
from rlhfctl.rewards.base import RewardSource
from rlhfctl.rewards.contract import RewardFault
from rlhfctl.rewards.judge import UNPARSED
from rlhfctl.serving.batcher import Scorer, make_scorer
from rlhfctl.serving.metrics import ServerMetrics
from rlhfctl.serving.protocol import (
    ClientError,
    ErrorResponse,
    NonFiniteReward,
    RewardRequest,
    RewardResponse,
    encode_answer,
    parse_reward_request,
)
from rlhfctl.serving.vllm_backend import VLLMBackend
from rlhfctl.serving.worker import ModelProcess

log = logging.getLogger("rlhfctl.serve")
_ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in (
    (401, "Missing or wrong `Authorization: Bearer` token (when the server has --api-key)."),
    (413, "Body larger than --max-body-mb, or more queries than --max-queries-per-request."),
    (415, "Content-Type is not application/json."),
    (422, ("The body is not JSON of the documented shape, or the reward failed on it or was NaN/inf (`kind`, "
           "`index`, `retryable`: false).")),
    (500, "The reward model failed on the server (not the client's fault)."),
    (503, "The queue is full (--max-queue); retry after Retry-After seconds."),
    (504, "The reward function took longer than --reward-timeout (`retryable`: false); its worker was replaced."),
)}


def create_app(source: RewardSource | ModelProcess | VLLMBackend, groups: AppGroups, *,
               metrics: ServerMetrics | None = None) -> FastAPI:
    """An app serving `source`: a RewardSource (a ModelReward is batched on a thread of this process), a
    ModelProcess (the model in a worker process, what `serve-rm` runs) or a VLLMBackend (--backend vllm), with the
    limits, key and timeout of `groups` (`AppGroups.of(cfg)`). The caller owns `source` (and closes it); the app
    starts scoring on startup and drains on shutdown."""
    metrics = metrics or ServerMetrics()
    scorer = _scorer_for(source, metrics, groups)
    if isinstance(source, RewardSource) and source.replica_states():
        metrics.watch_replicas(source.replica_states)
    limits = groups.server
    api_key: str | None = groups.auth.api_key or None  # an empty RLHFCTL_API_KEY means no key
    max_body = int(limits.max_body_mb * 2**20)
    max_queue: int = limits.max_queue
    max_queries = limits.max_queries_per_request
    admitted = 0  # queries accepted and not yet answered: the queue --max-queue bounds

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scorer.start()
        try:
            yield
        finally:
            await scorer.aclose()

    app = FastAPI(
        title="rlhfctl reward server",
        version=__version__,
        description="OpenRLHF-compatible reward server: POST /get_reward {\"query\": [...]} -> {\"rewards\": [...]}.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.source = source

    @app.post(
        "/get_reward",
        summary="Score texts",
        response_model=None,
        responses={200: {"model": RewardResponse}, **_ERRORS},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": RewardRequest.model_json_schema()}}}},
    )
    async def get_reward(request: Request) -> Response:
        """One reward per query, in order. `prompts` and `labels` (optional, one per query) reach a reward
        function; a reward model reads only `query`."""
        nonlocal admitted
        started = time.perf_counter()
        try:
            _check_auth(request, api_key)
            _check_content_type(request)
            body = await _read_body(request, max_body)
            queries, prompts, labels = parse_reward_request(body, max_queries)
            n = len(queries)
            if n > max_queue:
                raise ClientError(413, f"{n} queries exceed the whole queue of this server (--max-queue {max_queue}); "
                                       "split the batch")
            if admitted + n > max_queue:
                raise ClientError(503, f"the queue is full ({admitted} queries waiting, --max-queue {max_queue}); "
                                       "retry shortly", {"Retry-After": "1"})
        except ClientError as exc:
            metrics.requests.labels(str(exc.status)).inc()
            return _error(exc.status, exc.message, exc.headers)
        admitted += n
        metrics.queue_depth.inc(n)
        try:
            batch = await scorer.score(queries, prompts, labels)
            content = encode_answer(batch)
        except RewardFault as exc:
            log.warning("reward function failed: %s", exc)
            return _not_retryable(metrics, 504 if exc.kind == "timeout" else 422,
                                  f"the reward function failed on this request (not retried: the same input fails the "
                                  f"same way): {exc.where}: {exc.problem}", exc.kind, exc.index)
        except RewardError as exc:
            log.warning("reward function failed: %s", exc)
            return _server_error(metrics, f"the reward function failed (a server-side error, not a bad request): "
                                          f"{exc}")
        except NonFiniteReward as exc:  # a reward model's NaN: the same text gives it again, as a function's does
            log.warning("non-finite reward: %s", exc)
            return _not_retryable(metrics, 422, f"{source.name} produced a non-finite reward on this request ({exc}; "
                                                "not retried: the same input gives it again): a server-side problem "
                                                "(bf16 overflow? a broken model?)", "nan", exc.index)
        except Exception as exc:
            log.error("scoring failed: %s: %s", type(exc).__name__, exc, exc_info=not scorer.failure)
            return _server_error(metrics, f"scoring failed on the server: {type(exc).__name__}: {exc}")
        finally:
            admitted -= n
            metrics.queue_depth.dec(n)
        metrics.requests.labels("200").inc()
        metrics.samples.inc(n)
        if UNPARSED in batch.extra_logs:
            metrics.judge_unparsed.inc(sum(batch.extra_logs[UNPARSED]))
        metrics.latency.observe(time.perf_counter() - started)
        if limits.log_texts:
            log.info("scored %d queries; first: %.500r", n, queries[0])
        return Response(content, media_type="application/json")

    @app.get("/health", summary="Liveness and queue depth", responses={503: {"model": ErrorResponse}})
    async def health() -> Response:
        if scorer.failure:
            return _error(503, scorer.failure)
        answer = {"status": "ok", "source": source.name, "queue_depth": admitted, "max_queue": max_queue,
                  "cacheable": source.cacheable}  # RemoteReward.probe() reads it
        answer.update(source.health())  # a FunctionPool: "degraded" while calls time out or crash their workers
        return JSONResponse(answer)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _scorer_for(source: RewardSource | ModelProcess | VLLMBackend, metrics: ServerMetrics,
                groups: AppGroups) -> Scorer:
    """A ModelProcess or VLLMBackend is its own scorer; an in-process source gets one from make_scorer."""
    if isinstance(source, (ModelProcess, VLLMBackend)):
        source.metrics = metrics
        return source
    return make_scorer(source, metrics, groups.server, groups.execution)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _not_retryable(metrics: ServerMetrics, status: int, message: str, kind: str, index: int | None) -> JSONResponse:
    """The reward failed on this very input: `kind` says how and `index` (when known) on which query of the
    request, which RemoteReward turns into a RewardFault on that sample of the whole batch."""
    metrics.requests.labels(str(status)).inc()
    body: dict[str, Any] = {"detail": message, "kind": kind, "retryable": False}
    if index is not None:
        body["index"] = index
    return JSONResponse(body, status_code=status)


def _server_error(metrics: ServerMetrics, message: str) -> JSONResponse:
    metrics.requests.labels("500").inc()
    return _error(500, message)


def _check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not header:
        raise ClientError(401, 'missing "Authorization: Bearer <key>" header: this server requires an API key',
                          challenge)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
        raise ClientError(401, "invalid API key (send \"Authorization: Bearer <key>\" with the server's --api-key)",
                          challenge)


def _check_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise ClientError(415, f"{shown}: send the body as JSON with Content-Type: application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes as soon as that is known (from Content-Length or while reading)."""
    too_large = f"the body is larger than this server's limit of {limit / 2**20:g} MiB (--max-body-mb); split the batch"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)
