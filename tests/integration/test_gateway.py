"""The gateway against real upstream servers on loopback (uvicorn apps and raw sockets in threads)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from support import free_port, wait_until

from serving.platform.local.gateway import Gateway
from serving.platform.local.routes import Endpoint, RouteTable

pytestmark = pytest.mark.integration

# -- the upstream: a small model-server-like app -----------------------------------------------------


def _upstream_app(name: str, delay: float = 0.0) -> Any:
    async def echo(request: Request) -> Response:
        body = await request.body()
        if delay:
            await asyncio.sleep(delay)  # a replica this slow is the behaviour under test
        return JSONResponse({
            "server": name,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "client_port": request.client.port if request.client else None,
        })

    async def slow(request: Request) -> Response:
        # The slow answer under test; it gives up once the gateway has hung up, so that no replica
        # task outlives its test.
        until = time.monotonic() + float(request.query_params.get("d", "1"))
        while time.monotonic() < until:
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(0.05)
        return JSONResponse({"server": name})

    async def sse(request: Request) -> Response:
        count = int(request.query_params.get("n", "3"))
        gap = float(request.query_params.get("gap", "0.5"))

        async def events() -> Any:
            for i in range(count):
                yield f"data: {json.dumps({'event': i, 't': time.monotonic()})}\n\n".encode()
                if i < count - 1:
                    await asyncio.sleep(gap)  # events spaced in time are what SSE streaming is tested with

        return StreamingResponse(events(), media_type="text/event-stream")


    async def big(request: Request) -> Response:
        size = int(request.query_params.get("size", str(10 << 20)))
        return Response(b"x" * size, media_type="application/octet-stream")

    async def status(request: Request) -> Response:
        return PlainTextResponse("status", status_code=int(request.path_params["code"]))

    app = Starlette(routes=[
        Route("/slow", slow),
        Route("/sse", sse),
        Route("/big", big),
        Route("/status/{code:int}", status),
        Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
    ])

    async def with_stream_echo(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stream-echo":
            await _stream_echo(receive, send)
        else:
            await app(scope, receive, send)

    return with_stream_echo


async def _stream_echo(receive: Any, send: Any) -> None:
    """Raw ASGI: answer each request body chunk as it comes (Starlette's StreamingResponse would race
    its disconnect listener for the body)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": more})


class _ThreadedUvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # older uvicorn; newer ones skip off the main thread
        pass


