"""The LLM-D router: an OpenAI-compatible proxy in front of vLLM engines.

Per request: API-key auth -> JSON and field checks (400/404) -> the exact-match response cache ->
flow control (admit, queue, or 429) -> the scheduler (prefix scores from the KV indexer when events
are on, else the router's own block keys) -> the engine, with retries to the next-best pod on
connection errors and 5xx (never once a response has started streaming to the client), a circuit
breaker per pod, and vLLM's disaggregated prefill/decode flow when the decision names a prefill pod.

``Router(...).app`` is an ASGI app (completions and chat handled directly, the rest by a Starlette app);
``serving.llmd.serve`` wires it to a monitor, an indexer and ``serving.llmd.http_server`` (which calls
``Router.serve_http``). The hop to the engines goes through
``serving.llmd.upstream`` (a lean keep-alive HTTP/1.1 pool per engine).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from serving.llmd.auth import ApiKey, KeyRing
from serving.llmd.batch import BatchError, parse_batch, result_line
from serving.llmd.breaker import CircuitBreaker
from serving.llmd.cache import LRUCache, ResponseCache, cache_key
from serving.llmd.http_server import AsgiBridge, HttpRequest, Writer
from serving.llmd.kvcache.keys import block_keys
from serving.llmd.monitor import LoadMonitor
from serving.llmd.scheduler import (
    Admit,
    NoCapacity,
    NoPods,
    Priority,
    Queue,
    Reject,
    SchedRequest,
    Scheduler,
    free_slots,
    is_saturated,
)
from serving.llmd.upstream import ConnectFailed, EnginePool, UpstreamError
from serving.llmd.upstream import Response as UpstreamResponse

log = logging.getLogger(__name__)

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
POD_HEADER = "x-odh-pod"
# Tokenized prompts remembered by text (the same prompt or chat often comes again: retries, evals, agents).
# Small and only for short texts, so it stays a few MB; entries are shared and must not be mutated.
_MEMO_ENTRIES = 256
_MEMO_MAX_CHARS = 4096


@dataclass(slots=True)
class RouterConfig:
    model: str
    max_model_len: int | None = None  # None: learn it from the engines' /v1/models
    block_size: int = 16  # for the router's own block keys when no engine reported one
    max_attempts: int = 3
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 5.0
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 600.0
    cache_entries: int = 4096
    cache_ttl_s: float = 600.0
    redis_url: str | None = None
    batch_concurrency: int = 8
    batch_timeout_s: float = 3600.0
    retry_after_s: int = 1


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | int | None = None, headers: Mapping[str, str] | None = None) -> Response:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=dict(headers or {}))


class _EngineReply(Response):
    """An engine's whole answer as a Starlette ``Response``, with the same headers ``Response(body, status,
    media_type=..., headers={POD_HEADER: pod})`` would have, built without its per-call normalisation."""

    def __init__(self, body: bytes, status: int, content_type: str | None, pod: str) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        headers = [(b"x-odh-pod", pod.encode("latin-1"))]
        if not (status < 200 or status in (204, 304)):
            headers.append((b"content-length", b"%d" % len(body)))
        if content_type is not None:
            self.media_type = content_type
            if content_type.startswith("text/") and "charset=" not in content_type.lower():
                content_type += "; charset=utf-8"
            headers.append((b"content-type", content_type.encode("latin-1")))
        self.raw_headers = headers


class _Disconnected(Exception):
    """The client went away before its request body was read."""


class _Abort(Exception):
    """A request is answered with ``response`` before it reaches an engine."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


