"""The embedded platform's gateway: one HTTP/1.1 port in front of every InferenceService's replicas.

A lean reverse proxy on asyncio Protocols (uvloop when the daemon installs it), with ``httptools`` parsing
requests on the client side and responses on the upstream side. It exists because a generic Python proxy
adds several milliseconds per request; this one adds a fraction of one:

* the hot path is synchronous callbacks: a request whose upstream has an idle pooled connection is
  parsed, routed and written upstream inside one ``data_received``, with no task, future or copy of
  the body beyond the HTTP framing;
* writes are coalesced: the bytes produced while feeding one read to a parser go out in one write;
* bodies stream both ways as they arrive (Content-Length passed through, chunked re-chunked), with
  back-pressure through ``pause_reading``/``pause_writing``, so SSE reaches the client event by event;
* connections are kept alive on both sides; each upstream endpoint has a LIFO pool of idle connections.

Failure semantics: 404 (no route), 503 (route without ready replica), 502 (upstream failed before any
response byte), 504 (upstream read timeout). A connect failure tries the next endpoint (nothing was sent).
A pooled connection that the replica closed just as we reused it (EOF or reset before any response
byte) is redialled once with the same request, whose bytes we keep until the response starts.

Run standalone for benchmarks: ``python -m serving.platform.local.gateway --port 8080
--route default/iris=127.0.0.1:9000[,127.0.0.1:9001]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections import deque
from collections.abc import Iterable, Iterator

import httptools
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from serving.platform.local.routes import Endpoint, RouteTable, RouteTarget

log = logging.getLogger(__name__)

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward (plus any the Connection field
# names). Trailer goes too: trailers are not forwarded, because bodies are re-framed.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Request bytes kept for a stale-connection redial; a larger body cannot be replayed.
REPLAY_LIMIT = 1 << 20
# Client body bytes buffered while an upstream connection is being opened, before reading pauses.
PENDING_LIMIT = 1 << 18
# Idle keep-alive connections kept per endpoint.
POOL_SIZE = 64
# A client connection with no request in flight for this long is closed (nginx's keepalive_timeout).
CLIENT_IDLE_TIMEOUT = 75.0

# Reasons a client connection stops reading; it reads again when none is left.
_PAUSE_PIPELINE = 1  # a pipelined request waits for the one before it
_PAUSE_UPSTREAM = 2  # the upstream does not take the request body as fast as it comes
_PAUSE_PENDING = 4  # body buffered while no upstream connection is open yet

_REASONS = {400: b"Bad Request", 404: b"Not Found", 200: b"OK", 501: b"Not Implemented",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}


class _Metrics:
    """Plain-dict counters on the hot path; a prometheus Collector renders them on scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}

    def request(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def upstream_error(self, route: str, kind: str) -> None:
        key = (route, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1


class GatewayCollector(Collector):
    """Renders one gateway's counters as ``odh_gateway_*`` Prometheus metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        metrics = self._gateway._metrics
        requests = CounterMetricFamily(
            "odh_gateway_requests", "Requests answered by the gateway, by route and status code.",
            labels=["route", "code"])
        for (route, code), value in sorted(metrics.requests.items()):
            requests.add_metric([route, str(code)], value)
        yield requests
        errors = CounterMetricFamily(
            "odh_gateway_upstream_errors", "Upstream failures by route and kind (connect, reset, timeout, "
            "protocol, stale = a reused keep-alive connection redialled).", labels=["route", "kind"])
        for (route, kind), value in sorted(metrics.upstream_errors.items()):
            errors.add_metric([route, kind], value)
        yield errors
        in_flight = GaugeMetricFamily(
            "odh_gateway_in_flight", "Requests in flight per route.", labels=["route"])
        for target in list(self._gateway.routes._targets.values()):
            in_flight.add_metric([target.key], sum(target.outstanding.values()))
        yield in_flight


class Gateway:
    """The gateway server: ``start`` binds the port, ``stop`` closes it and every connection."""

    def __init__(self, routes: RouteTable, *, connect_timeout: float = 5.0, read_timeout: float = 300.0) -> None:
        self.routes = routes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[_ClientConnection] = set()
        self._idle: dict[Endpoint, list[_UpstreamConnection]] = {}
        self._dials: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._metrics = _Metrics()
        self.collector = GatewayCollector(self)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.collector)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        """Bind ``host:port`` (0 = a free port) and serve; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _ClientConnection(self), host, port, reuse_address=True, backlog=1024)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self._loop.call_later(CLIENT_IDLE_TIMEOUT / 4, self._sweep)
        return self.port

    async def stop(self) -> None:
        """Stop accepting, close every client and upstream connection and cancel pending dials."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self._clients):
            client.close()
        for task in list(self._dials):
            task.cancel()
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        self._server = None

    def _sweep(self) -> None:
        """Close idle client connections (one timer for all, instead of one per request)."""
        cutoff = self._loop.time() - CLIENT_IDLE_TIMEOUT  # type: ignore[union-attr]
        for client in list(self._clients):
            if not client.queue and client.last_active < cutoff:
                client.close()
        self._sweeper = self._loop.call_later(CLIENT_IDLE_TIMEOUT / 4, self._sweep)  # type: ignore[union-attr]

    def url_for(self, namespace: str, name: str) -> str:
        return f"http://{self.host}:{self.port}/serving/{namespace}/{name}"

    # -- metrics --------------------------------------------------------------------------------

    def metrics(self) -> dict[str, dict[str, int]]:
        """Counters as plain data: ``{"requests": {"ns/name 200": n}, "upstream_errors": {...}}``."""
        m = self._metrics
        return {
            "requests": {f"{route} {code}": n for (route, code), n in m.requests.items()},
            "upstream_errors": {f"{route} {kind}": n for (route, kind), n in m.upstream_errors.items()},
        }

    def metrics_text(self) -> bytes:
        """The counters in Prometheus' text exposition format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    # -- the upstream pool ----------------------------------------------------------------------

    def _take_idle(self, endpoint: Endpoint) -> _UpstreamConnection | None:
        conns = self._idle.get(endpoint)
        while conns:
            conn = conns.pop()  # LIFO: the warmest connection, the least likely to have timed out
            if not conn.closed:
                return conn
        return None

    def _put_idle(self, conn: _UpstreamConnection) -> None:
        if conn.closed or self._server is None:
            conn.close()
            return
        conns = self._idle.get(conn.endpoint)
        if conns is None:
            conns = self._idle[conn.endpoint] = []
        if len(conns) >= POOL_SIZE:
            conn.close()
            return
        conn.exchange = None
        if conn.read_paused:
            conn.resume()
        conns.append(conn)

    def _forget_idle(self, conn: _UpstreamConnection) -> None:
        conns = self._idle.get(conn.endpoint)
        if conns and conn in conns:
            conns.remove(conn)

    def _dial(self, exchange: _Exchange, endpoint: Endpoint) -> None:
        task = self._loop.create_task(self._open(exchange, endpoint))  # type: ignore[union-attr]
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _open(self, exchange: _Exchange, endpoint: Endpoint) -> None:
        loop = self._loop
        assert loop is not None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _UpstreamConnection(self, endpoint), endpoint.host, endpoint.port),
                self.connect_timeout)
        except asyncio.CancelledError:
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            exchange.connect_failed(endpoint, exc)
            return
        if exchange.aborted:
            self._put_idle(conn)
        else:
            exchange.bind(conn, reused=False)


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a replica; parses the responses of the exchange bound to it."""

    __slots__ = ("gateway", "endpoint", "transport", "parser", "exchange", "closed", "received",
                 "read_paused", "_status", "_reason", "_headers", "_in_head", "_reset_parser")

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.received = False  # any response byte for the bound exchange
        self.read_paused = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = True
        self._reset_parser = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # a replica must not talk on an idle connection
            self.close()
            return
        self.received = True
        exchange.last_io = exchange.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.exchange is exchange:
                exchange.upstream_failed("protocol", exc)
            self.close()
            return
        if self._reset_parser:  # a HEAD response ended at its headers; llhttp would wait for a body
            self._reset_parser = False
            self.parser = httptools.HttpResponseParser(self)
        exchange.flush_response()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is None:
            self.gateway._forget_idle(self)
            return
        self.exchange = None
        if not self._in_head and exchange.until_close:
            exchange.response_complete(reusable=False)  # a close-delimited body ends here
        else:
            exchange.upstream_failed("reset", exc)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause(_PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume(_PAUSE_UPSTREAM)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._in_head = True

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # later calls are trailers, which are not forwarded
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        status = self.parser.get_status_code()
        if status < 200 or exchange is None:
            return  # interim (1xx) responses are not forwarded: the gateway answers Expect itself
        self._in_head = False
        exchange.response_head(status, self._reason, self._headers)
        if exchange.method == b"HEAD":
            self._reset_parser = True
            exchange.response_complete(reusable=self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None and not self._in_head:
            exchange.response_complete(reusable=self.parser.should_keep_alive())

    # used by exchanges and the pool

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def pause(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class _Exchange:
    """One request and its response: routing, the upstream attempt(s), framing both ways."""

    __slots__ = (
        "client", "gateway", "loop", "url", "headers", "method", "keep_alive", "http10", "target", "route",
        "upstream_path", "head", "no_host", "chunked_in", "local", "request_done", "pending", "pending_size",
        "replay", "replay_size", "endpoint", "tried", "upstream", "reused", "response_started",
        "response_done", "status", "out", "chunked_out", "until_close", "close_after", "no_body", "timer",
        "last_io", "aborted", "finished", "expect", "content_length", "hold", "local_type",
    )

    def __init__(self, client: _ClientConnection) -> None:
        self.client = client
        self.gateway = client.gateway
        self.loop = client.loop
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b"GET"
        self.keep_alive = True
        self.http10 = False
        self.target: RouteTarget | None = None
        self.route = "-"
        self.upstream_path = b"/"
        self.head = b""
        self.no_host = False
        self.chunked_in = False
        self.local: tuple[int, bytes] | None = None  # the gateway's own answer
        self.local_type = b"application/json"
        self.request_done = False
        self.pending: list[bytes] = []  # upstream-bound bytes not written yet
        self.pending_size = 0
        self.replay: list[bytes] | None = []  # the body so far, while it can still be replayed
        self.replay_size = 0
        self.endpoint: Endpoint | None = None
        self.tried: list[Endpoint] | None = None
        self.upstream: _UpstreamConnection | None = None
        self.reused = False
        self.response_started = False  # the first response byte went to the client
        self.response_done = False
        self.status = 0
        self.out: list[bytes] = []  # client-bound bytes not written yet
        self.chunked_out = False
        self.until_close = False
        self.close_after = False
        self.no_body = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_io = 0.0
        self.aborted = False
        self.finished = False
        self.expect = False
        self.content_length = 0
        self.hold = False  # the response head waits for the first body bytes (one write, not two)

    # -- the request ----------------------------------------------------------------------------

    def prepare(self, peer: bytes) -> None:
        """Headers are in: route the request and build the upstream request head."""
        url = self.url
        if url == b"/healthz" and self.method in (b"GET", b"HEAD"):
            self.local = (200, b'{"status":"ok"}')
            return
        if url == b"/metrics" and self.method in (b"GET", b"HEAD"):
            self.local = (200, self.gateway.metrics_text())
            self.local_type = b"text/plain; version=0.0.4; charset=utf-8"
            return
        host: bytes | None = None
        forwarded_for: bytes | None = None
        forwarded_host = forwarded_proto = False
        tokens: tuple[bytes, ...] = ()
        kept: list[bytes] = []
        for name, value in self.headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    self.chunked_in = True  # llhttp accepts only chunked as the final coding
                elif lname == b"connection":
                    tokens += tuple(t.strip().lower() for t in value.split(b","))
                continue
            if lname == b"host":
                host = value
            elif lname == b"content-length":
                self.content_length = int(value)  # llhttp has validated it
            elif lname == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            elif lname == b"x-forwarded-host":
                forwarded_host = True
            elif lname == b"x-forwarded-proto":
                forwarded_proto = True
            elif lname == b"expect":
                self.expect = value.lower() == b"100-continue"
                continue
            kept += (name, b": ", value, b"\r\n")
        if tokens and any(t not in (b"close", b"keep-alive", b"upgrade") for t in tokens):
            kept = _drop_named(kept, tokens)
        if b"upgrade" in tokens and (self.content_length or self.chunked_in):
            # httptools hands the body of an upgrade request over as raw upgrade bytes; rather than
            # forward a request whose body would never follow, refuse it (bodiless ones go as plain HTTP).
            self.close_after = True
            self.local = (501, b'{"error":"protocol upgrade with a request body is not supported"}')
            return
        target, path = self.gateway.routes.resolve(url.decode("latin-1"), host.decode("latin-1") if host else None)
        if target is None:
            self.local = (404, b'{"error":"no InferenceService routes %s"}' % _json_escape(url))
            return
        self.target = target
        self.route = target.key
        if not target.endpoints:
            self.local = (503, b'{"error":"InferenceService %s has no ready replica"}' % target.key.encode())
            return
        kept += (b"X-Forwarded-For: ", forwarded_for + b", " + peer if forwarded_for else peer, b"\r\n")
        if host is not None and not forwarded_host:
            kept += (b"X-Forwarded-Host: ", host, b"\r\n")
        if not forwarded_proto:
            kept.append(b"X-Forwarded-Proto: http\r\n")
        if self.chunked_in:
            kept.append(b"Transfer-Encoding: chunked\r\n")
        self.no_host = host is None
        self.head = b"%s %s HTTP/1.1\r\n%s" % (self.method, path.encode("latin-1"), b"".join(kept))

    def start(self) -> None:
        """This exchange is first in line on its client connection: answer it or send it upstream."""
        if self.local is not None:
            status, body = self.local
            self.respond_local(status, body)
            return
        target = self.target
        assert target is not None
        endpoint = target.pick()
        if endpoint is None:  # every replica left between routing and now
            self.respond_local(503, b'{"error":"InferenceService %s has no ready replica"}' % target.key.encode())
            return
        if self.expect and not self.request_done:
            # Answer Expect here (it is not forwarded): the body streams on as soon as it comes.
            self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.connect(endpoint, defer=True)

    def connect(self, endpoint: Endpoint, fresh: bool = False, defer: bool = False) -> None:
        """Use an idle pooled connection to ``endpoint`` (unless ``fresh``), else open one.

        ``defer``: the caller flushes right after, so the head leaves in one write with the body so far.
        """
        self.endpoint = endpoint
        conn = None if fresh else self.gateway._take_idle(endpoint)
        if conn is not None:
            self.bind(conn, reused=True, defer=defer)
        else:
            self.gateway._dial(self, endpoint)

    def bind(self, conn: _UpstreamConnection, reused: bool, defer: bool = False) -> None:
        """Send the request (head and whatever body has arrived) on ``conn``; ``defer`` leaves it to flush."""
        self.upstream = conn
        self.reused = reused
        conn.exchange = self
        conn.received = False
        conn._in_head = True
        head = self.head + (b"Host: %s\r\n\r\n" % str(self.endpoint).encode() if self.no_host else b"\r\n")
        if defer:
            self.pending.insert(0, head)
            self.pending_size += len(head)
            self.client.resume(_PAUSE_PENDING)
        elif self.pending:
            conn.write(head + b"".join(self.pending))
            self.pending.clear()
            self.pending_size = 0
            self.client.resume(_PAUSE_PENDING)
        else:
            conn.write(head)
        if self.client.write_paused:
            conn.pause()
        self.last_io = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.gateway.read_timeout, self._check_timeout)

    def request_body(self, data: bytes) -> None:
        if self.local is not None or self.finished:
            return  # answered already: the rest of the body is read and dropped
        chunk = b"%x\r\n%s\r\n" % (len(data), data) if self.chunked_in else data
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.replay is not None:
            self.replay_size += len(chunk)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay.append(chunk)
        if self.upstream is None and self.pending_size > PENDING_LIMIT:
            self.client.pause(_PAUSE_PENDING)

    def request_complete(self) -> None:
        self.request_done = True
        if self.local is None and self.chunked_in:
            self.pending.append(b"0\r\n\r\n")
            if self.replay is not None:
                self.replay.append(b"0\r\n\r\n")
        if self.response_done:
            # The answer came before the body was all in (a streaming echo, an early error): the body
            # has now been passed on, so the upstream connection is in a clean state again.
            conn = self.upstream
            if conn is not None:
                self.flush_request()
                self.upstream = None
                self.gateway._put_idle(conn)
            self.finish()

    def flush_request(self) -> None:
        upstream = self.upstream
        if upstream is not None and self.pending:
            pending = self.pending
            upstream.write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()
            self.pending_size = 0
            self.last_io = self.loop.time()

    # -- the response ---------------------------------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.replay = None  # a response has begun: never resend this request
        content_length = -1
        chunked = False
        tokens: tuple[bytes, ...] = ()
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    chunked = True
                elif lname == b"connection":
                    tokens += tuple(t.strip().lower() for t in value.split(b","))
                continue
            if lname == b"content-length":
                content_length = int(value)
            parts += (name, b": ", value, b"\r\n")
        if tokens and any(t not in (b"close", b"keep-alive") for t in tokens):
            parts = parts[:1] + _drop_named(parts[1:], tokens)
        if status in (204, 304) or self.method == b"HEAD":
            self.no_body = True
        elif chunked or content_length < 0:
            # Re-frame: chunked for HTTP/1.1 clients (events stay events), close-delimited for 1.0.
            self.until_close = not chunked
            if self.http10:
                self.close_after = True
            else:
                self.chunked_out = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.close_after or not self.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif self.http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))
        self.response_started = True
        # Servers such as uvicorn write the head and a sized body separately; holding the head until the
        # body's first bytes saves a send (and a client wake-up) per request. Streams are not held.
        self.hold = content_length > 0 and not chunked and not self.no_body

    def response_body(self, data: bytes) -> None:
        self.hold = False
        if self.chunked_out:
            self.out.append(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def flush_response(self) -> None:
        out = self.out
        if out and not self.hold:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def response_complete(self, reusable: bool) -> None:
        self.hold = False
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        self.flush_response()
        self.response_done = True
        conn = self.upstream
        if not self.request_done and reusable and not self.close_after:
            return  # the rest of the request body still goes upstream; request_complete releases
        if conn is not None:
            self.upstream = None
            if reusable and self.request_done and not self.pending:
                self.gateway._put_idle(conn)
            else:
                conn.close()
        self.finish()

    def respond_local(self, status: int, body: bytes) -> None:
        """The gateway's own JSON answer (404, 502, 503, 504, /healthz)."""
        self.status = status
        if not self.request_done and (self.chunked_in or self.expect or self.content_length > REPLAY_LIMIT):
            self.close_after = True  # rather than read a big body only to drop it; small ones are drained
        connection = b"close" if (self.close_after or not self.keep_alive) else b"keep-alive"
        self.client.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                          b"connection: %s\r\n\r\n%s" % (status, _REASONS[status], self.local_type, len(body),
                                                        connection, body))
        self.response_started = self.response_done = True
        if self.request_done or self.close_after:
            self.finish()

    # -- failures -------------------------------------------------------------------------------

    def connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        """Opening a connection failed: nothing was sent, so another replica may take the request."""
        if self.aborted:
            return
        log.debug("gateway: connect to %s failed: %r", endpoint, exc)
        self.gateway._metrics.upstream_error(self.route, "connect")
        target = self.target
        assert target is not None
        target.release(endpoint)
        if self.tried is None:
            self.tried = []
        self.tried.append(endpoint)
        self.endpoint = None
        following = target.pick(self.tried)
        if following is not None:
            self.connect(following)
        else:
            self.fail(502, b"upstream connect failed: %s" % _json_escape(str(exc) or type(exc).__name__))

    def upstream_failed(self, kind: str, exc: BaseException | None) -> None:
        """The bound upstream connection broke (or timed out) before the response completed."""
        conn = self.upstream
        if conn is None:
            return
        self.upstream = None
        conn.close()
        if self.aborted or self.finished:
            return
        stale = kind == "reset" and self.reused and not conn.received and self.replay is not None
        self.gateway._metrics.upstream_error(self.route, "stale" if stale else kind)
        if stale:
            # The replica closed an idle connection as we reused it: it never saw the request. Redial
            # (not from the pool, whose other connections may be just as dead) and send it again.
            self.pending = list(self.replay)  # type: ignore[arg-type]  # the whole body so far
            self.pending_size = self.replay_size
            self.connect(self.endpoint, fresh=True)  # type: ignore[arg-type]
            return
        if self.response_started and not self.hold:
            self.client.close()  # mid-response: closing is the only way to say the body is truncated
            self.finish()
            return
        self.out.clear()  # a held head never reached the client: it gets a clean error instead
        self.hold = self.response_started = False
        if kind == "timeout":
            self.fail(504, b"upstream timed out after %gs" % self.gateway.read_timeout)
        else:
            self.fail(502, b"upstream %s: %s" % (kind.encode(), _json_escape(str(exc) if exc else "connection closed")))

    def fail(self, status: int, message: bytes) -> None:
        self.pending.clear()
        self.local = (status, b"")
        self.respond_local(status, b'{"error":"%s"}' % message)

    def _check_timeout(self) -> None:
        """Lazy read timeout: one timer per exchange, re-armed by whatever time is left."""
        self.timer = None
        if self.finished or self.aborted:
            return
        left = self.last_io + self.gateway.read_timeout - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check_timeout)
        else:
            self.upstream_failed("timeout", None)

    def abort(self) -> None:
        """The client went away: drop the upstream side (a half-read response cannot be reused)."""
        if self.finished:
            return
        self.aborted = True
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.close()
        if not self.response_done:
            self.status = 499  # nginx's "client closed request"
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.client.resume(_PAUSE_UPSTREAM | _PAUSE_PENDING)
        if self.endpoint is not None and self.target is not None:
            self.target.release(self.endpoint)
            self.endpoint = None
        self.gateway._metrics.request(self.route, self.status)
        if not self.aborted:
            self.client.exchange_finished(self)


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time, in order (pipelining-safe)."""

    __slots__ = ("gateway", "loop", "transport", "parser", "peer", "current", "queue", "paused",
                 "write_paused", "closed", "eof", "last_active")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = gateway._loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.current: _Exchange | None = None  # the request being parsed
        self.queue: deque[_Exchange] = deque()  # requests not finished yet; the first one is active
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.eof = False
        self.last_active = self.loop.time()  # type: ignore[union-attr]

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.gateway._clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                # Upgrade/CONNECT are not proxied: Upgrade is hop-by-hop and stripped, so the request was
                # sent as plain HTTP; parse on after it.
                offset = upgrade.args[0] if upgrade.args else len(data)
                data = data[offset:]
                if data and not self.closed:
                    continue
            except httptools.HttpParserError:
                self._bad_request()
                return
            break
        queue = self.queue
        if queue:
            for exchange in queue:
                exchange.flush_request()

    def eof_received(self) -> bool | None:
        # A half-closed client may still wait for its answer: keep the exchange running when one is.
        if self.queue and self.current is None:
            self.eof = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway._clients.discard(self)
        queue = self.queue
        while queue:
            queue.popleft().abort()
        self.current = None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.resume()

    # httptools callbacks

    def on_message_begin(self) -> None:
        exchange = _Exchange(self)
        self.current = exchange
        self.queue.append(exchange)
        if len(self.queue) > 1:
            self.pause(_PAUSE_PIPELINE)

    def on_url(self, url: bytes) -> None:
        exchange = self.current
        exchange.url = exchange.url + url if exchange.url else url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        parser = self.parser
        exchange.method = parser.get_method()
        exchange.keep_alive = parser.should_keep_alive()
        exchange.http10 = parser.get_http_version() == "1.0"
        exchange.prepare(self.peer)
        if self.queue[0] is exchange:
            exchange.start()

    def on_body(self, body: bytes) -> None:
        self.current.request_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        exchange = self.current
        self.current = None
        if exchange is not None:
            exchange.request_complete()

    # used by exchanges

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def exchange_finished(self, exchange: _Exchange) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        self.last_active = self.loop.time()  # type: ignore[union-attr]
        if self.closed:
            return
        if exchange.close_after or not exchange.keep_alive or (self.eof and not queue):
            self.close()
            return
        if queue:
            following = queue[0]
            if len(queue) == 1:
                self.resume(_PAUSE_PIPELINE)
            if following.head or following.local is not None:  # its headers are in
                following.start()
                following.flush_request()

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  # flushes what is buffered first

    def _bad_request(self) -> None:
        if not self.queue or not self.queue[0].response_started:
            body = b'{"error":"malformed HTTP request"}'
            self.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                       b"connection: close\r\n\r\n%s" % (len(body), body))
            self.gateway._metrics.request("-", 400)
        self.close()


def _drop_named(parts: list[bytes], names: tuple[bytes, ...]) -> list[bytes]:
    """Remove, from ``[name, ": ", value, "\\r\\n", ...]`` quads, the fields the Connection header names."""
    kept: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i:i + 4]
    return kept


def _json_escape(value: bytes | str) -> bytes:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "replace")


# -- standalone entry point (benchmarks, debugging) -------------------------------------------------


def _parse_route(spec: str) -> tuple[str, str, list[Endpoint]]:
    """``namespace/name=host:port[,host:port...]``"""
    key, _, addresses = spec.partition("=")
    namespace, _, name = key.partition("/")
    if not (namespace and name and addresses):
        raise argparse.ArgumentTypeError(f"route {spec!r} is not namespace/name=host:port[,host:port]")
    endpoints = []
    for address in addresses.split(","):
        host, _, port = address.rpartition(":")
        endpoints.append(Endpoint(host or "127.0.0.1", int(port)))
    return namespace, name, endpoints


async def serve(host: str, port: int, routes: Iterable[tuple[str, str, list[Endpoint]]]) -> None:
    table = RouteTable()
    for namespace, name, endpoints in routes:
        table.set(namespace, name, endpoints)
    gateway = Gateway(table)
    bound = await gateway.start(host, port)
    print(f"gateway listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the embedded platform's gateway, standalone")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--route", action="append", type=_parse_route, default=[],
                        help="namespace/name=host:port[,host:port...] (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.route))
    else:
        uvloop.run(serve(args.host, args.port, args.route))


if __name__ == "__main__":
    main()