@contextlib.contextmanager
def upstream(name: str, delay: float = 0.0, **config: Any) -> Iterator[Endpoint]:
    """A uvicorn app in a thread, stopped on exit."""
    port = free_port()
    server = _ThreadedUvicorn(uvicorn.Config(_upstream_app(name, delay), host="127.0.0.1", port=port,
                                             log_level="warning", lifespan="off", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="upstream started")
    try:
        yield Endpoint("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def raw_upstream(handler: Callable[[socket.socket, int], None]) -> Iterator[Endpoint]:
    """A raw TCP server: ``handler(conn, n)`` runs in a thread per accepted connection (n counts them)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()
    workers: list[threading.Thread] = []
    conns: list[socket.socket] = []

    def accept() -> None:
        n = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(5)
            conns.append(conn)
            worker = threading.Thread(target=_guarded, args=(handler, conn, n), daemon=True)
            workers.append(worker)
            worker.start()
            n += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Endpoint("127.0.0.1", listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:  # wake handlers still blocked in recv
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(5)


def _guarded(handler: Callable[[socket.socket, int], None], conn: socket.socket, n: int) -> None:
    with conn, contextlib.suppress(OSError):
        handler(conn, n)


def _read_request(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """Read one request with a Content-Length (or no) body from ``conn``; None on EOF."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    buffer[:] = rest[length:]
    return head


# -- the gateway, in its own event loop thread ------------------------------------------------------


class GatewayUnderTest:
    def __init__(self, **options: Any) -> None:
        self.routes = RouteTable()
        self.gateway = Gateway(self.routes, **options)
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self.gateway.start("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the gateway's loop (to read or poke its state between callbacks)."""
        async def run() -> Any:
            return fn()

        return self.call(run())

    def set(self, namespace: str, name: str, endpoints: list[Endpoint]) -> None:
        async def apply() -> None:
            self.routes.set(namespace, name, endpoints)

        self.call(apply())

    def close(self) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def gw() -> Iterator[GatewayUnderTest]:
    g = GatewayUnderTest()
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def fast() -> Iterator[Endpoint]:
    with upstream("fast") as ep:
        yield ep


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


# -- routing ---------------------------------------------------------------------------------------


def test_healthz(gw: GatewayUnderTest) -> None:
    response = httpx.get(f"{gw.url}/healthz")
    assert response.status_code == 200


def test_routes_by_prefix_host_and_model_name(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("team", "iris", [fast])
    assert gw.gateway.url_for("team", "iris") == f"{gw.url}/serving/team/iris"
    with httpx.Client() as client:
        r = client.post(f"{gw.gateway.url_for('team', 'iris')}/v2/models/iris/infer?a=1", content=b"{}")
        assert r.status_code == 200
        assert (r.json()["path"], r.json()["query"]) == ("/v2/models/iris/infer", "a=1")
        r = client.post(f"{gw.url}/v1/models/iris:predict", headers={"Host": "iris.team.example.com"})
        assert r.json()["path"] == "/v1/models/iris:predict"
        r = client.post(f"{gw.url}/v2/models/iris/infer")
        assert r.json()["path"] == "/v2/models/iris/infer"
    counts = gw.gateway.metrics()["requests"]
    assert counts["team/iris 200"] == 3
    assert b'odh_gateway_requests_total{code="200",route="team/iris"} 3.0' in gw.gateway.metrics_text()


def test_unknown_route_404_and_not_ready_503(gw: GatewayUnderTest) -> None:
    r = httpx.post(f"{gw.url}/serving/default/nope/v2/models/nope/infer", content=b"x" * 1000)
    assert r.status_code == 404
    assert r.json()["error"].startswith("no InferenceService routes /serving/default/nope")
    gw.set("default", "iris", [])
    r = httpx.get(f"{gw.url}/v2/models/iris/ready")
    assert r.status_code == 503
    assert "default/iris" in r.json()["error"]
    assert gw.gateway.metrics()["requests"] == {"- 404": 1, "default/iris 503": 1}


def test_kserve_sdk_rest_client_through_gateway(gw: GatewayUnderTest, fast: Endpoint) -> None:
    """The kserve SDK's REST client, given status.url as base URL, reaches the replica."""
    kserve = pytest.importorskip("kserve")
    gw.set("default", "echo", [fast])

    async def infer() -> Any:
        client = kserve.InferenceRESTClient(config=kserve.RESTConfig(protocol="v1", timeout=10))
        try:
            return await client.infer(gw.gateway.url_for("default", "echo"), {"instances": [[1, 2, 3, 4]]},
                                      model_name="echo", response_headers={})
        finally:
            await client.close()

    result = asyncio.run(infer())
    assert result["path"] == "/v1/models/echo:predict"


# -- load balancing --------------------------------------------------------------------------------


def test_least_outstanding_avoids_the_replica_with_work_in_flight(gw: GatewayUnderTest) -> None:
    """A long request holds one replica; whichever that is (round robin decides, the test does not
    predict it), every request after it goes to the other one, which has none in flight."""
    with upstream("a") as a, upstream("b") as b:
        gw.set("default", "m", [a, b])
        target = gw.routes.get("default", "m")
        assert target is not None
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as long:
            long.sendall(b"GET /serving/default/m/slow?d=60 HTTP/1.1\r\nHost: x\r\n\r\n")
            busy = wait_until(lambda: gw.on_loop(lambda: [ep for ep, n in target.outstanding.items() if n]),
                              what="the long request in flight")
            assert len(busy) == 1
            idle_name = "b" if busy[0] == a else "a"
            with httpx.Client(timeout=10) as client:
                servers = [client.post(f"{gw.url}/v2/models/m/infer", content=b"{}").json()["server"]
                           for _ in range(10)]
            assert servers == [idle_name] * 10
            long.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        wait_until(lambda: gw.on_loop(lambda: sum(target.outstanding.values())) == 0, what="all released")


# -- upstream failures -----------------------------------------------------------------------------


def test_502_when_no_replica_accepts(gw: GatewayUnderTest) -> None:
    gw.set("default", "dead", [Endpoint("127.0.0.1", free_port()), Endpoint("127.0.0.1", free_port())])
    r = httpx.post(f"{gw.url}/v2/models/dead/infer", content=b"{}")
    assert r.status_code == 502
    assert "connect" in r.json()["error"]
    assert gw.gateway.metrics()["upstream_errors"]["default/dead connect"] == 2


def test_connect_failure_tries_the_next_replica(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [Endpoint("127.0.0.1", free_port()), fast])
    with httpx.Client() as client:
        for _ in range(6):
            assert client.post(f"{gw.url}/v2/models/m/infer", content=b"{}").status_code == 200


def test_502_when_replica_drops_the_request(gw: GatewayUnderTest) -> None:
    def hang_up(conn: socket.socket, n: int) -> None:
        _read_request(conn, bytearray())  # read it, then close without a word

    with raw_upstream(hang_up) as ep:
        gw.set("default", "m", [ep])
        r = httpx.post(f"{gw.url}/v2/models/m/infer", content=b"{}")
    assert r.status_code == 502


def test_504_on_upstream_timeout(fast: Endpoint) -> None:
    g = GatewayUnderTest(read_timeout=0.3)
    try:
        g.set("default", "m", [fast])
        r = httpx.get(f"{g.url}/serving/default/m/slow?d=5", timeout=10)
        assert r.status_code == 504
        assert r.json()["error"] == "upstream timed out after 0.3s"  # the gateway's timer, not the replica
        # The gateway still serves afterwards.
        assert httpx.get(f"{g.url}/serving/default/m/x").status_code == 200
    finally:
        g.close()


def test_stale_pooled_connection_is_redialled(gw: GatewayUnderTest) -> None:
    """A replica that closes a kept-alive connection as it is reused: the request still succeeds."""
    def one_then_close(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        if _read_request(conn, buffer) is None:
            return
        body = b'{"connection": %d}' % n
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        _read_request(conn, buffer)  # the next request arrives on the kept-alive connection...
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # ...and the connection dies (reset) without an answer.

    with raw_upstream(one_then_close) as ep:
        gw.set("default", "m", [ep])
        with httpx.Client() as client:
            answers = [client.post(f"{gw.url}/v2/models/m/infer", content=b'{"x": 1}') for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5
    assert len({r.json()["connection"] for r in answers}) == 5
    assert gw.gateway.metrics()["upstream_errors"].get("default/m stale", 0) >= 4


def test_idle_connection_closed_by_replica_is_not_reused(gw: GatewayUnderTest) -> None:
    with upstream("short-keepalive", timeout_keep_alive=0.2) as ep:
        gw.set("default", "m", [ep])
        with httpx.Client() as client:
            for _ in range(4):
                assert client.get(f"{gw.url}/v2/models/m").status_code == 200
                # The replica closes the pooled connection after 0.2 s idle; the gateway drops it.
                wait_until(lambda: not gw.on_loop(lambda: gw.gateway.pool.idle_count(ep)), what="pool emptied")


# -- HTTP semantics --------------------------------------------------------------------------------


def test_keep_alive_on_both_sides(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    ports = set()
    with httpx.Client(limits=httpx.Limits(max_connections=1)) as client:
        for i in range(200):
            r = client.post(f"{gw.url}/v2/models/m/infer", content=b'{"i": %d}' % i)
            assert r.status_code == 200
            ports.add(r.json()["client_port"])
        assert len(gw.gateway._clients) == 1  # one client connection carried all 200
    assert len(ports) == 1  # and one pooled upstream connection


def test_pipelined_requests_are_answered_in_order(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        requests = b"".join(
            b"POST /v2/models/m/infer?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % i for i in range(3))
        sock.sendall(requests + b"GET /v2/models/m?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert [data.find(b'"query":"n=%d"' % i) for i in range(4)] == sorted(data.find(b'"query":"n=%d"' % i) for i in range(4))


def test_http10_client(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /serving/default/m/sse?n=2&gap=0.01 HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # close-delimited for 1.0
    assert body.count(b"data: ") == 2


def test_chunked_request_and_response_bodies(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    parts = [b"a" * 1000, b"b" * 70000, b"c" * 5]

    def gen() -> Iterator[bytes]:
        yield from parts

    with httpx.Client() as client:
        r = client.post(f"{gw.url}/serving/default/m/v2/models/m/infer", content=gen())
        assert r.status_code == 200
        assert r.json()["length"] == sum(map(len, parts))
        assert _headers(r)["transfer-encoding"] == "chunked"
        r = client.post(f"{gw.url}/serving/default/m/stream-echo", content=gen())
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.content == b"".join(parts)


def test_sse_arrives_event_by_event(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    arrivals = []
    sent = []
    with httpx.stream("GET", f"{gw.url}/serving/default/m/sse?n=3&gap=0.5", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                sent.append(json.loads(line[6:])["t"])  # the replica's clock: same process, same clock
    assert len(arrivals) == 3
    assert arrivals[0] < sent[2]  # the first event was here before the replica wrote the last one


def test_big_bodies_both_ways(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    payload = bytes(range(256)) * (40 << 10)  # 10 MiB
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{gw.url}/v2/models/m/infer", content=payload)
        assert r.status_code == 200
        assert r.json()["length"] == len(payload)
        assert r.json()["sha256"] == hashlib.sha256(payload).hexdigest()
        r = client.get(f"{gw.url}/serving/default/m/big")
        assert len(r.content) == 10 << 20
        r = client.post(f"{gw.url}/serving/default/m/stream-echo", content=iter([payload[:3 << 20], payload[3 << 20:]]))
        assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_forwarded_and_hop_by_hop_headers(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    with httpx.Client() as client:
        r = client.get(f"{gw.url}/v2/models/m", headers={
            "Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "timeout=5",
            "TE": "trailers", "Proxy-Connection": "keep-alive", "X-End-To-End": "yes"})
        seen = _headers(r)
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{gw.port}"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["host"] == f"127.0.0.1:{gw.port}"
        assert seen["x-end-to-end"] == "yes"
        for hop in ("x-private", "keep-alive", "te", "proxy-connection"):
            assert hop not in seen
        r = client.get(f"{gw.url}/v2/models/m", headers={"X-Forwarded-For": "203.0.113.7"})
        assert _headers(r)["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


def test_response_hop_by_hop_and_close_delimited_body(gw: GatewayUnderTest) -> None:
    def old_server(conn: socket.socket, n: int) -> None:
        _read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\n"
                     b"X-Kept: 1\r\n\r\n" + b"y" * 100000)
        # no Content-Length, no chunking: the body ends when the connection does

    with raw_upstream(old_server) as ep:
        gw.set("default", "m", [ep])
        with httpx.Client() as client:
            for _ in range(2):
                r = client.get(f"{gw.url}/v2/models/m")
                assert r.status_code == 200 and r.content == b"y" * 100000
                assert r.headers["x-kept"] == "1"
                assert "x-hop" not in r.headers and "keep-alive" not in r.headers
                assert r.headers["transfer-encoding"] == "chunked"


def test_head_and_no_body_statuses(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    with httpx.Client() as client:
        for _ in range(3):
            r = client.head(f"{gw.url}/serving/default/m/big?size=5000")
            assert r.status_code == 200 and r.content == b""
            r = client.get(f"{gw.url}/serving/default/m/status/204")
            assert r.status_code == 204
            r = client.get(f"{gw.url}/serving/default/m/status/500")
            assert r.status_code == 500 and r.text == "status"


def test_expect_100_continue(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"body")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b'"length":4' in data


def test_malformed_request_gets_400(gw: GatewayUnderTest) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 400")


def test_client_disconnect_releases_the_replica(gw: GatewayUnderTest, fast: Endpoint) -> None:
    gw.set("default", "m", [fast])
    target = gw.routes.get("default", "m")
    assert target is not None

    def in_flight() -> int:
        return gw.on_loop(lambda: sum(target.outstanding.values()))

    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /serving/default/m/slow?d=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: in_flight() == 1, what="the request in flight")
        # Reset, not FIN: a half-closed client may still be waiting for its answer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wait_until(lambda: in_flight() == 0, what="the replica released")
    assert httpx.get(f"{gw.url}/v2/models/m").status_code == 200


def test_idle_client_connections_are_closed(gw: GatewayUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.platform.local import gateway as module

    monkeypatch.setattr(module, "CLIENT_IDLE_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")

        def closed_by_the_gateway() -> bool:
            gw.on_loop(gw.gateway._sweep)
            try:
                return sock.recv(1000, socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False

        wait_until(closed_by_the_gateway, what="the idle connection closed")


def test_works_on_the_default_asyncio_loop(fast: Endpoint) -> None:
    """The daemon may run without uvloop: the same proxy on asyncio's own loop."""
    routes = RouteTable()
    routes.set("default", "m", [fast])

    async def scenario() -> list[int]:
        gateway = Gateway(routes)
        port = await gateway.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                statuses = [(await client.post(f"http://127.0.0.1:{port}/v2/models/m/infer", content=b"x" * 100000)).status_code
                            for _ in range(20)]
                async with client.stream("GET", f"http://127.0.0.1:{port}/serving/default/m/sse?n=2&gap=0.01") as r:
                    statuses.append(r.status_code)
                    assert (await r.aread()).count(b"data: ") == 2
            return statuses
        finally:
            await gateway.stop()

    assert asyncio.run(scenario()) == [200] * 21


def test_upgrade_requests(gw: GatewayUnderTest, fast: Endpoint) -> None:
    """Upgrade is hop-by-hop: a bodiless upgrade request goes on as plain HTTP; one with a body gets 400 (llhttp would
    hand its body over as upgrade bytes)."""
    gw.set("default", "m", [fast])

    def exchange(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(request + b"GET /v2/models/m?second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    data = exchange(b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert data.count(b"HTTP/1.1 200") == 2 and b"upgrade" not in data.lower().split(b"\r\n\r\n")[1]
    data = exchange(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    b"Upgrade: h2c\r\nHTTP2-Settings: AAA\r\nContent-Length: 4\r\n\r\nbody")
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1") == 1
