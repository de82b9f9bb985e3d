"""One simulated engine's HTTP face: the OpenAI API and ``/metrics`` as vLLM serves them.

A lean Starlette app per engine (no FastAPI validation layer: dozens of these share two cores) over
an ``Engine`` model and a ``KVEventPublisher``. Response bodies, SSE chunks, error bodies and metric
names follow vLLM's OpenAI server so that routers and SDKs cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from serving.llmd.sim.engine import Engine, EngineConfig, SimRequest
from serving.llmd.sim.events import KVEventPublisher
from serving.llmd.sim.tokenize import Tokenizer, chat_ids, prompt_ids

DEFAULT_MAX_TOKENS = 16  # vLLM would allow the rest of the context; a simulator should not idle that long
STREAM_TICK_S = 0.01  # at most ~100 wake-ups a second per stream: tokens due together share a write
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # vLLM's
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(exc: ApiError) -> Response:
    # vLLM's ErrorResponse body.
    return _json({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.status}},
                 exc.status)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass(frozen=True)
class EngineAddress:
    host: str
    port: int
    zmq_endpoint: str | None = None
    replay_endpoint: str | None = None


_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Metrics:
    """A registry per engine: gauges and counters read from the model at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        cfg = engine.config
        self.labels = {"model_name": cfg.model, "engine": "0"}
        # auto_describe: the registry learns this collector's names, so ``restricted_registry`` can filter.
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            labelnames=list(self.labels), buckets=TTFT_BUCKETS, registry=self.registry,
        ).labels(**self.labels)
        engine.ttft_observer = self.ttft.observe

    def collect(self) -> Any:
        e, cfg, names, values = self.engine, self.engine.config, list(self.labels), list(self.labels.values())
        s, c = e.scheduler, e.counters

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=names)
            m.add_metric(values, value)
            return m

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.cache.usage())
        info = GaugeMetricFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                                 labels=["block_size", "enable_prefix_caching", "num_gpu_blocks",
                                         "prefix_caching_hash_algo", *names])
        info.add_metric([str(cfg.block_size), "True", str(cfg.num_blocks), cfg.hash_algo, *values], 1.0)
        yield info
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                      c.prefix_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      c.prefix_hits)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", c.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", c.generation_tokens)
        yield counter("vllm:request_success", "Count of successfully processed requests.", c.requests_finished)

    def render(self, names: Collection[str] = ()) -> bytes:
        """The exposition text; with ``names``, only those samples (prometheus_client's ``name[]`` filter)."""
        return generate_latest(self.registry.restricted_registry(names) if names else self.registry)


