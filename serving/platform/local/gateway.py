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

Revisions and the activator (Knative's, inside the gateway; the route table holds the data): a route's
request goes to one of its revisions by the route's traffic split (smooth weighted round robin), and is
counted on that revision's meter (``started`` when accepted, ``finished`` when its response ends, held
time included) for the KPA. When the revision has no ready replica the request is *held* in the
revision's bounded queue, ``RouteTable.on_activate`` tells the daemon (once per transition), and the
held requests go, first held first, to the replicas the daemon then routes. Past the bound (``activator_queue``
held, or ``activator_wait_s`` waited) the answer is 503 with Retry-After, naming the revision; a client
that hangs up while held leaves the queue. A revision routed with ``RouteTable.set`` (or marked failed)
is not held for: 503 at once.

Failure semantics: 404 (no route), 503 (a revision that may not be waited for has no ready replica, or
the activator's bounds), 502 (upstream failed before any response byte and the request cannot go
again), 504 (upstream read timeout). A connect failure tries the next endpoint (nothing was sent). A
pooled connection that the replica closed just as we reused it (EOF or reset before any response byte)
is redialled once with the same request, whose bytes we keep until the response starts. A replica that
resets a fresh connection before any response byte (killed under load) gets the request sent to the
next endpoint, or held until one is ready; up to ``MAX_RESENDS`` times, and only while the body is
still kept (under ``REPLAY_LIMIT``).

Requests the gateway refuses (each answer names the problem; the connection then closes, after the
answers to the requests pipelined before it):

* 400: bytes httptools cannot parse (bare LF, obsolete line folding, NUL/CR/controls in a header value,
  bad chunk sizes or extensions, Content-Length twice or with Transfer-Encoding, ...), and what it
  parses but we do not trust: a Transfer-Encoding other than exactly ``chunked`` (``gzip, chunked``,
  ``chunked, identity``), Transfer-Encoding on HTTP/1.0, more than one Host, an HTTP version other than
  1.0 or 1.1, a protocol upgrade (or CONNECT) with a request body (llhttp would not parse that body).
  A body whose bad bytes come after its head went upstream cuts that upstream connection.
* 408: a request head not complete ``request_head_timeout`` seconds after its first byte, or a body
  that goes ``request_body_timeout`` seconds without a byte (the connection just closes when part of
  the answer has gone out). Time the gateway itself stops reading (back-pressure, pipelining) does not
  count. An idle keep-alive connection is closed silently after ``CLIENT_IDLE_TIMEOUT``.
* 413: a Content-Length over ``max_request_body`` (nothing is forwarded), or a chunked body that grows
  past it (cut where it is: 413 when no answer has started, else both connections close).
* 431: a request line plus headers over ``max_request_head``.

Framing (the desync rule): what goes upstream is framed by what the gateway parsed, never by the
client's header text. The gateway writes its own Content-Length or ``Transfer-Encoding: chunked`` and
Host lines; tokens in ``Connection`` that name Content-Length, Transfer-Encoding or Host are ignored
(they remove nothing). An upstream connection whose response does not line up with its request is
closed and never pooled: bytes while no request is in flight, a second response or bytes after the
response, a 101, a response that ends before the whole request went up (the replica would read the
rest as a new request), or a body length that differs from the Content-Length we sent.

Run standalone for benchmarks: ``python -m serving.platform.local.gateway --port 8080
--route default/iris=127.0.0.1:9000[,127.0.0.1:9001]`` (``--split-route`` for a route through a revision).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from enum import IntEnum

import httptools
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from serving.autoscaling.meter import ConcurrencyMeter
from serving.http import (
    CONSUMED,
    HOP_BY_HOP,
    LAST_CHUNK,
    UNCONNECTED,
    ConnectionPool,
    ExchangeState,
    FlowControl,
    FramingError,
    OutOfStep,
    Pause,
    ReplayBuffer,
    RequestFraming,
    RequestRefused,
    check_lookalike,
    check_transition,
    chunk,
    connection_tokens,
    drop_named,
    last_coding_is_chunked,
    named_fields,
    status_line,
    stream_transport,
)
from serving.http.exchange import ALLOWED_MASKS
from serving.platform.local.limits import (
    ACTIVATOR_QUEUE_ENV,
    ACTIVATOR_WAIT_ENV,
    MAX_REQUEST_BODY_ENV,
    MAX_REQUEST_HEAD_ENV,
    PlatformLimits,
)
from serving.platform.local.routes import Backend, Endpoint, Route, RouteTable, RouteTarget

log = logging.getLogger(__name__)

# Request bytes kept for a stale-connection redial; a larger body cannot be replayed.
REPLAY_LIMIT = 1 << 20
# Client body bytes buffered while an upstream connection is being opened, before reading pauses.
PENDING_LIMIT = 1 << 18
# Idle keep-alive connections kept per endpoint (the same bookkeeping as the router's engine pools:
# serving.http.ConnectionPool). No idle expiry: a replica's own keep-alive timeout closes them, the pool
# drops closed ones, and the rare one closed just as it is reused is redialled (``replica_gone``).
POOL_SIZE = 64
POOL_KEEPALIVE_EXPIRY: float | None = None
# Times a request may be sent again after a replica reset it before any response byte (a replica killed
# under load); past it the request gets 502, so one that kills every replica it reaches cannot loop.
MAX_RESENDS = 3
# The Retry-After of the activator's 503s (seconds): its queue is full, or the wait ran out.
RETRY_AFTER = b"retry-after: 1\r\n"
# A client connection with no request in flight for this long is closed (nginx's keepalive_timeout).
CLIENT_IDLE_TIMEOUT = 75.0
# A client connection parked for a restart (``Gateway.park_idle_clients``) stops reading for this reason, one
# of our own beside serving.http's Pause flags: nothing here resumes it; the next daemon image reads on.
_PARKED = 1 << 16
# Bounds on how often the one sweep timer checks every client connection for the timeouts above.
_SWEEP_MIN, _SWEEP_MAX = 0.05, 5.0

# Exchange states, read on the hot path as module constants.
_QUEUED, _CONNECTING, _SENT = ExchangeState.QUEUED, ExchangeState.CONNECTING, ExchangeState.SENT
_HEAD_HELD, _STREAMING, _RESPONDED = ExchangeState.HEAD_HELD, ExchangeState.STREAMING, ExchangeState.RESPONDED
_FINISHED, _ABORTED = ExchangeState.FINISHED, ExchangeState.ABORTED
# The meters' clock (the daemon reads them with the same one; uvloop's loop.time() is a cached, coarser clock).
_monotonic = time.monotonic
_JSON = b"application/json"
# RFC 6750: a 401 for a route that requires an API key says how to present one.
_WWW_AUTHENTICATE = b'www-authenticate: Bearer realm="odh-gateway"\r\n'
# Reasons a client connection stops reading (serving.http.Pause), as module constants for the same reason.
_PIPELINE, _UPSTREAM, _PENDING, _REFUSED = Pause.PIPELINE, Pause.UPSTREAM, Pause.PENDING, Pause.REFUSED