@dataclass(slots=True)
class _Analysis:
    token_ids: list[int] | None  # precise (the model's tokenizer), else None
    token_count: int
    approx_keys: list[int]
    prefix_scores: dict[str, int]


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate_body(path: str, body: Any, model: str) -> Response | None:
    """The 400/404 answers for a completions or chat body, or None when it may go on. Checked here: what
    the router reads itself (it keys, caches and schedules on these); the engine checks the rest."""
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    requested = body.get("model")
    if requested is None:
        return error_response(400, "'model' is required", param="model")
    if requested != model:
        shown = (requested if isinstance(requested, str) else orjson.dumps(requested).decode())[:100]
        return error_response(404, f"The model `{shown}` does not exist.", "NotFoundError", "model",
                              "model_not_found")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        return error_response(400, "'stream' must be a boolean", param="stream")
    if path == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error_response(400, "'messages' is required and must be a non-empty list", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return error_response(400, f"messages[{i}] must be an object with a string 'role'",
                                      param=f"messages[{i}]")
            if not isinstance(message.get("content"), str | list | None):
                return error_response(400, f"messages[{i}].content must be a string, a list of parts or null",
                                      param=f"messages[{i}].content")
    else:
        prompt = body.get("prompt")
        ok = isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and (
                all(isinstance(p, str) for p in prompt)
                or all(_is_token_id(p) for p in prompt)
                or all(isinstance(p, list) and all(_is_token_id(t) for t in p) for p in prompt)))
        if not ok:
            return error_response(400, "'prompt' is required: a string, a list of strings or token ids "
                                  "(whole numbers from 0)", param="prompt")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and not _is_count(value):
            return error_response(400, f"{name} must be a positive integer, got {_shown(value)}", param=name)
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or isinstance(temperature, bool)
                                    or temperature < 0):
        return error_response(400, f"temperature must be a number from 0, got {_shown(temperature)}",
                              param="temperature")
    if not isinstance(body.get("user"), str | None):
        return error_response(400, "user must be a string", param="user")
    if not isinstance(body.get("stream_options"), dict | None):
        return error_response(400, "stream_options must be an object", param="stream_options")
    return None


def _shown(value: Any) -> str:
    """A client's value in an error message, cut short."""
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def prompt_text(path: str, body: Mapping[str, Any]) -> str:
    """The text the router keys on when it has no tokenizer (chat: role and content per message)."""
    if path == CHAT:
        parts = []
        for m in body.get("messages") or ():
            content = m.get("content")
            if isinstance(content, list):
                content = "\n".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
            parts.append(f"<{m.get('role')}>{content or ''}\n")
        return "".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return prompt[0]
    return prompt if isinstance(prompt, str) else ""


