"""The model-server process: KServe V1 and V2 (Open Inference Protocol) over HTTP for one model.

    python -m serving.runtimes.server --model_name iris --model_dir DIR --http_port 8080 \\
        [--model_format sklearn|mlflow|auto] [--host 127.0.0.1] [--workers 1] \\
        [--predict_workers N] [--predict_queue N] [--max_request_body BYTES]

Plain Starlette (no FastAPI/pydantic on the hot path), orjson bodies, uvicorn with uvloop and
httptools and no access log. The model loads in the background after the socket opens, so liveness
answers at once and readiness turns 200 when the model is loaded; a model that fails to load stops
the process with exit code 1. Decoding, prediction and encoding run on a few predict threads
(``pool.py``), so probes and metrics are answered while a model works. Errors are ``{"error": message}``
with the status of the ``InferenceServerError`` subclass (400 bad input, 404 unknown model, 413 body over
``--max_request_body``, 503 not ready or busy, 500 model failure). ``/openapi.json`` describes the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from serving.platform.local.limits import MAX_REQUEST_BODY_ENV, PlatformLimits, env_number
from serving.runtimes import v1, v2
from serving.runtimes.errors import (
    InferenceServerError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    RequestTooLarge,
)
from serving.runtimes.model import Model, ModelRepository
from serving.runtimes.openapi import openapi_document
from serving.runtimes.pool import FastPath, PredictPool, Ticket, default_predict_workers

log = logging.getLogger("serving.runtimes.server")

SERVER_NAME = "odh-serving"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
JSON = "application/json"
T = TypeVar("T")
CONFIG_ENV = "ODH_MODEL_SERVER_CONFIG"  # carries the CLI arguments to worker processes (--workers > 1)


# ------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class ServerLimits:
    """What one replica admits at once (see ``pool.py``) and how large a request body may be."""

    predict_workers: int = field(default_factory=default_predict_workers)
    # Requests that may wait for a predict thread; beyond them a request gets 503 and Retry-After.
    predict_queue: int = 128
    # The platform's request body limit (ODH_MAX_REQUEST_BODY_BYTES), so the gateway and replicas agree.
    max_request_body: int = PlatformLimits.max_request_body
    # Body bytes that admitted requests may hold together; None: two of the largest bodies.
    max_inflight_body: int | None = None

    @property
    def inflight_body_budget(self) -> int:
        return self.max_inflight_body or 2 * self.max_request_body


def default_max_request_body() -> int:
    """``ODH_MAX_REQUEST_BODY_BYTES`` when set (the platform passes its limit down), else 100 MiB."""
    return env_number(MAX_REQUEST_BODY_ENV, PlatformLimits.max_request_body, int)


# ------------------------------------------------------------------------------------------ metrics


class ServerMetrics:
    """Prometheus metrics of one server. Labelled children are cached: ``labels()`` takes a lock and
    builds a tuple per call, which is most of a metric update's cost."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:  # a registry per server, so tests can build many apps in one process
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self.requests = Counter(
            "odh_model_server_requests",
            "Requests answered, by protocol (v1, v2, health), model and HTTP status.",
            ["protocol", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "odh_model_server_request_duration_seconds",
            "Time from request to response, by route template.",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.predict = Histogram(
            "odh_model_server_predict_duration_seconds",
            "Time in the model (preprocess, predict, postprocess), by model.",
            ["model"],
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
        self._children: dict[tuple, Any] = {}

    def watch_pool(self, pool: PredictPool) -> None:
        """Gauges read at scrape time: how full the predict pool's admission is."""
        admitted = Gauge(
            "odh_model_server_admitted_requests",
            "Prediction requests admitted now (running on a predict thread or waiting for one).",
            registry=self.registry,
        )
        admitted.set_function(lambda: pool.requests)
        body = Gauge(
            "odh_model_server_admitted_body_bytes",
            "Request body bytes held by admitted prediction requests.",
            registry=self.registry,
        )
        body.set_function(lambda: pool.body_bytes)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, protocol: str, model: str, status: int, route: str, seconds: float) -> None:
        self._child(self.requests, protocol, model, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def observe_predict(self, model: str, seconds: float) -> None:
        self._child(self.predict, model).observe(seconds)


# ----------------------------------------------------------------------------------------- the app


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON)


def _error(exc: InferenceServerError) -> Response:
    return Response(orjson.dumps({"error": str(exc)}), exc.status_code, exc.headers or None, media_type=JSON)


Handler = Callable[[Request], Awaitable[tuple[Response, str]]]


class V1ModelName(StringConvertor):
    """A V1 model name stops at ':' so that ``GET /v1/models/m:predict`` is a 405 on the predict route, not
    a lookup of a model named ``m:predict`` (KServe's model names are DNS labels: no ':' in them)."""

    regex = "[^/:]+"


register_url_convertor("v1_model", V1ModelName())


class ModelServer:
    """Routes and handlers over a ``ModelRepository``; ``app`` is the ASGI application."""

    def __init__(
        self, repository: ModelRepository, metrics: ServerMetrics | None = None, limits: ServerLimits | None = None
    ) -> None:
        self.repository = repository
        self.metrics = metrics or ServerMetrics()
        self.limits = limits or ServerLimits()
        self.pool = PredictPool(
            self.limits.predict_workers,
            self.limits.predict_queue,
            max(self.limits.inflight_body_budget, self.limits.max_request_body),
        )
        self.metrics.watch_pool(self.pool)
        self.fast_path = FastPath()
        self.load_error: BaseException | None = None
        # Called when a model fails to load; main() points it at uvicorn's should_exit. The default
        # signals this process, which also works in uvicorn's worker processes.
        self.on_load_failure: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        self.app = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={HTTPException: self._http_exception, Exception: self._unexpected},
        )
        self.app.state.server = self

    # Each route is instrumented by the same small wrapper: one clock read either side, cached metric children.
    def _route(self, path: str, protocol: str, handler: Handler, methods: list[str]) -> Route:
        observe = self.metrics.observe_request

        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response, model = await handler(request)
            except InferenceServerError as exc:
                response = _error(exc)
                # Label by the model name only when it exists: a client must not mint label values.
                name = request.path_params.get("model", "")
                model = name if name in self.repository.names() else ""
            observe(protocol, model, response.status_code, path, time.perf_counter() - start)
            return response

        return Route(path, endpoint, methods=methods)

    def _routes(self) -> list[Route]:
        r = self._route
        return [
            # KServe V1
            r("/", "v1", self.v1_live, ["GET"]),
            r("/v1/models", "v1", self.v1_models, ["GET"]),
            r("/v1/models/{model:v1_model}", "v1", self.v1_model_ready, ["GET"]),
            r("/v1/models/{model:v1_model}:predict", "v1", self.v1_predict, ["POST"]),
            # V2 / Open Inference Protocol
            r("/v2", "v2", self.v2_server_metadata, ["GET"]),
            r("/v2/health/live", "v2", self.v2_live, ["GET"]),
            r("/v2/health/ready", "v2", self.v2_ready, ["GET"]),
            r("/v2/models/{model}", "v2", self.v2_model_metadata, ["GET"]),
            r("/v2/models/{model}/ready", "v2", self.v2_model_ready, ["GET"]),
            r("/v2/models/{model}/infer", "v2", self.v2_infer, ["POST"]),
            r("/v2/models/{model}/versions/{version}", "v2", self.v2_model_metadata, ["GET"]),
            r("/v2/models/{model}/versions/{version}/ready", "v2", self.v2_model_ready, ["GET"]),
            r("/v2/models/{model}/versions/{version}/infer", "v2", self.v2_infer, ["POST"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", self.openapi_endpoint, methods=["GET"]),
        ]

    def _model(self, request: Request, *, ready: bool) -> Model:
        params = request.path_params
        get = self.repository.get_ready if ready else self.repository.get
        model = get(params["model"])
        version = params.get("version")
        if version is not None and version != model.version:
            if model.version is None:
                raise ModelNotFound(
                    f"model '{model.name}' has no versions; use /v2/models/{model.name}/infer without /versions/..."
                )
            raise ModelNotFound(f"model '{model.name}' has no version '{version}' (it serves '{model.version}')")
        return model

    # V1 ------------------------------------------------------------------------------------------

    async def v1_live(self, request: Request) -> tuple[Response, str]:
        return _json({"status": "alive"}), ""

    async def v1_models(self, request: Request) -> tuple[Response, str]:
        return _json({"models": self.repository.names()}), ""

    async def v1_model_ready(self, request: Request) -> tuple[Response, str]:
        model = self._model(request, ready=True)
        return _json({"name": model.name, "ready": True}), model.name

    async def v1_predict(self, request: Request) -> tuple[Response, str]:
        model = self._model(request, ready=True)
        with self.pool.admit() as ticket:
            body = await self._read_body(request, ticket)
            if model.blocking:
                content = await self._blocking(model, body, _v1_blocking, model, body)
            else:
                inputs = await self.pool.run(v1.decode_request, body)
                outputs = await self._run(model, inputs)
                content = await self.pool.run(v1.encode_response, outputs)
        return Response(content, media_type=JSON), model.name

    # V2 ------------------------------------------------------------------------------------------

    async def v2_server_metadata(self, request: Request) -> tuple[Response, str]:
        return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}), ""

    async def v2_live(self, request: Request) -> tuple[Response, str]:
        return _json({"live": True}), ""

    async def v2_ready(self, request: Request) -> tuple[Response, str]:
        if self.repository.ready:
            return _json({"ready": True}), ""
        waiting = ", ".join(repr(m.name) for m in self.repository.models() if not m.ready)
        return _json({"ready": False, "error": f"models not ready yet: {waiting}"}, 503), ""

    async def v2_model_metadata(self, request: Request) -> tuple[Response, str]:
        model = self._model(request, ready=False)
        return _json(model.metadata()), model.name

    async def v2_model_ready(self, request: Request) -> tuple[Response, str]:
        model = self._model(request, ready=True)
        return _json({"name": model.name, "ready": True}), model.name

    async def v2_infer(self, request: Request) -> tuple[Response, str]:
        model = self._model(request, ready=True)
        header_length = request.headers.get(v2.HEADER_LENGTH)
        with self.pool.admit() as ticket:
            body = await self._read_body(request, ticket)
            if model.blocking:
                content, json_length = await self._blocking(model, body, _v2_blocking, model, body, header_length)
            else:
                infer = await self.pool.run(v2.decode_request, body, header_length)
                outputs = await self._run(model, infer.inputs)
                content, json_length = await self.pool.run(
                    v2.encode_response, model.name, outputs, infer, model.version
                )
        if json_length is None:
            return Response(content, media_type=JSON), model.name
        headers = {"Inference-Header-Content-Length": str(json_length)}
        return Response(content, media_type="application/octet-stream", headers=headers), model.name

    async def _blocking(self, model: Model, body: bytes, work: Callable[..., T], *args: Any) -> T:
        """A plain-function model's whole request (decode, predict, encode): on a predict thread, or right
        here when the fast path says this model is quick on bodies this small."""
        timing = _PredictTiming()
        try:
            if self.fast_path.allows(model.name, len(body)):
                result = work(timing, *args)
            else:
                result = await self.pool.run(work, timing, *args)
        finally:
            if timing.seconds is not None:  # a model that failed slowly loses the fast path too
                self.fast_path.record(model.name, len(body), timing.seconds)
        assert timing.seconds is not None  # set by the model's call, which answered
        self.metrics.observe_predict(model.name, timing.seconds)
        return result

    async def _run(self, model: Model, inputs: list[v2.Tensor]) -> list[v2.Tensor]:
        """An async model's steps, on the event loop (it promised not to block it)."""
        start = time.perf_counter()
        outputs = await model(inputs)
        self.metrics.observe_predict(model.name, time.perf_counter() - start)
        return outputs

    async def _read_body(self, request: Request, ticket: Ticket) -> bytes:
        """The body, refused with 413 past ``max_request_body`` before the rest is read (a declared
        Content-Length over it: before any of it). Its bytes count against the pool's budget as they
        arrive; uvicorn discards whatever a refused request still sends."""
        limit = self.limits.max_request_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with contextlib.aclosing(request.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(size, limit)
                    self.pool.reserve(ticket, len(chunk))
                    if chunk:
                        chunks.append(chunk)
        except ClientDisconnect:  # nobody to answer; counted as the client's doing, not a server error
            raise InvalidInput(f"the client went away after {size} bytes of the request body") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # Everything else ------------------------------------------------------------------------------

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi_endpoint(self, request: Request) -> Response:
        models = self.repository.models()
        versions = sorted({m.version for m in models if m.version is not None})
        return _json(openapi_document([m.name for m in models], versions))

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no route {request.url.path}; see /v2/models/{{model}}/infer or /v1/models/{{model}}:predict"
        elif exc.status_code == 405 and "Allow" in headers:
            # Starlette joins a set: sort it so the header (and the message) is the same every time.
            allow = headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
            message = f"{request.method} {request.url.path}: method not allowed; use {allow}"
        else:
            message = f"{request.method} {request.url.path}: {exc.detail}"
        return Response(orjson.dumps({"error": message}), exc.status_code, headers, media_type=JSON)

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette):
        task = asyncio.create_task(self._load())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.pool.shutdown()

    async def _load(self) -> None:
        for model in self.repository.models():
            start = time.perf_counter()
            try:
                await model.load()
            except Exception as exc:
                # A server that can never be ready should not linger: stop, and main() exits 1.
                self.load_error = exc
                log.error("model '%s' failed to load: %s", model.name, exc)
                self.on_load_failure()
                return
            log.info("model '%s' loaded in %.2fs", model.name, time.perf_counter() - start)


def _too_large(size: int, limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"request body of {size}+ bytes is over this server's limit of {limit} bytes; send less "
        f"(or raise --max_request_body / {MAX_REQUEST_BODY_ENV})"
    )


@dataclass(slots=True)
class _PredictTiming:
    seconds: float | None = None  # the model's own time, set whether it answered or raised

    def infer(self, model: Model, inputs: list[v2.Tensor]) -> list[v2.Tensor]:
        start = time.perf_counter()
        try:
            return model.infer(inputs)
        finally:
            self.seconds = time.perf_counter() - start


def _v1_blocking(timing: _PredictTiming, model: Model, body: bytes) -> bytes:
    """A V1 request's work for a plain-function model: decode, the model (timed), encode."""
    return v1.encode_response(timing.infer(model, v1.decode_request(body)))


def _v2_blocking(
    timing: _PredictTiming, model: Model, body: bytes, header_length: str | None
) -> tuple[bytes, int | None]:
    """A V2 request's work for a plain-function model: decode, the model (timed), encode."""
    infer = v2.decode_request(body, header_length)
    return v2.encode_response(model.name, timing.infer(model, infer.inputs), infer, model.version)


# ----------------------------------------------------------------------------------------- the CLI


def detect_format(model_dir: str | Path) -> str:
    """``mlflow`` when the directory holds an ``MLmodel`` file, else ``sklearn``."""
    from serving.runtimes.mlflow_model import find_mlflow_dir

    return "mlflow" if find_mlflow_dir(model_dir) is not None else "sklearn"


def build_model(name: str, model_dir: str | Path, model_format: str = "auto", version: str | None = None) -> Model:
    """The model object for ``model_format`` (not loaded yet); raises ``ModelLoadError`` for a bad directory."""
    if model_format == "auto":
        model_format = detect_format(model_dir)
    if model_format == "sklearn":
        from serving.runtimes.sklearn_model import SKLearnModel

        return SKLearnModel(name, model_dir, version)
    if model_format == "mlflow":
        from serving.runtimes.mlflow_model import MLflowModel

        return MLflowModel(name, model_dir, version)
    raise ModelLoadError(f"unknown model format {model_format!r}; expected sklearn, mlflow or auto")


def create_app(
    model_name: str,
    model_dir: str | Path,
    model_format: str = "auto",
    version: str | None = None,
    limits: ServerLimits | None = None,
) -> Starlette:
    model = build_model(model_name, model_dir, model_format, version)
    return ModelServer(ModelRepository([model]), limits=limits).app


def _app_from_env() -> Starlette:
    """uvicorn factory for worker processes: the CLI arguments travel in an environment variable."""
    config = json.loads(os.environ[CONFIG_ENV])
    limits = ServerLimits(**config["limits"])
    return create_app(
        config["model_name"], config["model_dir"], config["model_format"], config["model_version"], limits
    )


def _limits(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        predict_workers=args.predict_workers, predict_queue=args.predict_queue, max_request_body=args.max_request_body
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.runtimes.server", description=__doc__.split("\n")[0])
    parser.add_argument("--model_name", "--model-name", required=True)
    parser.add_argument("--model_dir", "--model-dir", required=True, help="directory (or file) holding the model")
    parser.add_argument("--http_port", "--http-port", type=int, default=8080)
    parser.add_argument("--model_format", "--model-format", choices=["sklearn", "mlflow", "auto"], default="auto")
    parser.add_argument("--model_version", "--model-version", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log_level", "--log-level", default="info")
    parser.add_argument(
        "--predict_workers", "--predict-workers", type=_at_least(1), default=default_predict_workers(),
        help="threads that decode, predict and encode (default: one per core, at most 4)",
    )
    parser.add_argument(
        "--predict_queue", "--predict-queue", type=_at_least(0), default=ServerLimits.predict_queue,
        help="requests that may wait for a predict thread; more get 503 with Retry-After (default %(default)s)",
    )
    parser.add_argument(
        "--max_request_body", "--max-request-body", type=_at_least(1), default=None,
        help=f"largest request body in bytes; larger gets 413 (default: ${MAX_REQUEST_BODY_ENV} or 100 MiB)",
    )
    args = parser.parse_args(argv)
    if args.max_request_body is None:
        try:
            args.max_request_body = default_max_request_body()
        except ValueError as exc:
            parser.error(str(exc))
    return args


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(
        host=args.host,
        port=args.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    try:
        # Resolve the format and the model file now: a bad directory is an error before any socket opens.
        model = build_model(args.model_name, args.model_dir, args.model_format, args.model_version)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.workers > 1:
        # Each worker loads its own copy; metrics are per worker (no prometheus multiprocess mode).
        os.environ[CONFIG_ENV] = json.dumps(
            {
                "model_name": args.model_name,
                "model_dir": str(args.model_dir),
                "model_format": model.platform,
                "model_version": args.model_version,
                "limits": asdict(_limits(args)),
            }
        )
        uvicorn.run("serving.runtimes.server:_app_from_env", factory=True, workers=args.workers, **common)
        return 0

    server = ModelServer(ModelRepository([model]), limits=_limits(args))
    runner = uvicorn.Server(uvicorn.Config(server.app, **common))
    server.on_load_failure = lambda: setattr(runner, "should_exit", True)
    runner.run()
    return 1 if server.load_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