# Upper bounds (seconds) of the per-revision latency histogram: Prometheus' client defaults, so dashboards and
# the operate flow's quantiles read it like any other ``_duration_seconds`` histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Latency:
    """One revision's request durations: a count per bucket (not cumulative; the last is +Inf) and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class _Metrics:
    """Plain-dict counters on the hot path; a prometheus Collector renders them on scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.revision_requests: dict[tuple[str, str, int], int] = {}  # (namespace, revision, status)
        self.revision_latency: dict[tuple[str, str], _Latency] = {}  # (namespace, revision): accepted to response end
        self.released = 0  # held requests sent on to a replica that became ready
        self.timeouts = 0  # held requests that waited activator_wait_s and got 503
        self.overflow = 0  # requests that found their revision's queue full and got 503

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

    def collect(self) -> Iterator[Metric]:
        metrics = self._gateway._metrics
        requests = CounterMetricFamily(
            "odh_gateway_requests", "Requests answered by the gateway, by route and status code.",
            labels=["route", "code"])
        for (route, code), value in sorted(metrics.requests.items()):
            requests.add_metric([route, str(code)], value)
        yield requests
        errors = CounterMetricFamily(
            "odh_gateway_upstream_errors", "Upstream failures by route and kind (connect, reset, timeout, "
            "protocol, desync = bytes that answer no request of ours, stale = a reused keep-alive connection "
            "redialled).", labels=["route", "kind"])
        for (route, kind), value in sorted(metrics.upstream_errors.items()):
            errors.add_metric([route, kind], value)
        yield errors
        in_flight = GaugeMetricFamily(
            "odh_gateway_in_flight", "Requests in flight per route.", labels=["route"])
        routes = self._gateway.routes
        for served in routes.routes():
            in_flight.add_metric([served.key], served.in_flight)
        yield in_flight
        yield from self._revisions(routes.targets(), metrics)

    @staticmethod
    def _revisions(targets: list[RouteTarget], metrics: _Metrics) -> Iterator[Metric]:
        """Per revision (what the KPA sees) and the activator's counts."""
        in_flight = GaugeMetricFamily(
            "odh_gateway_revision_in_flight", "Requests for the revision in flight, held by the activator or "
            "proxied (the concurrency its autoscaler measures).", labels=["namespace", "revision"])
        held = GaugeMetricFamily(
            "odh_gateway_activator_held", "Requests the activator holds for the revision until a replica is ready.",
            labels=["namespace", "revision"])
        for target in targets:
            in_flight.add_metric([target.namespace, target.name], target.meter.in_flight)
            held.add_metric([target.namespace, target.name], len(target.held))
        yield in_flight
        yield held
        requests = CounterMetricFamily(
            "odh_gateway_revision_requests", "Requests answered for the revision, by status code.",
            labels=["namespace", "revision", "code"])
        for (namespace, revision, code), value in sorted(metrics.revision_requests.items()):
            requests.add_metric([namespace, revision, str(code)], value)
        yield requests
        latency = HistogramMetricFamily(
            "odh_gateway_revision_request_duration_seconds", "Time from the gateway accepting a request for the "
            "revision (held or proxied) to the end of its response.", labels=["namespace", "revision"])
        for (namespace, revision), observed in sorted(metrics.revision_latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), observed.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([namespace, revision], buckets, observed.total)
        yield latency
        yield CounterMetricFamily("odh_gateway_activator_released", "Held requests sent on to a replica that "
                                  "became ready.", value=metrics.released)
        yield CounterMetricFamily("odh_gateway_activator_timeouts", "Held requests answered 503 after waiting "
                                  f"the activator's limit ({ACTIVATOR_WAIT_ENV}).", value=metrics.timeouts)
        yield CounterMetricFamily("odh_gateway_activator_overflow", "Requests answered 503 because their "
                                  f"revision's queue was full ({ACTIVATOR_QUEUE_ENV}).", value=metrics.overflow)


class Gateway:
    """The gateway server: ``start`` binds the port, ``stop`` closes it and every connection."""

    def __init__(self, routes: RouteTable, *, connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 limits: PlatformLimits | None = None) -> None:
        """``limits`` (default ``PlatformLimits()``): request body and head sizes, head and body timeouts."""
        self.routes = routes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limits = limits if limits is not None else PlatformLimits()
        # Read on the hot path: plain attributes rather than a walk through the dataclass.
        self.max_request_body = self.limits.max_request_body
        self.max_request_head = self.limits.max_request_head
        self.activator_queue = self.limits.activator_queue
        self.activator_wait = self.limits.activator_wait_s
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False  # stop_accepting was called: every response closes its connection
        self._listen_fd = -1
        self._clients: set[_ClientConnection] = set()
        self.pool: ConnectionPool[Endpoint, _UpstreamConnection] = self._new_pool()
        self._dials: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._metrics = _Metrics()
        self.collector = GatewayCollector(self)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.collector)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080, *, sock: socket.socket | None = None) -> int:
        """Bind ``host:port`` (0 = a free port) and serve, or serve on ``sock``, a listening socket inherited
        from the previous daemon image (``stop_accepting``); returns the bound port."""
        self._loop = asyncio.get_running_loop()
        if self.pool.closed:
            self.pool = self._new_pool()
        self.draining = False
        if sock is not None:
            self._server = await self._loop.create_server(lambda: _ClientConnection(self), sock=sock, backlog=1024)
        else:
            self._server = await self._loop.create_server(
                lambda: _ClientConnection(self), host, port, reuse_address=True, backlog=1024)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._listen_fd = self._server.sockets[0].fileno()
        self._sweeper = self._loop.call_later(self._sweep_interval(), self._sweep)
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
        self.pool.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        self._server = None

    def stop_accepting(self) -> socket.socket:
        """For a restart in place: stop accepting and return a duplicate of the listening socket, which keeps
        the port listening (new connections wait in the kernel's backlog for whoever serves it next).

        Client connections are never closed while idle (a client may be sending its next request at that very
        moment, and a POST is not retried: RFC 9112 9.3.1). An idle one (its parser holds no byte of a request)
        is *parked*: the gateway stops reading it, so what the client sends stays in the kernel's socket
        buffer, and ``idle_client_fds`` hands it to the next image, which serves it. The requests in flight
        now, and those whose head comes while draining, are answered with ``Connection: close``; a connection
        that becomes idle after a keep-alive answer is parked too. ``drain`` waits until each is closed or parked.
        """
        assert self._server is not None, "the gateway is not started"
        listener = socket.socket(fileno=os.dup(self._listen_fd))
        self.draining = True
        self._server.close()
        for client in self._clients:
            for exchange in client.queue:
                if exchange.status == 0 and exchange.request is not None:  # it can still say Connection: close
                    exchange.request.keep_alive = False  # (a head still coming sees ``draining``)
        self.park_idle_clients()
        return listener

    def park_idle_clients(self) -> int:
        """While draining: stop reading every idle client connection (see ``stop_accepting``); returns how many
        connections are not parked (still busy) now."""
        busy = 0
        for client in self._clients:
            if not client.park_if_idle():
                busy += 1
        return busy

    async def drain(self, limit_s: float) -> int:
        """After ``stop_accepting``: wait until every client connection is closed or parked (idle, not read),
        for at most ``limit_s`` seconds; returns how many are still busy (the next image gets only the parked)."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + limit_s
        busy = self.park_idle_clients()
        while busy and loop.time() < deadline:
            await asyncio.sleep(0.005)  # polled: a connection becomes idle inside the protocol's callbacks
            busy = self.park_idle_clients()
        return busy

    def idle_client_fds(self) -> list[int]:
        """Duplicates of the descriptors of the parked client connections, for the next image to adopt
        (``adopt_clients``). A duplicate keeps the connection open whatever happens to this image's transport:
        the client sees neither FIN nor RST, and its bytes wait in the kernel's buffer."""
        fds = []
        for client in self._clients:
            if client.parked and not client.closed:
                sock = client.transport.get_extra_info("socket")
                if sock is not None:
                    fds.append(os.dup(sock.fileno()))
        return fds

    async def adopt_clients(self, socks: Iterable[socket.socket]) -> int:
        """Serve client connections parked by the previous daemon image (after ``start``): each is read from
        where that image stopped, so a request sent meanwhile is answered now. Returns how many were adopted."""
        loop = self._loop
        assert loop is not None, "the gateway is not started"
        adopted = 0
        for sock in socks:
            try:
                await loop.connect_accepted_socket(lambda: _ClientConnection(self), sock)
            except (OSError, ValueError) as exc:  # the client went away meanwhile, or not a stream socket
                log.warning("gateway: could not adopt a client connection from the previous image: %s", exc)
                sock.close()
            else:
                adopted += 1
        return adopted

    def _sweep_interval(self) -> float:
        limits = self.limits
        shortest = min(CLIENT_IDLE_TIMEOUT, limits.request_head_timeout, limits.request_body_timeout)
        return min(max(shortest / 4, _SWEEP_MIN), _SWEEP_MAX)

    def _sweep(self) -> None:
        """Enforce the head, body and idle timeouts (one timer for all, instead of one per request)."""
        loop = self._loop
        assert loop is not None
        if self._sweeper is not None:
            self._sweeper.cancel()
        now = loop.time()
        for client in list(self._clients):
            client.check_timeouts(now)
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def url_for(self, namespace: str, name: str, tag: str | None = None) -> str:
        """The gateway URL of ``namespace/name``, or of its revision tagged ``tag`` (the ``{tag}-{name}`` route)."""
        route = f"{tag}-{name}" if tag else name
        return f"http://{self.host}:{self.port}/serving/{namespace}/{route}"

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

    @staticmethod
    def _new_pool() -> ConnectionPool[Endpoint, _UpstreamConnection]:
        return ConnectionPool(max_idle=POOL_SIZE, keepalive_expiry=POOL_KEEPALIVE_EXPIRY)

    def _put_idle(self, conn: _UpstreamConnection, reusable: bool) -> None:
        """The exchange on ``conn`` is over: keep the connection for the next request to its endpoint when
        it is reusable (in step, kept alive, the whole request went up) and the gateway still runs."""
        conn.exchange = None
        if self.pool.put(conn.endpoint, conn, reusable and self._server is not None) and conn.flow.reasons:
            conn.resume()

    def _dial(self, exchange: _Exchange, endpoint: Endpoint) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._open(exchange, endpoint))
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
        except (OSError, TimeoutError) as exc:
            exchange.connect_failed(endpoint, exc)
            return
        if exchange.state >= _FINISHED:
            self._put_idle(conn, True)  # nothing was sent on it
        elif conn.closed:  # the replica hung up (or spoke first) before we sent a byte
            exchange.connect_failed(endpoint, ConnectionResetError("connection closed as it opened"))
        else:
            exchange.bind(conn, reused=False)


