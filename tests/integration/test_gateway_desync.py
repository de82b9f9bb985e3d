"""Request smuggling and response desync through the gateway: every client gets its own answer.

The upstream framing is always the gateway's own: a header named in ``Connection`` cannot remove
Content-Length, Transfer-Encoding or Host; ambiguous framing is refused with 400; an upstream connection
whose responses do not line up with its requests is closed, never pooled.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httptools
import httpx
import pytest
import uvicorn
from support import free_port, wait_until
from test_gateway import GatewayUnderTest, _read_request, _ThreadedUvicorn, raw_upstream

from serving.platform.local.limits import PlatformLimits
from serving.platform.local.routes import Endpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def gw() -> Iterator[GatewayUnderTest]:
    """test_gateway's fixture, declared here (an imported fixture reads as an unused, redefined import)."""
    g = GatewayUnderTest()
    try:
        yield g
    finally:
        g.close()

# -- helpers: a recording echo replica, raw clients ---------------------------------------------------


class EchoReplica:
    """A real HTTP server (uvicorn) that answers every request with its own path, query and body size,
    and remembers every path it served: a smuggled request shows up here even when no client sees it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.paths.append(scope["path"])
        payload = json.dumps({"path": scope["path"], "query": scope["query_string"].decode("latin-1"),
                              "length": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


@contextlib.contextmanager
def echo_replica() -> Iterator[tuple[Endpoint, EchoReplica]]:
    app = EchoReplica()
    port = free_port()
    server = _ThreadedUvicorn(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                                             lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="echo replica started")
    try:
        yield Endpoint("127.0.0.1", port), app
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class _Response:
    status: int
    body: bytes = b""


class _ResponseReader:
    """Collects every response in a byte stream (status and body), for raw-socket clients."""

    def __init__(self) -> None:
        self.responses: list[_Response] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.responses.append(_Response(0))

    def on_headers_complete(self) -> None:
        self.responses[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body


def parse_responses(data: bytes) -> list[_Response]:
    """Every complete (or truncated) response in ``data``; a parse error ends the list."""
    reader = _ResponseReader()
    with contextlib.suppress(httptools.HttpParserError):
        reader.parser.feed_data(data)
    return reader.responses


def exchange_raw(port: int, payload: bytes, timeout: float = 15.0) -> bytes:
    """Send ``payload``, half-close, and read until the gateway closes (it does once it has answered;
    a gateway that keeps the connection open fails the caller with a timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before we were done
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        return data


def _recv_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body (the gateway's own answers and the replicas here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


# -- the repro -------------------------------------------------------------------------------


class _PathEcho:
    """A raw replica that answers each request it parses with that request's path, and keeps every head
    (with the number of the connection it came on)."""

    def __init__(self, extra: bytes = b"") -> None:
        self.heads: list[tuple[int, bytes]] = []
        self.extra = extra  # sent right after the answer to a path containing "/twice"
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        while (head := _read_request(conn, buffer)) is not None:
            with self.lock:
                self.heads.append((n, head))
            path = head.split(b" ")[1]
            answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(path), path)
            if path.startswith(b"/twice"):
                answer += self.extra
            conn.sendall(answer)


def test_connection_naming_content_length_cannot_smuggle_a_request(gw: GatewayUnderTest) -> None:
    """The issue's repro: ``Connection: Content-Length`` used to strip Content-Length but forward the body,
    which the replica then read as a second request whose answer went to the next client."""
    replica = _PathEcho()
    smuggled = b"GET /v2/models/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
    with raw_upstream(replica) as ep:
        gw.set("default", "iris", [ep])
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as attacker:
            attacker.sendall(b"POST /serving/default/iris/v1/models/iris:predict HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: Content-Length\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
            answer = _recv_response(attacker)
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"\r\n\r\n/v1/models/iris:predict")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as bystander:
            for i in range(5):
                bystander.sendall(b"GET /serving/default/iris/mine-%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                assert _recv_response(bystander).endswith(b"\r\n\r\n/mine-%d" % i)
        heads = wait_until(lambda: [h for _, h in replica.heads] if len(replica.heads) >= 6 else None,
                           what="six requests at the replica")
    assert heads is not None
    first = heads[0].lower()
    assert first.startswith(b"post /v1/models/iris:predict ")
    assert b"\r\ncontent-length: %d" % len(smuggled) in first  # the gateway framed the body itself
    assert not any(b"SMUGGLED" in head for head in heads)


# -- the upstream side: a connection out of step is closed, never pooled -----------------------------


@pytest.mark.parametrize("extra", [
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEXTRA", id="a second response"),
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEX", id="half a second response"),
    pytest.param(b"garbage", id="bytes after the response"),
])
def test_a_replica_that_answers_twice_loses_its_connection(gw: GatewayUnderTest, extra: bytes) -> None:
    """Bytes after a complete response (in the same read) answer nothing we sent: the connection is
    closed, and the next request goes on a new one and gets its own answer."""
    replica = _PathEcho(extra=extra)
    with raw_upstream(replica) as ep:
        gw.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as client:
            client.sendall(b"GET /serving/default/m/twice HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _recv_response(client).endswith(b"\r\n\r\n/twice")
            client.sendall(b"GET /serving/default/m/next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _recv_response(client).endswith(b"\r\n\r\n/next")
    assert [(n, head.split(b" ")[1]) for n, head in replica.heads] == [(0, b"/twice"), (1, b"/next")]
    assert gw.gateway.metrics()["upstream_errors"]["default/m desync"] == 1


def test_a_head_response_with_a_body_loses_its_connection(gw: GatewayUnderTest) -> None:
    def head_with_body(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        while (head := _read_request(conn, buffer)) is not None:
            path = head.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-conn: %d\r\n\r\n%s" % (len(path), n, path))

    with raw_upstream(head_with_body) as ep:
        gw.set("default", "m", [ep])
        with httpx.Client() as client:
            r = client.head(f"{gw.url}/serving/default/m/head")
            assert r.status_code == 200 and r.headers["x-conn"] == "0"
            r = client.get(f"{gw.url}/serving/default/m/after")
            assert r.text == "/after" and r.headers["x-conn"] == "1"


def test_an_answer_before_the_whole_body_went_up_closes_the_upstream_connection(gw: GatewayUnderTest) -> None:
    """A replica that answers as soon as it has the head: the rest of the body, if the gateway sent it on,
    would be read as a request of its own. The connection is closed instead, and the client's rest of
    the body is read and dropped, so its next request on the same connection is answered correctly."""
    replica_heads: list[tuple[int, bytes]] = []

    def answers_early(conn: socket.socket, n: int) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            replica_heads.append((n, head))
            path = head.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(path), path))

    smuggled = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
    with raw_upstream(answers_early) as ep:
        gw.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as client:
            client.sendall(b"POST /serving/default/m/early HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                           % len(smuggled))
            assert _recv_response(client).endswith(b"\r\n\r\n/early")
            client.sendall(smuggled)  # the rest of the body, after the answer
            client.sendall(b"GET /serving/default/m/next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _recv_response(client).endswith(b"\r\n\r\n/next")
    assert [(n, head.split(b" ")[1]) for n, head in replica_heads] == [(0, b"/early"), (1, b"/next")]


# -- refusals: ambiguous framing is 400 --------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
                 b"0\r\n\r\n", id="TE identity, chunked"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                 b"0\r\n\r\n", id="TE gzip, chunked"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 id="TE on HTTP/1.0"),
    pytest.param(b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two Hosts"),
    pytest.param(b"GET /serving/default/m/x HTTP/2.0\r\nHost: x\r\n\r\n", id="HTTP/2.0 request line"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n",
                 id="Transfer_Encoding"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\nhello",
                 id="Content_Length"),
    # What llhttp refuses by itself (kept here so that a parser change cannot let them through):
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="CL and TE"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                 b"hello!", id="two Content-Lengths"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                 b"0\r\n\r\n", id="TE chunked, identity"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n 5\r\n\r\nhello",
                 id="obsolete line folding"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello", id="bare LF"),
    pytest.param(b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", id="NUL in a value"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5x\r\nhello\r\n0\r\n\r\n", id="bad chunk size"),
    pytest.param(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5;a\nhello\r\n0\r\n\r\n", id="bare LF in a chunk extension"),
])
def test_ambiguous_framing_is_refused_with_400(gw: GatewayUnderTest, request_bytes: bytes) -> None:
    with echo_replica() as (ep, replica):
        gw.set("default", "m", [ep])
        responses = parse_responses(exchange_raw(gw.port, request_bytes))
        assert [r.status for r in responses] == [400]
        assert json.loads(responses[0].body)["error"]
        assert replica.paths == []


def test_bytes_after_a_request_that_closes_the_connection_are_ignored(gw: GatewayUnderTest) -> None:
    """They used to get a 400 written over the first request's answer."""
    with echo_replica() as (ep, replica):
        gw.set("default", "m", [ep])
        data = exchange_raw(gw.port, b"GET /serving/default/m/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                     b"GET /serving/default/m/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = parse_responses(data)
        assert [r.status for r in responses] == [200]
        assert json.loads(responses[0].body)["path"] == "/first"
        assert replica.paths == ["/first"]


# -- the corpus: attackers and bystanders at once ----------------------------------------------------

SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"  # the replica must never see this path


def _request(path: bytes, headers: list[bytes], body: bytes = b"", method: bytes = b"POST",
             version: bytes = b"HTTP/1.1") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"%s /serving/default/m%s %s\r\n%s\r\n%s" % (method, path, version, lines, body)


def _chunked(body: bytes, size: bytes | None = None) -> bytes:
    return b"%s\r\n%s\r\n0\r\n\r\n" % (size or b"%x" % len(body), body)


def _corpus() -> list[tuple[str, bytes, list[str]]]:
    """(name, the bytes an attacker sends, the paths it may be answered for, in order)."""
    cases: list[tuple[str, bytes, list[str]]] = []

    def add(name: str, payload: bytes, *paths: str) -> None:
        cases.append((name, payload, list(paths)))

    cl = b"Content-Length: %d" % len(SMUGGLED)
    te = b"Transfer-Encoding: chunked"
    # A Connection header naming framing headers, in any case and order, with spaces and commas.
    for i, tokens in enumerate([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"keep-alive, Content-Length",
                                b"Content-Length, keep-alive", b" ,content-length ,", b"Keep-Alive,  cOnTeNt-LeNgTh",
                                b"Content-Length,Transfer-Encoding,Host", b"TE, Trailer, Content-Length",
                                b"Host", b"host, content-length", b"Transfer-Encoding"]):
        add(f"connection-cl-{i}", _request(b"/c%d" % i, [b"Host: x", b"Connection: " + tokens, cl], SMUGGLED),
            f"/c{i}")
        add(f"connection-cl-after-{i}", _request(b"/d%d" % i, [b"Host: x", cl, b"Connection: " + tokens], SMUGGLED),
            f"/d{i}")
        add(f"connection-te-{i}", _request(b"/e%d" % i, [b"Host: x", b"Connection: " + tokens, te],
                                           _chunked(SMUGGLED)), f"/e{i}")
    add("connection-twice", _request(b"/f", [b"Host: x", b"Connection: keep-alive", cl,
                                             b"Connection: Content-Length"], SMUGGLED), "/f")
    add("connection-expect", _request(b"/g", [b"Host: x", b"Connection: Content-Length, Expect",
                                              b"Expect: 100-continue", cl], SMUGGLED), "/g")
    # Duplicate or conflicting framing.
    add("cl-twice-same", _request(b"/h", [b"Host: x", cl, cl], SMUGGLED))
    add("cl-zero-then-cl", _request(b"/h", [b"Host: x", b"Content-Length: 0", cl], SMUGGLED))
    add("cl-list", _request(b"/h", [b"Host: x", b"Content-Length: %d, %d" % (len(SMUGGLED), len(SMUGGLED))],
                            SMUGGLED))
    add("cl-then-te", _request(b"/h", [b"Host: x", cl, te], _chunked(SMUGGLED)))
    add("te-then-cl", _request(b"/h", [b"Host: x", te, b"Content-Length: 3"], _chunked(SMUGGLED)))
    add("cl-zero-te", _request(b"/h", [b"Host: x", b"Content-Length: 0", te], _chunked(SMUGGLED)))
    add("cl-plus", _request(b"/h", [b"Host: x", b"Content-Length: +%d" % len(SMUGGLED)], SMUGGLED))
    add("cl-underscore", _request(b"/h", [b"Host: x", b"Content_Length: %d" % len(SMUGGLED)], SMUGGLED))
    # Transfer-Encoding variants.
    for i, value in enumerate([b"chunked, identity", b" chunked", b"identity, chunked", b"gzip, chunked", b"Chunked",
                               b"chunked;x=1", b"xchunked", b"chunked ", b"\tchunked", b"chunked\x0b", b"CHUNKED"]):
        add(f"te-{i}", _request(b"/t%d" % i, [b"Host: x", b"Transfer-Encoding: " + value], _chunked(SMUGGLED)),
            f"/t{i}")
    add("te-twice", _request(b"/t", [b"Host: x", te, te], _chunked(SMUGGLED)))
    add("te-space-before-colon", _request(b"/t", [b"Host: x", b"Transfer-Encoding : chunked"], _chunked(SMUGGLED)))
    add("te-underscore", _request(b"/t", [b"Host: x", b"Transfer_Encoding: chunked"], _chunked(SMUGGLED)))
    add("te-http10", _request(b"/t", [b"Host: x", te], _chunked(SMUGGLED), version=b"HTTP/1.0"))
    # Obsolete line folding and bare LF.
    add("fold-cl", _request(b"/o", [b"Host: x", b"Content-Length: 0\r\n %d" % len(SMUGGLED)], SMUGGLED))
    add("fold-te", _request(b"/o", [b"Host: x", b"Transfer-Encoding: identity\r\n chunked"], _chunked(SMUGGLED)))
    add("fold-other", _request(b"/o", [b"Host: x", b"X-A: a\r\n\tb", cl], SMUGGLED))
    add("bare-lf", _request(b"/l", [b"Host: x", cl], SMUGGLED).replace(b"\r\n", b"\n"))
    add("bare-lf-one-line", _request(b"/l", [b"Host: x\n" + cl], SMUGGLED))
    add("bare-cr", _request(b"/l", [b"Host: x\r" + cl], SMUGGLED))
    # Chunk extensions and chunk sizes.
    n = b"%x" % len(SMUGGLED)
    add("chunk-ext", _request(b"/k1", [b"Host: x", te], _chunked(SMUGGLED, n + b";ext=1")), "/k1")
    add("chunk-ext-quoted", _request(b"/k2", [b"Host: x", te], _chunked(SMUGGLED, n + b';a="b;c"')), "/k2")
    add("chunk-ext-bare-lf", _request(b"/k", [b"Host: x", te], _chunked(SMUGGLED, n + b";a\n")))
    add("chunk-ext-space", _request(b"/k3", [b"Host: x", te], _chunked(SMUGGLED, n + b" ;a")), "/k3")
    for i, size in enumerate([n.upper(), b"+" + n, b"0x" + n, n + b"\t", b"-1", b"f" * 20, n + b"\r\n"]):
        add(f"chunk-size-{i}", _request(b"/s%d" % i, [b"Host: x", te], _chunked(SMUGGLED, size)), f"/s{i}")
    add("chunk-short", _request(b"/s", [b"Host: x", te], b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED) + 5, SMUGGLED)))
    add("chunk-long", _request(b"/s", [b"Host: x", te], b"5\r\n%s\r\n0\r\n\r\n" % SMUGGLED))
    # Header values with NUL or CR, Host in Connection, two Hosts.
    add("nul", _request(b"/n", [b"Host: x", b"X-A: a\x00b", cl], SMUGGLED))
    add("cr", _request(b"/n", [b"Host: x", b"X-A: a\r" + cl], SMUGGLED))
    add("host-twice", _request(b"/n", [b"Host: x", b"Host: y", cl], SMUGGLED))
    add("host-in-connection", _request(b"/n1", [b"Host: x", b"Connection: Host", cl], SMUGGLED), "/n1")
    # Pipelined requests with bodies: each gets its own answer, in order.
    add("pipelined", _request(b"/p1", [b"Host: x", b"Content-Length: 5"], b"hello")
        + _request(b"/p2", [b"Host: x", te], _chunked(b"world"))
        + _request(b"/p3", [b"Host: x"], method=b"GET"), "/p1", "/p2", "/p3")
    add("pipelined-smuggle", _request(b"/q1", [b"Host: x", b"Connection: Content-Length", cl], SMUGGLED)
        + _request(b"/q2", [b"Host: x", b"Connection: Transfer-Encoding", te], _chunked(SMUGGLED)), "/q1", "/q2")
    add("pipelined-then-bad", _request(b"/r1", [b"Host: x", b"Content-Length: 2"], b"{}")
        + _request(b"/r", [b"Host: x", b"Transfer-Encoding: gzip, chunked"], _chunked(SMUGGLED)), "/r1")
    add("close-then-more", _request(b"/u1", [b"Host: x", b"Connection: close"], method=b"GET") + SMUGGLED, "/u1")
    add("upgrade-with-body", _request(b"/v", [b"Host: x", b"Connection: Upgrade", b"Upgrade: h2c", cl], SMUGGLED))
    add("connect-then-more", b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n"
        + _request(b"/w1", [b"Host: x"], method=b"GET"), "/w1")
    # Requests that end mid-body.
    add("mid-body-cl", _request(b"/m", [b"Host: x", b"Content-Length: 1000"], SMUGGLED))
    add("mid-body-chunked", _request(b"/m", [b"Host: x", te], b"100\r\n" + SMUGGLED))
    add("mid-chunk-size", _request(b"/m", [b"Host: x", te], b"2"))
    return cases


CORPUS = _corpus()


def _check_attacker(name: str, data: bytes, allowed: list[str]) -> None:
    answered = []
    for response in parse_responses(data):
        if response.status < 200 or 400 <= response.status < 500:
            continue  # 100 Continue, or refused
        assert response.status == 200, (name, response)
        answered.append(json.loads(response.body)["path"])
    assert answered == allowed[:len(answered)], (name, answered, allowed)  # its own answers, in order


def test_attackers_never_cross_a_bystanders_answer() -> None:
    """Attackers send every variant in the corpus while bystanders send normal requests over keep-alive
    connections: each bystander gets its own answer (a unique id echoed back), each attacker a 4xx or
    its own answers, and the replica never serves the smuggled path."""
    gateway = GatewayUnderTest(limits=PlatformLimits(request_head_timeout=2.0, request_body_timeout=2.0))
    try:
        with echo_replica() as (ep, replica):
            gateway.set("default", "m", [ep])
            stop = threading.Event()
            crossed: list[str] = []
            answered = [0]

            def bystander(index: int) -> None:
                with httpx.Client(timeout=30) as client:
                    while not stop.is_set():
                        mine = uuid.uuid4().hex
                        body = b"x" * (len(mine) % 7)
                        r = client.post(f"{gateway.url}/serving/default/m/by/{index}?id={mine}", content=body)
                        echoed = r.json() if r.status_code == 200 else {}
                        if (echoed.get("path"), echoed.get("query"), echoed.get("length")) != (
                                f"/by/{index}", f"id={mine}", len(body)):
                            crossed.append(f"bystander {index} sent {mine}, got {r.status_code} {r.text}")
                        answered[0] += 1

            def attacker(case: tuple[str, bytes, list[str]]) -> None:
                name, payload, allowed = case
                _check_attacker(name, exchange_raw(gateway.port, payload), allowed)

            with ThreadPoolExecutor(4) as bystanders:
                running = [bystanders.submit(bystander, i) for i in range(4)]
                try:
                    with ThreadPoolExecutor(4) as attackers:
                        list(attackers.map(attacker, CORPUS * 4))
                    # The bystanders kept going the whole time: at least as many answers as attacks.
                    wait_until(lambda: answered[0] >= len(CORPUS), what="bystander answers")
                finally:
                    stop.set()
                    for future in running:
                        future.result()
            assert not crossed, crossed[:5]
            assert not [p for p in replica.paths if "SMUGGLED" in p]
            # And the gateway still answers a normal request correctly.
            r = httpx.post(f"{gateway.url}/serving/default/m/last?id=1", content=b"abc")
            assert r.json() == {"path": "/last", "query": "id=1", "length": 3}
    finally:
        gateway.close()


def test_corpus_is_refused_or_answered_one_case_at_a_time(gw: GatewayUnderTest) -> None:
    """Each variant alone, in order: the attacker's own verdict, and the replica never sees SMUGGLED."""
    with echo_replica() as (ep, replica):
        gw.set("default", "m", [ep])
        for name, payload, allowed in CORPUS:
            _check_attacker(name, exchange_raw(gw.port, payload), allowed)
        assert not [p for p in replica.paths if "SMUGGLED" in p]