class Router:
    def __init__(
        self,
        config: RouterConfig,
        monitor: LoadMonitor,
        scheduler: Scheduler,
        keys: KeyRing | None = None,
        tokenizer: Any = None,
        index: Any = None,
        cache: ResponseCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.monitor = monitor
        self.scheduler = scheduler
        self.flow = scheduler.flow
        self.keys = keys or KeyRing()
        self.tokenizer = tokenizer
        self.index = index
        self.cache = cache or ResponseCache(LRUCache(config.cache_entries, config.cache_ttl_s), config.redis_url,
                                            config.cache_ttl_s)
        self.clock = clock
        self.breakers = {name: CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s)
                         for name in monitor.pods}
        self.clients: dict[str, EnginePool] = {}
        self._waiters: dict[int, asyncio.Future[Reject | Admit]] = {}
        # Request ids: unique per process run, without a uuid4 (os.urandom + UUID object) per request.
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count(1)
        self._expiry_task: asyncio.Task[None] | None = None
        # (path, prompt text or chat JSON, block size, index block size) -> (ids, router keys, index keys)
        self._prompt_memo: OrderedDict[tuple[Any, ...], tuple[list[int], list[int], list[int] | None]] = OrderedDict()
        self._metrics()
        self.starlette = Starlette(routes=[
            Route(COMPLETIONS, self.completions, methods=["POST"]),
            Route(CHAT, self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/batches", self.batches, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/health/detail", self.health_detail, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
        ])
        self.app = self  # an object with an async __call__: an ASGI 3 app (tests drive it so)
        self._bridge = AsgiBridge(self.starlette)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        for name, pod in self.monitor.pods.items():
            self.clients[name] = EnginePool(pod.url, connect_timeout=self.config.connect_timeout_s,
                                            read_timeout=self.config.request_timeout_s)
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="llmd-router-expiry")
        # Starlette streams through an anyio task group, whose backend modules load lazily (~50 ms):
        # load them now, not while the first SSE stream's tokens pile up behind the import.
        async with anyio.create_task_group():
            pass

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for client in self.clients.values():
            await client.close()
        await self.cache.close()

    def pod_down(self, name: str) -> None:
        """The monitor took ``name`` out of the pool: its cache is gone as far as we know."""
        self.scheduler.forget_pod(name)
        if self.index is not None:
            self.index.clear_pod(name)

    def pod_up(self, name: str) -> None:
        self.breakers[name].reset()
        self.pump()

    # -- metrics -------------------------------------------------------------------------------
    def _metrics(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Per-request series are plain counters (see _HotMetrics); the rarer ones stay prometheus_client's.
        self.hot = _HotMetrics()
        r.register(self.hot)
        self.m_cache_hits = Counter("llmd_router_cache_hits", "Response cache hits", registry=r)
        self.m_cache_misses = Counter("llmd_router_cache_misses", "Response cache misses (cacheable requests)",
                                      registry=r)
        self.m_retries = Counter("llmd_router_retries", "Requests re-sent to another pod", registry=r)
        self.m_upstream_errors = Counter("llmd_router_upstream_errors", "Failed attempts at an engine",
                                         ["pod", "kind"], registry=r)
        self.m_rejected = Counter("llmd_router_rejected", "Requests turned away by flow control", ["reason"],
                                  registry=r)
        router = self

        class _Live:
            def collect(self) -> Any:
                inflight = GaugeMetricFamily("llmd_router_pod_in_flight", "Router requests in flight per pod",
                                             labels=["pod"])
                healthy = GaugeMetricFamily("llmd_router_pod_healthy", "1 when the pod is in the pool", labels=["pod"])
                waiting = GaugeMetricFamily("llmd_router_pod_waiting", "Engine queue (scraped)", labels=["pod"])
                kv = GaugeMetricFamily("llmd_router_pod_kv_usage", "Engine KV usage 0..1 (scraped)", labels=["pod"])
                for pod in router.monitor.pods.values():
                    inflight.add_metric([pod.name], pod.in_flight)
                    healthy.add_metric([pod.name], 1.0 if pod.healthy else 0.0)
                    waiting.add_metric([pod.name], pod.waiting)
                    kv.add_metric([pod.name], pod.kv_usage)
                yield from (inflight, healthy, waiting, kv)
                yield GaugeMetricFamily("llmd_router_queue_depth", "Requests waiting in flow control",
                                        value=router.flow.queue_depth)
                yield GaugeMetricFamily("llmd_router_in_flight", "Requests admitted and not finished",
                                        value=router.flow.in_flight)

        r.register(_Live())

    async def metrics(self, request: Request) -> Response:
        # Behind the key check: the per-pod series are labelled with pod names, which are engine addresses
        # unless the engines were named.
        if self.keys.check(request.headers.get("authorization")) is None:
            return self._unauthorized()
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- small endpoints -----------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """Liveness and a summary, for anyone (probes send no key): never an engine's name or address,
        since pod names are the engines' ``host:port`` unless named and an address is a way around the
        router's key check. The per-pod view is ``/health/detail``."""
        return Response(orjson.dumps(self._health_summary()), media_type="application/json")

    async def health_detail(self, request: Request) -> Response:
        """The summary plus each pod's load, breaker and indexed blocks, for a caller the key check lets in
        (everyone when no keys are configured, as for every other route)."""
        if self.keys.check(request.headers.get("authorization")) is None:
            return self._unauthorized()
        state = self._health_summary()
        state["pods"] = {p.name: {"healthy": p.healthy, "in_flight": p.in_flight, "running": p.running,
                                  "waiting": p.waiting, "kv_usage": p.kv_usage,
                                  "breaker": self.breakers[p.name].state} for p in self.monitor.pods.values()}
        if self.index is not None:
            state["index"] = {"keys": len(self.index), "block_size": self.index.block_size,
                              "pods": {pod: self.index.pod_blocks(pod) for pod in self.index.pods}}
        return Response(orjson.dumps(state), media_type="application/json")

    def _health_summary(self) -> dict[str, Any]:
        pods = self.monitor.pods.values()
        return {"status": "ok", "healthy_pods": sum(p.healthy for p in pods), "total_pods": len(pods),
                "queue_depth": self.flow.queue_depth}

    async def ready(self, request: Request) -> Response:
        status = 200 if self.monitor.healthy() else 503
        return Response(orjson.dumps({"ready": status == 200}), status_code=status, media_type="application/json")

    def max_model_len(self) -> int | None:
        if self.config.max_model_len is not None:
            return self.config.max_model_len
        known = self.monitor.max_model_len.values()
        return min(known) if known else None

    async def models(self, request: Request) -> Response:
        if self.keys.check(request.headers.get("authorization")) is None:
            return self._unauthorized()
        card: dict[str, Any] = {"id": self.config.model, "object": "model", "created": int(time.time()),
                                "owned_by": "odh-llmd", "root": self.config.model, "parent": None, "permission": []}
        if self.max_model_len() is not None:
            card["max_model_len"] = self.max_model_len()
        return Response(orjson.dumps({"object": "list", "data": [card]}), media_type="application/json")

    def _unauthorized(self) -> Response:
        return error_response(401, "Invalid or missing API key: send 'Authorization: Bearer <key>'.",
                              "authentication_error", code="invalid_api_key",
                              headers={"www-authenticate": "Bearer"})

    # -- the OpenAI endpoints ------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._endpoint(request, COMPLETIONS)

    async def chat(self, request: Request) -> Response:
        return await self._endpoint(request, CHAT)

    async def _endpoint(self, request: Request, path: str) -> Response:
        headers = request.headers
        return await self._answer(path, request.body, headers.get("authorization"), headers.get("x-priority"),
                                  headers.get("x-session-id"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: completions and chat go straight to ``_answer`` (the hot path, without
        Starlette's routing, middleware and Request objects); everything else to the Starlette app."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in (COMPLETIONS, CHAT):
            await self.starlette(scope, receive, send)
            return
        path = scope["path"]
        authorization, priority, session = _routing_headers(scope["headers"])

        async def body() -> bytes:
            parts = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(parts)

        try:
            response = await self._answer(path, body, authorization, priority, session)
        except _Disconnected:
            return  # the client left before its body was in: nothing to answer
        await response(scope, receive, send)

    async def serve_http(self, request: HttpRequest, out: Writer) -> None:
        """The ``serving.llmd.http_server`` handler: completions and chat straight to ``_answer``, the
        rest through the Starlette app (over a small ASGI bridge)."""
        path = request.path
        if request.method != "POST" or path not in (COMPLETIONS, CHAT):
            await self._bridge(request, out)
            return
        authorization, priority, session = _routing_headers(request.headers)
        await out.reply(await self._answer(path, request.body, authorization, priority, session))

    async def _answer(self, path: str, body: bytes | Callable[[], Awaitable[bytes]], authorization: str | None,
                      priority: str | None, session: str | None) -> Response:
        key = self.keys.check(authorization)
        if key is None:
            response = self._unauthorized()
        else:
            raw = body if isinstance(body, bytes) else await body()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                response = error_response(400, f"The request body is not valid JSON: {exc}")
            else:
                response = await self.handle(path, parsed, key, priority, session)
        self.hot.request(path, response.status_code)
        return response

    async def handle(self, path: str, body: Any, key: ApiKey, priority: str | None = None,
                     session: str | None = None, batch: bool = False) -> Response:
        """One completions/chat request, from validation to the engine's answer."""
        invalid = validate_body(path, body, self.config.model)
        if invalid is not None:
            return invalid
        stream = bool(body.get("stream"))
        try:
            default = Priority.BATCH if batch else (key.tier or (Priority.STREAMING if stream else Priority.INTERACTIVE))
            prio = Priority.BATCH if batch else Priority.parse(priority, default)
        except ValueError as exc:
            return error_response(400, str(exc), param="x-priority")
        analysis = self._analyze(path, body)
        too_long = self._check_length(body, analysis)
        if too_long is not None:
            return too_long
        ckey = cache_key(path, body, self.config.model)
        if ckey is not None:
            cached = await self.cache.get(ckey)
            if cached is not None:
                self.m_cache_hits.inc()
                return Response(cached, media_type="application/json", headers={"x-odh-cache": "hit"})
            self.m_cache_misses.inc()
        sreq = SchedRequest(model=self.config.model, token_count=analysis.token_count,
                            prefix_scores=analysis.prefix_scores, approx_prefix_key=analysis.approx_keys,
                            priority=prio, tenant=key.tenant, session_id=session or body.get("user") or None,
                            id=f"{self._id_prefix}{next(self._ids):x}")
        released = False

        def finish() -> None:
            nonlocal released
            if not released:
                released = True
                self.flow.release(sreq)
                self.pump()

        deferred = False
        try:
            await self._admit(sreq, batch)
            response, deferred = await self._dispatch(path, body, sreq, ckey, stream, finish)
            return response
        except _Abort as abort:
            return abort.response
        finally:
            if not deferred:
                finish()

    # -- analysis ------------------------------------------------------------------------------
    def _analyze(self, path: str, body: Mapping[str, Any]) -> _Analysis:
        ids: list[int] | None = None
        memo_key: tuple[Any, ...] | None = None
        if path == COMPLETIONS:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
                ids = list(prompt)
        if ids is None and self.tokenizer is not None:
            try:
                if path == CHAT:
                    source: Any = orjson.dumps(body["messages"])
                else:
                    source = prompt_text(path, body)
                block_size = self._block_size()
                index_block = self.index.block_size if self.index is not None else None
                if len(source) <= _MEMO_MAX_CHARS:
                    memo_key = (path, source, block_size, index_block)
                    hit = self._prompt_memo.get(memo_key)
                    if hit is not None:
                        self._prompt_memo.move_to_end(memo_key)
                        known_ids, known_approx, known_index_keys = hit
                        known_scores = self.index.score(known_index_keys) if known_index_keys is not None else {}
                        return _Analysis(known_ids, len(known_ids), known_approx, known_scores)
                if path == CHAT:
                    ids = self.tokenizer.encode_chat(body["messages"])
                else:
                    ids = self.tokenizer.encode_prompt(source) if source else None
            except Exception as exc:  # any failure: the engine gives the authoritative error
                log.debug("tokenization failed, using approximate keys: %s", exc)
                ids = None
                memo_key = None
        block_size = self._block_size()
        if ids is not None:
            scores: dict[str, int] = {}
            index_keys: list[int] | None = None  # None: no index to score against
            if self.index is not None and self.index.block_size:
                index_keys = self.index.keys_for(ids)
                scores = self.index.score(index_keys)
            approx = block_keys(ids, block_size)
            if memo_key is not None:
                self._prompt_memo[memo_key] = (ids, approx, index_keys)
                if len(self._prompt_memo) > _MEMO_ENTRIES:
                    self._prompt_memo.popitem(last=False)
            return _Analysis(ids, len(ids), approx, scores)
        # No tokenizer: key on the UTF-8 bytes, about four to a token.
        data = prompt_text(path, body).encode()
        # TODO(llmd): precise prefix scores need token ids; without --tokenizer only the approximate
        # (router-side) prefix path is used even when the indexer receives KV events.
        return _Analysis(None, max(1, len(data) // 4), block_keys(list(data), block_size * 4), {})

    def _block_size(self) -> int:
        for pod in self.monitor.pods.values():
            if pod.healthy and pod.block_size:
                return pod.block_size
        return self.config.block_size

    def _check_length(self, body: Mapping[str, Any], analysis: _Analysis) -> Response | None:
        limit = self.max_model_len()
        if limit is None or analysis.token_ids is None:
            return None  # without exact token counts the engine decides (its 400 is passed through)
        n = len(analysis.token_ids)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or 0
        if n >= limit or n + max_tokens > limit:
            return error_response(
                400, f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{n + max_tokens} tokens ({n} in the prompt, {max_tokens} for the completion). "
                "Please reduce the length of the prompt or completion.", param="prompt",
                code="context_length_exceeded")
        return None

    # -- flow control --------------------------------------------------------------------------
    def _reject(self, verdict: Reject) -> _Abort:
        self.m_rejected.labels(verdict.reason).inc()
        return _Abort(error_response(verdict.status, verdict.message or verdict.reason, "rate_limit_error"
                                     if verdict.status == 429 else "service_unavailable", code=verdict.reason,
                                     headers={"retry-after": str(self.config.retry_after_s)}))

    async def _admit(self, sreq: SchedRequest, batch: bool) -> None:
        deadline = self.clock() + self.config.batch_timeout_s
        while True:
            healthy = self.monitor.healthy()
            if not healthy:
                raise _Abort(error_response(503, "no engine is available right now", "service_unavailable",
                                            code="no_pods", headers={"retry-after": str(self.config.retry_after_s)}))
            now = self.clock()
            verdict = self.flow.admit(sreq, now, saturated=is_saturated(healthy, self.flow.config))
            if isinstance(verdict, Admit):
                return
            if isinstance(verdict, Reject):
                if batch and verdict.reason == "saturated" and now < deadline:
                    await asyncio.sleep(self.config.retry_after_s * 0.25)  # a batch waits its turn
                    continue
                raise self._reject(verdict)
            assert isinstance(verdict, Queue)
            future: asyncio.Future[Reject | Admit] = asyncio.get_running_loop().create_future()
            self._waiters[id(sreq)] = future
            try:
                outcome = await future
            finally:
                self._waiters.pop(id(sreq), None)
            if isinstance(outcome, Reject):
                raise self._reject(outcome)
            return

    def pump(self) -> None:
        """Capacity may have freed: start queued requests that can run now, expire the overdue."""
        if not self.flow.queue_depth:
            return
        now = self.clock()
        for sreq, verdict in self.flow.expire(now):
            future = self._waiters.get(id(sreq))
            if future is not None and not future.done():
                future.set_result(verdict)
        ready = self.flow.next_ready(now, lambda: free_slots(self.monitor.healthy(), self.flow.config))
        for sreq in ready:
            future = self._waiters.get(id(sreq))
            if future is not None and not future.done():
                future.set_result(Admit())
            else:
                self.flow.release(sreq)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.pump()

    # -- dispatch ------------------------------------------------------------------------------
    def _order(self, sreq: SchedRequest) -> tuple[list[str], str | None]:
        now = self.clock()
        pods = [p for p in self.monitor.healthy() if self.breakers[p.name].available(now)]
        started = time.perf_counter()
        try:
            decision = self.scheduler.schedule(sreq, pods)
        except NoPods as exc:
            raise _Abort(error_response(503, f"no engine can serve the request: {exc}", "service_unavailable",
                                        code="no_pods", headers={"retry-after": str(self.config.retry_after_s)})) from None
        except NoCapacity as exc:
            self.m_rejected.labels("no_capacity").inc()
            raise _Abort(error_response(429, f"every engine is at capacity: {exc}", "rate_limit_error",
                                        code="no_capacity", headers={"retry-after": str(self.config.retry_after_s)})) from None
        finally:
            self.hot.decided(time.perf_counter() - started)
        self.hot.decision(decision.pod, decision.reason)
        rest = sorted((n for n in decision.scores if n != decision.pod), key=lambda n: -decision.scores[n])
        rest += [p.name for p in pods if p.name != decision.pod and p.name not in decision.scores]
        return [decision.pod, *rest], decision.prefill_pod

    def _failed(self, name: str, kind: str, connect: bool = False) -> None:
        self.m_upstream_errors.labels(name, kind).inc()
        self.breakers[name].failure(self.clock())
        if connect:
            self.monitor.mark_down(name)
        elif kind != "http_5xx":
            self.monitor.report_failure(name)

    async def _prefill(self, path: str, body: dict[str, Any], pod: str) -> dict[str, Any]:
        """vLLM's disaggregated flow, step one: prefill on ``pod``; returns the body for the decode pod."""
        pbody = dict(body)
        pbody["kv_transfer_params"] = {"do_remote_decode": True, "do_remote_prefill": False,
                                       "remote_engine_id": None, "remote_block_ids": None,
                                       "remote_host": None, "remote_port": None}
        pbody["max_tokens"] = 1
        if "max_completion_tokens" in pbody:
            pbody["max_completion_tokens"] = 1
        pbody["stream"] = False
        pbody.pop("stream_options", None)
        self.monitor.begin(pod)
        try:
            response = await self.clients[pod].post_json(path, orjson.dumps(pbody))
            if response.status != 200:
                raise ValueError(f"prefill answered {response.status}")
            params = orjson.loads(response.body).get("kv_transfer_params")
        except Exception as exc:  # any failure: the decode pod then prefills itself
            log.warning("prefill on %s failed (%s); decoding aggregated", pod, exc)
            self._failed(pod, "prefill", connect=isinstance(exc, ConnectFailed))
            return body
        finally:
            self.monitor.end(pod)
        self.breakers[pod].success()
        return {**body, "kv_transfer_params": params} if params else body

    async def _dispatch(self, path: str, body: dict[str, Any], sreq: SchedRequest, ckey: str | None, stream: bool,
                        finish: Callable[[], None]) -> tuple[Response, bool]:
        order, prefill = self._order(sreq)
        if prefill is not None:
            body = await self._prefill(path, body, prefill)
        content = orjson.dumps(body)
        attempts = 0
        last: Response | None = None
        for name in order:
            if attempts >= self.config.max_attempts:
                break
            pod = self.monitor.pods[name]
            if not pod.healthy or not self.breakers[name].allow(self.clock()):
                continue
            if attempts:
                self.m_retries.inc()
                self.scheduler.record(sreq, pod)
            attempts += 1
            self.monitor.begin(name)
            handed_over = False
            upstream: UpstreamResponse | None = None
            try:
                try:
                    upstream = await self.clients[name].post_json(path, content, stream=stream)
                    if stream and upstream.status != 200:
                        await upstream.read()  # an error answer to a streamed request: read it whole
                except UpstreamError as exc:
                    self._failed(name, type(exc).__name__, connect=isinstance(exc, ConnectFailed))
                    continue
                if upstream.status >= 500:
                    self._failed(name, "http_5xx")
                    last = Response(upstream.body, upstream.status, media_type=upstream.content_type)
                    continue
                if not stream or upstream.status != 200:
                    data = upstream.body
                    self.breakers[name].success()
                    if ckey is not None and upstream.status == 200:
                        await self.cache.set(ckey, data)
                    return _EngineReply(data, upstream.status, upstream.content_type, name), False
                # Streaming: wait for the first bytes before committing, so a pod that dies before
                # answering is still retried; after that the client owns the stream.
                chunks = upstream.chunks()
                try:
                    first = await chunks.__anext__()
                except StopAsyncIteration:
                    first = b""
                except UpstreamError as exc:
                    self._failed(name, type(exc).__name__)
                    continue
                self.breakers[name].success()
                handed_over = True
                return StreamingResponse(
                    self._relay(name, upstream, first, chunks, finish), status_code=200,
                    media_type="text/event-stream", headers={POD_HEADER: name, "cache-control": "no-cache"},
                ), True
            finally:
                if not handed_over:
                    self.monitor.end(name)
                    if upstream is not None:
                        upstream.close()  # a no-op when its body is complete; else drops the connection
        if last is not None:
            return last, False
        return error_response(502, f"no engine answered after {attempts} attempt(s)", "upstream_error",
                              code="upstream_unavailable", headers={"retry-after": str(self.config.retry_after_s)}), False

    async def _relay(self, name: str, upstream: UpstreamResponse, first: bytes, chunks: AsyncIterator[bytes],
                     finish: Callable[[], None]) -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            try:
                async for chunk in chunks:
                    yield chunk
            except UpstreamError as exc:
                self._failed(name, type(exc).__name__)
                error = {"error": {"message": f"the engine stopped mid-stream: {type(exc).__name__}",
                                   "type": "upstream_error", "param": None, "code": 502}}
                yield b"data: " + orjson.dumps(error) + b"\n\n"
        finally:
            upstream.close()  # a no-op once the body is complete; else the connection is dropped
            self.monitor.end(name)
            finish()

    # -- batch ---------------------------------------------------------------------------------
    async def batches(self, request: Request) -> Response:
        """JSONL of ``{"custom_id", "method", "url", "body"}`` in, JSONL results (input order) out."""
        key = self.keys.check(request.headers.get("authorization"))
        if key is None:
            return self._unauthorized()
        try:
            lines = parse_batch(await request.body())
        except BatchError as exc:
            return error_response(400, f"invalid batch input: {exc}")
        gate = asyncio.Semaphore(self.config.batch_concurrency)

        async def run(line: Any) -> bytes:
            async with gate:
                response = await self.handle(line.url, line.body, key, batch=True)
            # Starlette types ``body`` as bytes | memoryview; every response ``handle`` builds holds bytes
            # (for which ``bytes()`` is the same object, no copy), so this only narrows the type for ``decode``.
            data = bytes(response.body)
            try:
                parsed: Any = orjson.loads(data)
            except orjson.JSONDecodeError:
                parsed = data.decode(errors="replace")
            if response.status_code >= 400:
                err = parsed.get("error") if isinstance(parsed, dict) else None
                return result_line(line.custom_id, response.status_code, parsed,
                                   {"code": str(response.status_code),
                                    "message": (err or {}).get("message", str(parsed)) if isinstance(err, dict) else str(parsed)})
            return result_line(line.custom_id, response.status_code, parsed)

        results = await asyncio.gather(*(run(line) for line in lines))
        self.hot.request("/v1/batches", 200)
        return Response(b"".join(results), media_type="application/jsonl")


class _HotMetrics(Collector):
    """The series touched by every request, as plain ints: prometheus_client locks on each increment and
    validates labels on each ``labels()``; the router runs on one thread, so neither is needed. Rendered
    with the same names, labels and buckets as the Counter/Histogram they replace."""

    BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.decisions: dict[tuple[str, str], int] = {}
        self.decision_counts = [0] * (len(self.BUCKETS) + 1)  # the last one: above every bucket
        self.decision_sum = 0.0

    def request(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def decision(self, pod: str, reason: str) -> None:
        key = (pod, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def decided(self, seconds: float) -> None:
        self.decision_sum += seconds
        self.decision_counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1  # buckets are "<= le"

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily("llmd_router_requests", "Answered requests", labels=["endpoint", "status"])
        for (endpoint, status), n in list(self.requests.items()):
            requests.add_metric([endpoint, str(status)], n)
        yield requests
        decisions = CounterMetricFamily("llmd_router_decisions", "Scheduling decisions", labels=["pod", "reason"])
        for (pod, reason), n in list(self.decisions.items()):
            decisions.add_metric([pod, reason], n)
        yield decisions
        buckets, total = [], 0
        for le, n in zip((*self.BUCKETS, float("inf")), self.decision_counts, strict=True):
            total += n
            buckets.append((floatToGoString(le), total))
        yield HistogramMetricFamily("llmd_router_decision_seconds", "Scheduling decision latency", buckets=buckets,
                                    sum_value=self.decision_sum)


def _routing_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None, str | None]:
    """``(authorization, x-priority, x-session-id)`` from raw header pairs (names lower-case); the first of each wins."""
    authorization = priority = session = None
    for name, value in headers:
        if name == b"authorization":
            authorization = authorization or value.decode("latin-1")
        elif name == b"x-priority":
            priority = priority or value.decode("latin-1")
        elif name == b"x-session-id":
            session = session or value.decode("latin-1")
    return authorization, priority, session