class _ResponseProgress(IntEnum):
    """How far an upstream connection has read the response of the exchange bound to it (reset per request)."""

    WAITING = 0  # no byte yet: a reset now means the replica never answered, so the request may go again
    HEAD = 1  # a head is being read (an interim 1xx response's included)
    BODY = 2  # the final head is in; body bytes (then trailers, which are not forwarded) follow
    DONE = 3  # the response is complete; acted on once the whole read is parsed
    DONE_AT_HEAD = 4  # a HEAD request's response, complete at its headers (llhttp would wait for a body)


_WAITING, _IN_HEAD, _IN_BODY, _DONE, _DONE_AT_HEAD = _ResponseProgress


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a replica; parses the responses of the exchange bound to it.

    Exactly one response per request: the response's end is acted on only after the whole read has
    been parsed, so bytes after it (a second response, anything) mark the connection as out of step
    and close it instead of pooling it, or handing them to the next request.
    """

    __slots__ = ("_headers", "_reason", "closed", "endpoint", "exchange", "flow", "gateway", "keep", "parser",
                 "progress", "transport")

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.transport = UNCONNECTED
        self.flow = FlowControl(UNCONNECTED)  # reading pauses while the client cannot take more
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.progress = _WAITING
        self.keep = False  # the replica keeps the connection open after the response (read when it is done)
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def bind(self, exchange: _Exchange) -> None:
        """Carry ``exchange``'s request and read its response."""
        self.exchange = exchange
        self.progress = _WAITING

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = stream_transport(transport)

    @property
    def read_paused(self) -> bool:
        return self.flow.read_paused

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # a replica must not talk on an idle connection
            if not self.closed:
                self.gateway._metrics.upstream_error("-", "desync")
            self.close()
            return
        if self.progress is _WAITING:
            self.progress = _IN_HEAD
        exchange.upstream.last_io = exchange.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.progress < _DONE:
                if self.exchange is exchange:
                    exchange.upstream_failed("protocol", exc)
                self.close()
                return
            # The response was whole; what came after it answers nothing we sent.
            self.gateway._metrics.upstream_error(exchange.route, "desync")
            self.keep = False
        progress = self.progress
        if progress >= _DONE:
            self.progress = _IN_BODY  # handled: whatever the connection reads next answers no request
            if progress is _DONE_AT_HEAD:
                self.parser = httptools.HttpResponseParser(self)
            if self.exchange is exchange:
                exchange.response_complete(reusable=self.keep)
            else:
                self.close()
        else:
            exchange.flush_response()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.close()
        exchange = self.exchange
        if exchange is None:
            self.gateway.pool.forget(self.endpoint, self)
            return
        self.exchange = None
        if self.progress >= _IN_BODY and exchange.relay.until_close:
            exchange.response_complete(reusable=False)  # a close-delimited body ends here
        else:
            exchange.upstream_failed("reset", exc)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause(_UPSTREAM)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume(_UPSTREAM)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.progress >= _DONE:
            raise OutOfStep("a second response")
        self._headers = []
        self.progress = _IN_HEAD

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.progress is _IN_HEAD:  # later calls are trailers, which are not forwarded
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        status = self.parser.get_status_code()
        if status < 200 or exchange is None:
            return  # interim (1xx) responses are not forwarded: the gateway answers Expect itself
        self.progress = _IN_BODY
        exchange.response_head(status, self._reason, self._headers)
        request = exchange.request
        assert request is not None  # a request is bound only once its head is in
        if request.method == b"HEAD":
            self.progress = _DONE_AT_HEAD
            self.keep = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.progress >= _DONE:
            raise OutOfStep("body bytes after the response to a HEAD request")
        exchange = self.exchange
        if exchange is not None:
            exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.progress is not _IN_BODY:  # an interim response, or a HEAD response done at its headers
            return
        self.progress = _DONE
        self.keep = self.parser.should_keep_alive()

    # used by exchanges and the pool

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause(self) -> None:
        self.flow.pause_reading(Pause.READER)

    def resume(self) -> None:
        self.flow.resume_reading(Pause.READER)

    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.flow.close()
            if self.transport is not UNCONNECTED:
                self.transport.close()