class EngineApp:
    """The HTTP API of one simulated engine."""

    def __init__(self, config: EngineConfig, tokenizer: Tokenizer, address: EngineAddress,
                 publisher: KVEventPublisher | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.address = address
        self.publisher = publisher
        self.engine = Engine(config, publisher.publish if publisher else None)
        self.metrics = _Metrics(self.engine)
        self.engine_id = f"sim-{address.host}-{address.port}"
        self.created = int(time.time())
        self.app = Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET", "POST"]),
            Route("/version", self.version, methods=["GET"]),
            # Like vLLM: /metrics renders everything; prometheus_client's app mounted under /metrics/
            # honours ``name[]``.
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/metrics/", self.filtered_metrics_endpoint, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/v1/completions/render", self.render_completions, methods=["POST"]),
            Route("/v1/chat/completions/render", self.render_chat, methods=["POST"]),
            Route("/reset_prefix_cache", self.reset_prefix_cache, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
        ])

    # --- small endpoints ----------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return _json({"version": "odh-sim"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=_METRICS_TYPE)

    async def filtered_metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(request.query_params.getlist("name[]")), media_type=_METRICS_TYPE)

    async def models(self, request: Request) -> Response:
        m = self.config.model
        return _json({"object": "list", "data": [{
            "id": m, "object": "model", "created": self.created, "owned_by": "vllm", "root": m,
            "parent": None, "max_model_len": self.config.max_model_len, "permission": [],
        }]})

    async def reset_prefix_cache(self, request: Request) -> Response:
        self.engine.reset_prefix_cache()
        return Response(status_code=200)

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            ids = self._ids(body, "messages" in body)
        except ApiError as exc:
            return _error(exc)
        return _json({"count": len(ids), "max_model_len": self.config.max_model_len, "tokens": ids,
                      "token_strs": None})

    # vLLM's scale-out renderer (``--enable-scale-out``): token-in ``GenerateRequest``s, no generation.
    # Routers such as vllm-router's kv_aware tokenize through these; completions return a list (one per
    # prompt), chat returns one object.
    def _generate_request(self, body: dict[str, Any], ids: list[int], prefix: str) -> dict[str, Any]:
        params = {k: body[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "frequency_penalty",
                                       "presence_penalty", "seed", "stop", "n") if body.get(k) is not None}
        return {"request_id": prefix + uuid.uuid4().hex, "token_ids": ids, "sampling_params": params,
                "model": self.config.model, "stream": bool(body.get("stream", False)),
                "stream_options": body.get("stream_options"), "cache_salt": body.get("cache_salt"),
                "priority": body.get("priority", 0), "kv_transfer_params": body.get("kv_transfer_params"),
                "features": None, "token_offsets": None}

    async def render_completions(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            prompt = body.get("prompt")
            batch = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
            out = [self._generate_request(body, self._ids({**body, "prompt": p}, False), "cmpl-") for p in batch]
        except ApiError as exc:
            return _error(exc)
        return _json(out)

    async def render_chat(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            out = self._generate_request(body, self._ids(body, True), "chatcmpl-")
        except ApiError as exc:
            return _error(exc)
        return _json(out)

    # --- request parsing ----------------------------------------------------------------------
    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"JSON decode error: {exc}", "BadRequestError") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", "BadRequestError")
        model = body.get("model")
        if model is not None and model != self.config.model:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        return body

    def _ids(self, body: dict[str, Any], chat: bool) -> list[int]:
        try:
            if chat:
                return chat_ids(self.tokenizer, body.get("messages"))
            if "prompt" not in body:
                raise ValueError("'prompt' is required")
            return prompt_ids(self.tokenizer, body["prompt"])
        except ValueError as exc:
            raise ApiError(400, str(exc), "BadRequestError") from None

    def _request(self, body: dict[str, Any], chat: bool) -> tuple[SimRequest, dict[str, Any]]:
        ids = self._ids(body, chat)
        max_tokens = body.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = max(1, min(DEFAULT_MAX_TOKENS, self.config.max_model_len - len(ids)))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, "max_tokens must be at least 1, got " + repr(max_tokens), "BadRequestError",
                           "max_tokens")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or temperature < 0):
            raise ApiError(400, f"temperature must be non-negative, got {temperature!r}.", "BadRequestError",
                           "temperature")
        kv = body.get("kv_transfer_params") or {}
        if not isinstance(kv, dict):
            raise ApiError(400, "kv_transfer_params must be an object", "BadRequestError", "kv_transfer_params")
        if kv.get("do_remote_decode"):
            max_tokens = 1  # prefill only: the decode engine produces the rest
        req = SimRequest(ids, max_tokens, skip_prefill=bool(kv.get("do_remote_prefill")))
        try:
            self.engine.scheduler.check(req)
        except ValueError as exc:
            raise ApiError(400, str(exc), "BadRequestError") from None
        return req, kv

    def _transfer_params(self, req: SimRequest, kv: dict[str, Any]) -> dict[str, Any] | None:
        if not kv.get("do_remote_decode"):
            return None
        n = len(req.alloc.hashes) if req.alloc else 0
        return {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": list(range(n)),
                "remote_engine_id": self.engine_id, "remote_host": self.address.host,
                "remote_port": self.address.port, "tp_size": 1}

    # --- generation ---------------------------------------------------------------------------
    def _token_text(self, req: SimRequest, i: int) -> str:
        return " " + _WORDS[(len(req.prompt_ids) + i) % len(_WORDS)]

    async def _prefill(self, req: SimRequest) -> None:
        """The uncached prompt's compute time, after which the first token exists."""
        prefill = self.config.prefill_seconds(req.uncached_tokens)
        if prefill > 0:
            await asyncio.sleep(prefill)
        self.engine.first_token(req)

    async def _tokens(self, req: SimRequest) -> AsyncIterator[list[str]]:
        """Admit, then yield groups of output token texts as they come due."""
        loop = asyncio.get_running_loop()
        engine, cfg, n = self.engine, self.config, req.max_tokens
        await engine.admit(req)
        produced = 0
        try:
            await self._prefill(req)
            produced = 1
            yield [self._token_text(req, 0)]
            step = cfg.decode_ms_per_token / 1000.0
            t0 = loop.time()
            while produced < n:
                due = n if step <= 0 else min(n, 1 + int((loop.time() - t0) / step))
                if due > produced:
                    group = [self._token_text(req, i) for i in range(produced, due)]
                    produced = due
                    yield group
                else:
                    await asyncio.sleep(max(STREAM_TICK_S, t0 + produced * step - loop.time()))
        finally:
            engine.finish(req, produced)

    async def _run(self, req: SimRequest) -> str:
        """Non-streamed: one sleep for prefill and one for all of decode, cheaper than per token."""
        cfg, engine = self.config, self.engine
        await engine.admit(req)
        produced = 0
        try:
            await self._prefill(req)
            decode = cfg.decode_seconds(req.max_tokens)
            if decode > 0:
                await asyncio.sleep(decode)
            produced = req.max_tokens
        finally:
            engine.finish(req, produced)
        return "".join(self._token_text(req, i) for i in range(req.max_tokens))

    @staticmethod
    def _usage(req: SimRequest, completion: int) -> dict[str, Any]:
        p = len(req.prompt_ids)
        return {"prompt_tokens": p, "total_tokens": p + completion, "completion_tokens": completion,
                "prompt_tokens_details": None}

    async def completions(self, request: Request) -> Response:
        return await self._handle(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request, chat=True)

    async def _handle(self, request: Request, chat: bool) -> Response:
        try:
            body = await self._body(request)
            req, kv = self._request(body, chat)
        except ApiError as exc:
            return _error(exc)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        model = self.config.model
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
            return StreamingResponse(self._stream(req, kv, rid, created, chat, usage),
                                     media_type="text/event-stream")
        text = await self._run(req)
        finish = "length"
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text,
                                                              "refusal": None, "tool_calls": []},
                                      "logprobs": None, "finish_reason": finish, "stop_reason": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None,
                      "prompt_logprobs": None}
            obj = "text_completion"
        return _json({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
                      "usage": self._usage(req, req.max_tokens), "prompt_logprobs": None,
                      "kv_transfer_params": self._transfer_params(req, kv)})

    async def _stream(self, req: SimRequest, kv: dict[str, Any], rid: str, created: int, chat: bool,
                      include_usage: bool) -> AsyncIterator[bytes]:
        model = self.config.model
        obj = "chat.completion.chunk" if chat else "text_completion"
        extra = {"usage": None} if include_usage else {}

        def chunk(text: str | None, finish: str | None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
            return _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], **extra})

        produced = 0
        n = req.max_tokens
        async for group in self._tokens(req):
            out = []
            if chat and produced == 0:
                out.append(chunk(None, None, role=True))
            for text in group:
                produced += 1
                out.append(chunk(text, "length" if produced == n else None))
            yield b"".join(out)
        if include_usage:
            yield _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                        "usage": self._usage(req, produced)})
        yield b"data: [DONE]\n\n"