class _RequestHead:
    """A request's head as parsed, built once when it completes: what the client asked for, how its body is
    framed, and (once routed) the head the gateway sends upstream in its place."""

    __slots__ = ("chunked", "content_length", "forward", "has_host", "http10", "keep_alive", "method", "url")

    def __init__(self, method: bytes, url: bytes, http10: bool, keep_alive: bool) -> None:
        self.method = method
        self.url = url
        self.http10 = http10
        self.keep_alive = keep_alive  # the client's wish, cleared when the gateway drains (``stop_accepting``)
        self.chunked = False  # Transfer-Encoding: chunked; else the body is content_length bytes (maybe none)
        self.content_length = 0
        self.has_host = True  # a request without Host gets the endpoint's, written per attempt
        # Request line and headers as forwarded, without the blank line that ends them (and the Host line
        # when has_host is False): framed by what we parsed, never by the client's text.
        self.forward = b""

    @staticmethod
    def unparsed() -> _RequestHead:
        """The head of an answer to bytes that never made a request (a refusal)."""
        return _RequestHead(b"GET", b"", False, True)


class _RequestBody(IntEnum):
    """How far the client has sent the request body."""

    AWAITING_CONTINUE = 0  # the client waits for our 100 Continue (Expect: 100-continue) before sending it
    ARRIVING = 1  # being read, or not begun (a request without a body stays here until its end is parsed)
    READ = 2  # the parser has seen the request's end


_AWAITING_CONTINUE, _ARRIVING, _READ = _RequestBody


class _BodyRelay:
    """How a response body goes from the replica to the client, decided at the response head (four values)."""

    __slots__ = ("chunk", "until_close")

    def __init__(self, chunk: bool, until_close: bool) -> None:
        self.chunk = chunk  # re-chunked toward an HTTP/1.1 client (the length is not known up front)
        self.until_close = until_close  # the replica's body ends when it closes the connection


# Sized or no body; or chunked from the replica, decoded for an HTTP/1.0 client that reads until we close.
_AS_SENT = _BodyRelay(chunk=False, until_close=False)
_RECHUNKED = _BodyRelay(chunk=True, until_close=False)  # chunked from the replica, chunked again (events stay events)
_CLOSE_TO_CHUNKED = _BodyRelay(chunk=True, until_close=True)  # close-delimited from the replica, chunked out
_UNTIL_CLOSE = _BodyRelay(chunk=False, until_close=True)  # close-delimited both ways (an HTTP/1.0 client)


class _UpstreamAttempt:
    """Where the request goes: the current try's endpoint and connection, and what the tries before it left
    (the endpoints tried, the resends), so a failure decides between redial, next replica, hold and 502."""

    __slots__ = ("conn", "endpoint", "last_io", "resends", "reused", "tried")

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None  # picked from the revision (released when the exchange ends)
        self.conn: _UpstreamConnection | None = None  # the connection the request is on
        self.reused = False  # conn came from the pool: a reset before any response byte means it was stale
        self.tried: list[Endpoint] | None = None  # endpoints that failed this request (None: none yet)
        self.resends = 0  # times sent again after a replica reset it before answering
        self.last_io = 0.0  # loop time of the last byte either way (the lazy read timeout runs from it)


class _Exchange:
    """One request and its response: routing, the upstream attempt(s), framing both ways.

    Its progress is one ``ExchangeState`` (see ``serving.http.exchange``); what it carries is grouped: the
    request head as parsed (``request``), how far its body has come (``body``), where it went upstream
    (``upstream``) and how the response body is relayed (``relay``). The activator (Knative's, inside the
    gateway) acts at two points: ``no_ready_replica`` (the revision has no endpoint to pick) and
    ``replica_gone`` (every endpoint went away before any response byte while the request can still be
    sent whole; the body stays in ``replay`` while it is under ``REPLAY_LIMIT``). There the exchange is
    held in its revision's queue (``RouteTarget.held``) until the route table gives the revision
    endpoints (``wake``), the revision goes (``drop``), or the wait or queue bound says 503. It stays in
    the state it had (QUEUED, CONNECTING or SENT): ``held_on`` says it is held.
    """

    __slots__ = (
        "accepted", "body", "body_size", "client", "close_after", "gateway", "held_at", "held_on", "local", "loop",
        "meter", "out", "pending", "pending_size", "relay", "replay", "request", "route", "routed", "state", "status",
        "target", "timer", "upstream",
    )

    def __init__(self, client: _ClientConnection) -> None:
        self.client = client
        self.gateway = client.gateway
        self.loop = client.loop
        self.state = _QUEUED
        self.request: _RequestHead | None = None  # set when the head is complete
        self.body = _ARRIVING
        self.body_size = 0  # request body bytes the client parser has handed over
        self.routed: Route | None = None  # what resolve found: the InferenceService's (or a tag's) route
        self.route = "-"
        self.target: RouteTarget | None = None  # the revision chosen for this request
        self.meter: ConcurrencyMeter | None = None  # the revision's, once the request counts for it
        self.accepted = 0.0  # when it began to count for its revision (the latency histogram's start)
        self.held_on: RouteTarget | None = None  # the revision whose queue holds this request now
        self.held_at = 0.0  # loop time it was first held (the wait bound runs from there, across re-holds)
        self.local: tuple[int, bytes, bytes] | None = None  # the gateway's own answer: status, body, content type
        self.pending: list[bytes] = []  # upstream-bound bytes not written yet
        self.pending_size = 0
        self.replay = ReplayBuffer(REPLAY_LIMIT)  # the body so far, while it can still be sent again
        self.upstream = _UpstreamAttempt()
        self.status = 0
        self.relay = _AS_SENT
        self.out: list[bytes] = []  # client-bound bytes not written yet
        self.close_after = False  # the gateway ends the client connection after this exchange
        self.timer: asyncio.TimerHandle | None = None  # the read timeout, or the activator's wait bound

    def _to(self, state: ExchangeState) -> None:
        if not ALLOWED_MASKS[self.state] >> state & 1:  # check_transition, inlined: this runs ~5 times per request
            check_transition(self.state, state)  # raises, naming both states
        self.state = state

    # -- the request ----------------------------------------------------------------------------

    def refuse(self, status: int, message: bytes) -> None:
        """Answer ``status`` instead of forwarding, then close: nothing after this request is trusted."""
        self.local = (status, b'{"error":"%s"}' % message, _JSON)
        self.close_after = True

    def prepare(self, head: _RequestHead, headers: list[tuple[bytes, bytes]], peer: bytes, version: str,
                upgrade: bool) -> None:
        """Headers are in: check the framing, route the request and build the upstream request head.

        The upstream head carries the gateway's own framing and Host lines, so nothing the client
        writes (a Connection header naming them, say) can make it disagree with the body we send.
        """
        framing = RequestFraming()
        forwarded_for: bytes | None = None
        forwarded_host = forwarded_proto = expect = False
        kept: list[bytes] = []
        try:
            for name, value in headers:
                lname = name.lower()
                if lname in CONSUMED:
                    framing.field(lname, value)  # written by us below, or hop-by-hop
                    continue
                if lname == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                    continue
                elif lname == b"x-forwarded-host":
                    forwarded_host = True
                elif lname == b"x-forwarded-proto":
                    forwarded_proto = True
                elif lname == b"expect":
                    expect = value.lower() == b"100-continue"
                    continue
                elif b"_" in lname:
                    check_lookalike(name, lname)
                kept += (name, b": ", value, b"\r\n")
            framing.check(version, upgrade)
        except FramingError as refusal:
            self.refuse(400, _json_escape(refusal.message))
            return
        if expect:
            self.body = _AWAITING_CONTINUE
        head.chunked = framing.chunked
        content_length = head.content_length = framing.content_length
        if content_length > self.gateway.max_request_body:
            self.refuse(413, b"request body of %d bytes is over the limit of %d (%s)" % (
                content_length, self.gateway.max_request_body, MAX_REQUEST_BODY_ENV.encode()))
            return
        url = head.url
        if url == b"/healthz" and head.method in (b"GET", b"HEAD"):
            self.local = (200, b'{"status":"ok"}', _JSON)
            return
        if url == b"/metrics" and head.method in (b"GET", b"HEAD"):
            self.local = (200, self.gateway.metrics_text(), b"text/plain; version=0.0.4; charset=utf-8")
            return
        if framing.tokens:
            names = named_fields(framing.tokens)
            if names:
                kept = drop_named(kept, names)
        host = framing.host
        route, path = self.gateway.routes.resolve(url.decode("latin-1"), host.decode("latin-1") if host else None)
        if route is None:
            self.local = (404, b'{"error":"no InferenceService routes %s"}' % _json_escape(url), _JSON)
            return
        self.routed = route
        self.route = route.key
        if route.auth is not None:  # the only cost on a route without keys: this test
            refused = route.auth.refusal(route.namespace, headers)
            if refused is not None:  # answered here, counted under the route; the key is never logged
                self.local = (refused[0], b'{"error":"%s"}' % _json_escape(refused[1]), _JSON)
                return
        kept += (b"X-Forwarded-For: ", forwarded_for + b", " + peer if forwarded_for else peer, b"\r\n")
        if host is not None:
            kept += (b"Host: ", host, b"\r\n")
            if not forwarded_host:
                kept += (b"X-Forwarded-Host: ", host, b"\r\n")
        if not forwarded_proto:
            kept.append(b"X-Forwarded-Proto: http\r\n")
        if head.chunked:
            kept.append(b"Transfer-Encoding: chunked\r\n")
        elif framing.sized:
            kept.append(b"Content-Length: %d\r\n" % content_length)
        head.has_host = host is not None
        head.forward = b"%s %s HTTP/1.1\r\n%s" % (head.method, path.encode("latin-1"), b"".join(kept))

    def start(self) -> None:
        """This exchange is first in line on its client connection: answer it or send it upstream."""
        if self.local is not None:
            status, body, content_type = self.local
            self.respond_local(status, body, _WWW_AUTHENTICATE if status == 401 else b"", content_type=content_type)
            return
        route = self.routed
        assert route is not None
        if not route.installed:  # resolved before a new split or a removal (a pipelined request): follow it
            route = self.routed = self.gateway.routes.route(route.namespace, route.name) or route
        target = route.choose()  # the revision, by the route's traffic split
        if target is None:
            self.fail(503, b"InferenceService %s sends no traffic to any revision" % route.key.encode())
            return
        self.target = target
        # Counted from here until the response ends, held or proxied: the concurrency the KPA scales on.
        meter = self.meter = target.meter
        meter.started(now := _monotonic())
        self.accepted = now
        endpoint = target.pick()
        if endpoint is None:
            self.no_ready_replica()
            return
        self.go(endpoint)

    def go(self, endpoint: Endpoint) -> None:
        """Send the request to ``endpoint``; the caller flushes right after (the head leaves with the body)."""
        if self.body is _AWAITING_CONTINUE:
            # Answer Expect here (it is not forwarded): the body streams on as soon as it comes.
            self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.body = _ARRIVING
        self.connect(endpoint, defer=True)

    def no_ready_replica(self) -> None:
        """The revision has no endpoint to pick (none ready, or every one tried): hold the request for it
        (the activator), or 503 when the revision may not be waited for (failed, or routed with ``set``)."""
        target = self.target
        assert target is not None
        if target.hold and not target.dropped:
            self.hold(target)
        else:
            self.fail(503, b"InferenceService %s has no ready replica" % target.key.encode())

    # -- the activator --------------------------------------------------------------------------

    def hold(self, target: RouteTarget) -> None:
        """Wait in ``target``'s queue for a ready replica (and ask the daemon for one), or 503 with
        Retry-After when the queue is full or this request has waited its limit already."""
        gateway = self.gateway
        now = self.loop.time()
        if not self.held_at:
            self.held_at = now
        left = self.held_at + gateway.activator_wait - now
        if left <= 0:
            self.wait_expired()
            return
        if not target.enqueue(self, gateway.activator_queue):
            gateway._metrics.overflow += 1
            self.unavailable(b"revision %s has no ready replica and %d requests wait for one already (%s)" % (
                target.key.encode(), gateway.activator_queue, ACTIVATOR_QUEUE_ENV.encode()))
            return
        self.held_on = target
        if self.timer is not None:  # a read timeout armed for a send that failed
            self.timer.cancel()
        self.timer = self.loop.call_later(left, self.wait_expired)
        try:
            gateway.routes.activate(target)
        except Exception:  # the daemon's hook failing must not lose the request: it still waits
            log.exception("gateway: on_activate(%s) failed", target.key)

    def wake(self) -> None:
        """The route table gave the revision endpoints (``Waiter``): try them, on the next loop turn."""
        self.loop.call_soon(self._released)

    def drop(self) -> None:
        """The revision is gone or failed while this request waited for it (``Waiter``): 503."""
        self.loop.call_soon(self._dropped)

    def _unhold(self) -> None:
        held_on = self.held_on
        if held_on is not None:
            held_on.dequeue(self)
            self.held_on = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _released(self) -> None:
        if self.state >= _FINISHED or self.held_on is None:
            return
        self._unhold()
        target = self.target
        assert target is not None
        self.upstream.tried = None  # a fresh chance on every endpoint, the restarted ones included
        endpoint = target.pick()
        if endpoint is None:  # gone again already
            self.no_ready_replica()
            return
        self.gateway._metrics.released += 1
        self.go(endpoint)
        self.flush_request()

    def _dropped(self) -> None:
        if self.state >= _FINISHED or self.held_on is None:
            return
        target = self.held_on
        self._unhold()
        self.unavailable(b"revision %s %s while this request waited for a replica" % (
            target.key.encode(), b"was removed" if target.dropped else b"failed"))

    def wait_expired(self) -> None:
        self.timer = None
        if self.state >= _FINISHED:
            return
        self._unhold()
        target = self.target
        assert target is not None
        self.gateway._metrics.timeouts += 1
        self.unavailable(b"revision %s had no ready replica within %gs (%s)" % (
            target.key.encode(), self.gateway.activator_wait, ACTIVATOR_WAIT_ENV.encode()))

    def unavailable(self, message: bytes) -> None:
        """The activator's 503: the client may try again shortly."""
        self.out.clear()
        self.fail(503, message, RETRY_AFTER)

    def connect(self, endpoint: Endpoint, fresh: bool = False, defer: bool = False) -> None:
        """Use an idle pooled connection to ``endpoint`` (unless ``fresh``), else open one.

        ``defer``: the caller flushes right after, so the head leaves in one write with the body so far.
        """
        self._to(_CONNECTING)
        self.upstream.endpoint = endpoint
        conn = None if fresh else self.gateway.pool.take(endpoint)
        if conn is not None:
            self.bind(conn, reused=True, defer=defer)
        else:
            self.gateway._dial(self, endpoint)

    def bind(self, conn: _UpstreamConnection, reused: bool, defer: bool = False) -> None:
        """Send the request (head and whatever body has arrived) on ``conn``; ``defer`` leaves it to flush."""
        self._to(_SENT)
        upstream = self.upstream
        upstream.conn = conn
        upstream.reused = reused
        conn.bind(self)
        request = self.request
        assert request is not None
        head = request.forward + (b"\r\n" if request.has_host else b"Host: %s\r\n\r\n" % str(upstream.endpoint).encode())
        if defer:
            self.pending.insert(0, head)
            self.pending_size += len(head)
            self.client.resume(_PENDING)
        elif self.pending:
            conn.write(head + b"".join(self.pending))
            self.pending.clear()
            self.pending_size = 0
            self.client.resume(_PENDING)
        else:
            conn.write(head)
        if self.client.flow.write_paused:
            conn.pause()
        upstream.last_io = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.gateway.read_timeout, self._check_timeout)

    def request_body(self, data: bytes) -> None:
        size = self.body_size + len(data)
        self.body_size = size
        if size > self.gateway.max_request_body:  # only a chunked body gets here: Content-Length is checked first
            message = b"request body over the limit of %d bytes (%s)" % (
                self.gateway.max_request_body, MAX_REQUEST_BODY_ENV.encode())
            self.client.refuse(413, message)
            raise RequestRefused(413, message.decode())
        if self.local is not None or self.state >= _FINISHED:
            return  # answered already: the rest of the body is read and dropped
        request = self.request
        assert request is not None
        piece = chunk(data) if request.chunked else data
        self.pending.append(piece)
        self.pending_size += len(piece)
        self.replay.add(piece)
        if self.upstream.conn is None and self.pending_size > PENDING_LIMIT:
            self.client.pause(_PENDING)

    def request_complete(self) -> None:
        self.body = _READ
        request = self.request
        assert request is not None
        if not request.chunked and self.body_size != request.content_length:
            # llhttp ended the body elsewhere than the Content-Length we sent up said: out of step.
            message = b"request body of %d bytes does not match its Content-Length %d" % (
                self.body_size, request.content_length)
            self.client.refuse(400, message)
            raise RequestRefused(400, message.decode())
        if self.local is None and request.chunked:
            self.pending.append(LAST_CHUNK)
            self.replay.add(LAST_CHUNK)
        if self.state == _RESPONDED:
            self.finish()  # a local answer waited for its body to be read and dropped

    def flush_request(self) -> None:
        pending = self.pending
        if pending:
            upstream = self.upstream
            conn = upstream.conn
            if conn is not None:
                conn.write(pending[0] if len(pending) == 1 else b"".join(pending))
                pending.clear()
                self.pending_size = 0
                upstream.last_io = self.loop.time()

    # -- the response ---------------------------------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.replay.drop()  # a response has begun: never resend this request
        content_length = -1
        chunked = coded = False
        tokens: tuple[bytes, ...] = ()
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    coded = True
                    chunked = last_coding_is_chunked(value)
                elif lname == b"connection":
                    tokens += connection_tokens(value)
                continue
            if lname == b"content-length":
                content_length = int(value)
                continue  # written by us below: a Connection token cannot remove it
            parts += (name, b": ", value, b"\r\n")
        if tokens:
            names = named_fields(tokens)
            if names:
                parts = parts[:1] + drop_named(parts[1:], names)
        if coded:
            content_length = -1  # Transfer-Encoding overrides Content-Length (RFC 9112 6.3)
        elif content_length >= 0:
            parts.append(b"Content-Length: %d\r\n" % content_length)
        request = self.request
        assert request is not None
        http10 = request.http10
        no_body = status in (204, 304) or request.method == b"HEAD"
        if not no_body and (chunked or content_length < 0):
            # Re-frame: chunked for HTTP/1.1 clients (events stay events), close-delimited for 1.0.
            if http10:
                self.close_after = True
                self.relay = _AS_SENT if chunked else _UNTIL_CLOSE
            else:
                self.relay = _RECHUNKED if chunked else _CLOSE_TO_CHUNKED
                parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.close_after or not request.keep_alive:
            parts.append(b"Connection: close\r\n\r\n")
        elif http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))
        # Servers such as uvicorn write the head and a sized body separately; holding the head until the
        # body's first bytes saves a send (and a client wake-up) per request. Streams are not held.
        self._to(_HEAD_HELD if content_length > 0 and not chunked and not no_body else _STREAMING)

    def response_body(self, data: bytes) -> None:
        if self.state == _HEAD_HELD:
            self.state = _STREAMING
        self.out.append(chunk(data) if self.relay.chunk else data)

    def flush_response(self) -> None:
        out = self.out
        if out and self.state != _HEAD_HELD:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def response_complete(self, reusable: bool) -> None:
        self._to(_RESPONDED)
        if self.relay.chunk:
            self.out.append(LAST_CHUNK)
        self.flush_response()
        upstream = self.upstream
        conn = upstream.conn
        if conn is not None:
            upstream.conn = None
            # An answer before the whole request went up: the replica may read the rest of the body as a
            # request of its own, so the connection is never reused. The client's remaining body is read
            # and dropped.
            self.gateway._put_idle(conn, reusable and self.body is _READ and not self.pending)
        self.finish()

    def respond_local(self, status: int, body: bytes, extra: bytes = b"", content_type: bytes = _JSON) -> None:
        """The gateway's own answer (404, 502, 503, 504, /healthz); ``extra``: more header lines."""
        self.status = status
        request = self.request
        assert request is not None
        if self.body is not _READ and (request.chunked or self.body is _AWAITING_CONTINUE
                                       or request.content_length > REPLAY_LIMIT):
            self.close_after = True  # rather than read a big body only to drop it; small ones are drained
        connection = b"close" if (self.close_after or not request.keep_alive) else b"keep-alive"
        self.client.write(status_line(status) + b"content-type: %s\r\ncontent-length: %d\r\nconnection: %s\r\n%s\r\n%s"
                          % (content_type, len(body), connection, extra, body))
        self._to(_RESPONDED)
        if self.body is _READ or self.close_after:
            self.finish()

    # -- failures -------------------------------------------------------------------------------

    def replica_gone(self, endpoint: Endpoint, exc: BaseException, *, stale: bool, sent: bool = False) -> None:
        """``endpoint`` went away before any response byte and the request can be sent again whole: the
        connect failed (nothing was sent), a pooled connection was ``stale`` (the replica closed it as we
        reused it, so it never saw the request), or the replica reset a fresh connection it had been
        ``sent`` the request on (killed under load); ``replay`` still holds the body. A stale connection
        is redialled once, fresh (the pool's other ones may be just as dead); otherwise the next replica is
        tried, and when none is left the activator holds the request until one is ready (502 for a
        revision that may not be waited for, or after ``MAX_RESENDS`` resets)."""
        target = self.target
        assert target is not None
        if stale:
            self.gateway._metrics.upstream_error(self.route, "stale")
            self.pending = self.replay.replay()
            self.pending_size = self.replay.size
            self.connect(endpoint, fresh=True)
            return
        log.debug("gateway: %s %s: %r", "reset by" if sent else "connect to", endpoint, exc)
        self.gateway._metrics.upstream_error(self.route, "reset" if sent else "connect")
        target.release(endpoint)
        upstream = self.upstream
        if upstream.tried is None:
            upstream.tried = []
        upstream.tried.append(endpoint)
        upstream.endpoint = None
        if sent:
            upstream.resends += 1
            self.pending = self.replay.replay()
            self.pending_size = self.replay.size
        following = target.pick(upstream.tried)
        if following is not None:
            self.connect(following)
        elif target.hold and not target.dropped and upstream.resends <= MAX_RESENDS:
            self.hold(target)
        elif sent:
            self.fail(502, b"upstream reset: %s" % _json_escape(str(exc) or "connection closed"))
        else:
            self.fail(502, b"upstream connect failed: %s" % _json_escape(str(exc) or type(exc).__name__))

    def connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        """Opening a connection failed: nothing was sent."""
        if self.state >= _FINISHED:
            return
        self.replica_gone(endpoint, exc, stale=False)

    def upstream_failed(self, kind: str, exc: BaseException | None) -> None:
        """The bound upstream connection broke (or timed out) before the response completed."""
        upstream = self.upstream
        conn = upstream.conn
        if conn is None:
            return
        upstream.conn = None
        conn.close()
        if self.state >= _FINISHED:
            return
        if kind == "reset" and conn.progress is _WAITING and self.replay.replayable:
            # Before any response byte, with the body still kept: the replica never answered, so the request
            # goes again (a reused connection the replica had closed, or a replica that went away).
            assert upstream.endpoint is not None
            self.replica_gone(upstream.endpoint, exc or ConnectionResetError("connection closed"),
                              stale=upstream.reused, sent=not upstream.reused)
            return
        self.gateway._metrics.upstream_error(self.route, kind)
        if self.state >= _STREAMING:
            self.client.close()  # mid-response: closing is the only way to say the body is truncated
            self.finish()
            return
        self.out.clear()  # a held head never reached the client: it gets a clean error instead
        if kind == "timeout":
            self.fail(504, b"upstream timed out after %gs" % self.gateway.read_timeout)
        else:
            self.fail(502, b"upstream %s: %s" % (kind.encode(), _json_escape(str(exc) if exc else "connection closed")))

    def fail(self, status: int, message: bytes, extra: bytes = b"") -> None:
        self.pending.clear()
        self.local = (status, b"", _JSON)
        self.respond_local(status, b'{"error":"%s"}' % message, extra)

    def cut(self, status: int, message: bytes) -> None:
        """Stop this request where it is (bad, too much or too slow body): the upstream connection, with
        part of a request on it, is closed; the client gets ``status`` when no answer has started, else
        its connection closes (the only way left to say the exchange is broken)."""
        self.close_after = True
        self.replay.drop()
        self._drop_upstream()
        if self.state >= _STREAMING:
            self.client.close()
            self.finish()
            return
        self.out.clear()  # a held head never reached the client
        self.fail(status, message)

    def _drop_upstream(self) -> None:
        """Close the upstream connection, which carries part of this exchange and cannot be reused."""
        upstream = self.upstream
        conn = upstream.conn
        if conn is not None:
            upstream.conn = None
            conn.close()

    def _check_timeout(self) -> None:
        """Lazy read timeout: one timer per exchange, re-armed by whatever time is left."""
        self.timer = None
        if self.state >= _FINISHED:
            return
        left = self.upstream.last_io + self.gateway.read_timeout - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check_timeout)
        else:
            self.upstream_failed("timeout", None)

    def abort(self) -> None:
        """The client went away: drop the upstream side (a half-read response cannot be reused)."""
        if self.state >= _FINISHED:
            return
        self._drop_upstream()
        if self.state < _RESPONDED:
            self.status = 499  # nginx's "client closed request"
        self.finish(_ABORTED)

    def finish(self, state: ExchangeState = _FINISHED) -> None:
        """Count the exchange, release its endpoint and, unless aborted, let the next one in line go."""
        if self.state >= _FINISHED:
            return
        self._to(state)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held_on is not None:  # the client went away while held
            self.held_on.dequeue(self)
            self.held_on = None
        self.client.resume(_UPSTREAM | _PENDING)
        target = self.target
        upstream = self.upstream
        if upstream.endpoint is not None and target is not None:
            target.release(upstream.endpoint)
            upstream.endpoint = None
        metrics = self.gateway._metrics
        metrics.request(self.route, self.status)
        meter = self.meter
        if meter is not None:
            assert target is not None
            meter.finished(now := _monotonic())
            key = (target.namespace, target.name, self.status)
            counts = metrics.revision_requests
            counts[key] = counts.get(key, 0) + 1
            revision = (target.namespace, target.name)
            latency = metrics.revision_latency.get(revision)
            if latency is None:
                latency = metrics.revision_latency[revision] = _Latency()
            latency.observe(now - self.accepted)
        if state is _FINISHED:
            self.client.exchange_finished(self)


class _HeadReading:
    """The request head a client connection is reading: one per connection, begun again for every request."""

    __slots__ = ("fed", "headers", "open", "size", "started", "url")

    def __init__(self) -> None:
        self.open = False  # the current request's head has begun and is not complete
        self.started = 0.0  # when its first byte came (or reading last resumed)
        self.fed = 0  # bytes of whole reads that went into the open head (a lower bound on its size)
        self.size = 0  # header names and values parsed so far
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def begin(self, now: float) -> None:
        self.open = True
        self.started = now
        self.fed = self.size = 0
        self.url = b""
        self.headers = []


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time, in order (pipelining-safe)."""

    __slots__ = ("closed", "current", "eof", "flow", "gateway", "head", "last_active", "loop", "parked", "parser", "peer",
                 "queue", "refused", "transport")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        loop = gateway._loop
        assert loop is not None  # connections exist only while the gateway is started
        self.loop = loop
        self.transport = UNCONNECTED
        self.flow = FlowControl(UNCONNECTED)  # why reading is paused (Pause.*), and the write side
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.current: _Exchange | None = None  # the request being parsed
        self.queue: deque[_Exchange] = deque()  # requests not finished yet; the first one is active
        self.closed = False
        self.eof = False
        self.last_active = self.loop.time()  # the last read
        self.head = _HeadReading()
        self.refused = False  # a request was refused: this connection reads no more
        self.parked = False  # idle while the gateway drains for a restart: not read, handed to the next image

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = stream_transport(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.gateway._clients.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.refused:
            return
        reading = self.head
        head = self.current if reading.open else None  # a head this read continues
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                # Upgrade/CONNECT are not proxied: Upgrade is hop-by-hop and stripped, so the request was
                # sent as plain HTTP; parse on after it.
                offset = upgrade.args[0] if upgrade.args else len(data)
                data = data[offset:]
                if data and not self.closed and not self.refused:
                    continue
            except httptools.HttpParserError as exc:
                self._parse_error(exc)
            break
        if reading.open and not self.refused and self.current is head:  # the whole read went into the open head
            reading.fed += len(data)
            if reading.fed > self.gateway.max_request_head:
                # Refused before it is complete: httptools would keep growing the header it holds.
                self.refuse(431, self._head_too_large())
        queue = self.queue
        if queue:
            for exchange in queue:
                exchange.flush_request()

    def eof_received(self) -> bool | None:
        # A half-closed client may still wait for its answer: keep the exchange running when one is. One the
        # activator holds is let go instead (as Knative's activator does when its client hangs up).
        if self.queue and self.current is None and self.queue[0].held_on is None:
            self.eof = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.close()
        self.gateway._clients.discard(self)
        queue = self.queue
        while queue:
            queue.popleft().abort()
        self.current = None

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        conn = self.queue[0].upstream.conn if self.queue else None
        if conn is not None:
            conn.pause()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        conn = self.queue[0].upstream.conn if self.queue else None
        if conn is not None:
            conn.resume()

    # httptools callbacks

    def on_message_begin(self) -> None:
        exchange = _Exchange(self)
        self.current = exchange
        self.queue.append(exchange)
        self.head.begin(self.last_active)
        if len(self.queue) > 1:
            self.pause(_PIPELINE)

    def on_url(self, url: bytes) -> None:
        reading = self.head
        reading.url = reading.url + url if reading.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        reading = self.head
        reading.headers.append((name, value))
        reading.size += len(name) + len(value)

    def on_headers_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        reading = self.head
        reading.open = False
        parser = self.parser
        version = parser.get_http_version()
        url, headers = reading.url, reading.headers
        head = exchange.request = _RequestHead(parser.get_method(), url, version == "1.0",
                                               parser.should_keep_alive() and not self.gateway.draining)
        # Request line and header lines, counted as sent: name, ": ", value, CRLF.
        if reading.size + len(url) + 4 * len(headers) + 14 > self.gateway.max_request_head:
            exchange.refuse(431, self._head_too_large())
        else:
            exchange.prepare(head, headers, self.peer, version, parser.should_upgrade())
        if self.queue[0] is exchange:
            exchange.start()
        if exchange.close_after and exchange.local is not None:  # refused: read nothing after it
            self._stop_reading()
            status, body, _ = exchange.local
            raise RequestRefused(status, body.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        assert exchange is not None
        exchange.request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.current
        if exchange is not None:
            exchange.request_complete()
        self.current = None

    # used by exchanges

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def exchange_finished(self, exchange: _Exchange) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        self.last_active = self.loop.time()
        if self.closed:
            return
        if exchange.close_after or not _keeps_alive(exchange) or (self.eof and not queue):
            self.close()
            return
        if queue:
            following = queue[0]
            if len(queue) == 1:
                self.resume(_PIPELINE)
            if following.request is not None:  # its headers are in
                following.start()
                following.flush_request()

    def pause(self, reason: int) -> None:
        """Stop reading for ``reason`` (a ``Pause`` flag)."""
        self.flow.pause_reading(reason)

    def resume(self, reason: int) -> None:
        """Lift ``reason``; reading resumes when no other reason holds it."""
        if self.flow.reasons & reason and self.flow.resume_reading(reason):
            # Time we did not read is not the client's: its head and body timeouts start over.
            self.last_active = self.head.started = self.loop.time()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flow.close()
            self.transport.close()  # flushes what is buffered first

    def park_if_idle(self) -> bool:
        """Stop reading this connection for good if no request is in it (the parser holds no byte of one):
        what the client sends next stays in the kernel's buffer for the next daemon image. True when parked."""
        if not self.parked and not self.closed and not self.queue and self.current is None and not self.head.open \
                and not self.refused and not self.eof:
            self.parked = True
            self.pause(_PARKED)
        return self.parked

    # refusals and timeouts

    def check_timeouts(self, now: float) -> None:
        """The sweep's visit: a head or body that takes too long gets 408; an idle connection closes."""
        if self.closed or self.flow.read_paused:  # not reading: the wait is ours, not the client's
            return
        limits = self.gateway.limits
        if self.head.open:
            if now - self.head.started > limits.request_head_timeout:
                self.refuse(408, b"request head not complete within %gs of its first byte" %
                            limits.request_head_timeout)
        elif self.current is not None:  # a body is on its way
            if now - self.last_active > limits.request_body_timeout:
                self.refuse(408, b"request body sent no byte for %gs" % limits.request_body_timeout)
        elif not self.queue and now - self.last_active > CLIENT_IDLE_TIMEOUT:
            self.close()

    def refuse(self, status: int, message: bytes) -> None:
        """Refuse the request being parsed (or the bytes that should start one) and read no more.

        The answer keeps its place in line: the requests before it are answered first. A request whose
        head already went upstream is cut there instead (see ``_Exchange.cut``).
        """
        if self.closed:
            return
        self._stop_reading()
        exchange = self.current
        head_open = self.head.open
        self.current = None
        self.head.open = False
        queue = self.queue
        if exchange is not None:
            if not head_open and (exchange.state >= _FINISHED or (queue and queue[0] is exchange)):
                exchange.cut(status, message)
                return
            with contextlib.suppress(ValueError):  # not started: nothing of it went anywhere
                queue.remove(exchange)
        refusal = _Exchange(self)
        refusal.request = _RequestHead.unparsed()
        refusal.body = _READ
        refusal.refuse(status, message)
        queue.append(refusal)
        if queue[0] is refusal:
            refusal.start()

    def _stop_reading(self) -> None:
        self.refused = True
        self.pause(_REFUSED)

    def _parse_error(self, exc: httptools.HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, RequestRefused):
            return  # a callback refused the request and stopped the parser
        if cause is not None:  # one of our callbacks failed: a bug, not the client's bytes
            log.error("gateway: request callback failed", exc_info=cause)
        if self.current is None and self.queue and not _keeps_alive(self.queue[-1]):
            # Bytes after a request that closes the connection are not a request (RFC 9112 9.6).
            self._stop_reading()
            return
        self.refuse(400, b"malformed HTTP request: %s" % _json_escape(str(exc) or type(exc).__name__))

    def _head_too_large(self) -> bytes:
        return b"request head over the limit of %d bytes (%s): send fewer or shorter headers" % (
            self.gateway.max_request_head, MAX_REQUEST_HEAD_ENV.encode())


def _keeps_alive(exchange: _Exchange) -> bool:
    """The client wants its connection kept after this exchange (and the gateway is not draining)."""
    request = exchange.request
    return request is None or request.keep_alive


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


async def serve(host: str, port: int, routes: Iterable[tuple[str, str, list[Endpoint]]],
                split_routes: Iterable[tuple[str, str, list[Endpoint]]] = ()) -> None:
    table = RouteTable()
    for namespace, name, endpoints in routes:
        table.set(namespace, name, endpoints)
    for namespace, name, endpoints in split_routes:
        # As the daemon routes a Serverless InferenceService: one revision, all traffic, held when not ready.
        table.set_split(namespace, name, [Backend(f"{name}-00001", 100, tuple(endpoints), tag="latest")])
    gateway = Gateway(table, limits=PlatformLimits.from_env())
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
    parser.add_argument("--split-route", action="append", type=_parse_route, default=[],
                        help="the same, routed as a revision {name}-00001 with 100%% of the traffic, tagged latest, "
                             "whose requests the activator holds while it has no endpoint (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.route, args.split_route))
    else:
        uvloop.run(serve(args.host, args.port, args.route, args.split_route))


if __name__ == "__main__":
    main()
