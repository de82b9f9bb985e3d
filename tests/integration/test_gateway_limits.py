"""The gateway's request limits: 413 (body), 431 (head), 408 (slow head or body), and many slow clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from support import wait_until
from test_gateway import GatewayUnderTest, raw_upstream, upstream
from test_gateway_desync import echo_replica, parse_responses

from serving.platform.local.limits import PlatformLimits
from serving.platform.local.routes import Endpoint

pytestmark = pytest.mark.integration

SMALL = PlatformLimits(max_request_body=1000, max_request_head=2048, request_head_timeout=0.5,
                       request_body_timeout=0.5)


@pytest.fixture
def small() -> Iterator[GatewayUnderTest]:
    g = GatewayUnderTest(limits=SMALL)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def echo(small: GatewayUnderTest) -> Iterator[Endpoint]:
    with echo_replica() as (ep, _):
        small.set("default", "m", [ep])
        yield ep


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _error(data: bytes) -> tuple[int, str]:
    responses = parse_responses(data)
    assert len(responses) == 1, data
    return responses[0].status, json.loads(responses[0].body)["error"]


def test_the_default_limits_are_the_platform_defaults() -> None:
    g = GatewayUnderTest()
    try:
        assert g.gateway.limits == PlatformLimits()
    finally:
        g.close()


# -- 413 ---------------------------------------------------------------------------------------------


def test_a_content_length_over_the_limit_is_413_before_anything_is_forwarded(small: GatewayUnderTest) -> None:
    accepted: list[int] = []

    def replica(conn: socket.socket, n: int) -> None:
        accepted.append(n)

    with raw_upstream(replica) as ep:
        small.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
            # Only the head: the answer must not wait for a body it will never forward.
            sock.sendall(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
            status, error = _error(_read_until_closed(sock))
    assert status == 413
    assert "1001" in error and "1000" in error and "ODH_MAX_REQUEST_BODY_BYTES" in error
    assert accepted == []


def test_a_body_at_the_limit_is_forwarded(small: GatewayUnderTest, echo: Endpoint) -> None:
    r = httpx.post(f"{small.url}/serving/default/m/x", content=b"a" * 1000)
    assert r.status_code == 200 and r.json()["length"] == 1000
    r = httpx.post(f"{small.url}/serving/default/m/x", content=iter([b"a" * 500, b"b" * 500]))  # chunked
    assert r.status_code == 200 and r.json()["length"] == 1000


def test_a_chunked_body_that_grows_over_the_limit_is_cut_with_413(small: GatewayUnderTest, echo: Endpoint) -> None:
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        sock.sendall(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"190\r\n" + b"a" * 400 + b"\r\n")
        sock.sendall(b"190\r\n" + b"b" * 400 + b"\r\n" + b"190\r\n" + b"c" * 400 + b"\r\n")
        status, error = _error(_read_until_closed(sock))
    assert status == 413 and "over the limit of 1000 bytes" in error
    # The replica's half-sent request died with its connection; the next one is whole.
    r = httpx.post(f"{small.url}/serving/default/m/after", content=b"ok")
    assert r.json() == {"path": "/after", "query": "", "length": 2}


def test_a_chunked_body_over_the_limit_after_the_answer_started_closes_both_sides(small: GatewayUnderTest) -> None:
    with upstream("echo") as ep:
        small.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
            sock.sendall(b"POST /serving/default/m/stream-echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"190\r\n" + b"a" * 400 + b"\r\n")
            started = b""
            while b"a" * 400 not in started:  # the echo of the first chunk: the answer has started
                started += sock.recv(65536)
            sock.sendall(b"190\r\n" + b"b" * 400 + b"\r\n" + b"190\r\n" + b"c" * 400 + b"\r\n")
            data = started + _read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200")
    assert not data.endswith(b"0\r\n\r\n")  # truncated: closing is the only way to say so
    assert b"413" not in data


# -- 431 ---------------------------------------------------------------------------------------------


def test_a_head_over_the_limit_is_431(small: GatewayUnderTest, echo: Endpoint) -> None:
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        sock.sendall(b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2100 + b"\r\n\r\n")
        status, error = _error(_read_until_closed(sock))
    assert status == 431 and "2048" in error and "ODH_MAX_REQUEST_HEAD_BYTES" in error
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:  # many small headers
        sock.sendall(b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 300 + b"\r\n")
        assert _error(_read_until_closed(sock))[0] == 431
    r = httpx.get(f"{small.url}/serving/default/m/x", headers={"X-Fine": "a" * 1500})
    assert r.status_code == 200


def test_a_huge_header_is_refused_before_it_is_complete() -> None:
    """It used to be read whole (64 MB were accepted); now the default 64 KB limit answers 431 while
    the client is still sending."""
    g = GatewayUnderTest()
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            with contextlib.suppress(OSError):  # the gateway closes while we still send
                while sent < 64 << 20:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            data = _read_until_closed(sock)
        assert sent < 64 << 20
        assert data.startswith(b"HTTP/1.1 431")
    finally:
        g.close()


# -- 408 ---------------------------------------------------------------------------------------------


def test_a_slow_head_gets_408(small: GatewayUnderTest, echo: Endpoint) -> None:
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        sock.sendall(b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\n")
        status, error = _error(_read_until_closed(sock))
    assert status == 408 and "request head not complete within 0.5s" in error


def test_a_head_sent_a_byte_at_a_time_still_gets_408(small: GatewayUnderTest, echo: Endpoint) -> None:
    """The head timeout runs from its first byte: trickling bytes does not keep it open."""
    head = b"GET /serving/default/m/x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.02)  # the behaviour under test: a client that trickles its head
        status, _ = _error(_read_until_closed(sock))
    assert status == 408


def test_a_slow_body_gets_408_and_its_upstream_connection_is_closed(small: GatewayUnderTest) -> None:
    upstream_eof = threading.Event()

    def replica(conn: socket.socket, n: int) -> None:
        while conn.recv(65536):
            pass
        upstream_eof.set()

    with raw_upstream(replica) as ep:
        small.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
            sock.sendall(b"POST /serving/default/m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            status, error = _error(_read_until_closed(sock))
        assert status == 408 and "request body sent no byte for 0.5s" in error
        assert upstream_eof.wait(10)  # half a request is never left on a pooled connection


def test_a_slow_body_after_the_answer_started_closes_the_connection(small: GatewayUnderTest) -> None:
    with upstream("echo") as ep:
        small.set("default", "m", [ep])
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
            sock.sendall(b"POST /serving/default/m/stream-echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n")
            data = _read_until_closed(sock)  # and then the client goes quiet
    assert data.startswith(b"HTTP/1.1 200") and b"hello" in data
    assert not data.endswith(b"0\r\n\r\n") and b"408" not in data


def test_an_idle_keep_alive_connection_is_not_a_slow_request(small: GatewayUnderTest, echo: Endpoint) -> None:
    """Between requests there is no head or body timeout: only the idle timeout, which closes silently."""
    with httpx.Client() as client:
        assert client.get(f"{small.url}/serving/default/m/one").status_code == 200
        # Three sweeps of the 0.5 s timeouts go by with the connection idle (a wait that is the test).
        time.sleep(1.5)
        assert client.get(f"{small.url}/serving/default/m/two").json()["path"] == "/two"
        assert len(small.gateway._clients) == 1  # the same connection carried both


# -- many slow clients -------------------------------------------------------------------------------


def test_hundreds_of_slow_clients_do_not_stop_the_gateway() -> None:
    """300 connections with partial heads, partial bodies or nothing at all, while a bystander's requests
    keep being answered; then every slow one is answered 408 or closed."""
    g = GatewayUnderTest(limits=PlatformLimits(request_head_timeout=3.0, request_body_timeout=3.0))
    slow: list[socket.socket] = []
    try:
        with echo_replica() as (ep, _):
            g.set("default", "m", [ep])
            partials = [b"GET /serving/default/m/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                        b"POST /serving/default/m/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
                        b"POST /serving/default/m/slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                        b"G"]
            for i in range(300):
                sock = socket.create_connection(("127.0.0.1", g.port), timeout=30)
                sock.sendall(partials[i % len(partials)])
                slow.append(sock)
            with httpx.Client(timeout=10) as client:
                for i in range(50):
                    r = client.get(f"{g.url}/serving/default/m/bystander?i={i}")
                    assert r.json()["query"] == f"i={i}"
            for sock in slow:
                data = _read_until_closed(sock)
                assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
            assert wait_until(lambda: len(g.gateway._clients) == 0, what="every slow connection closed")
            r = httpx.get(f"{g.url}/serving/default/m/after")
            assert r.json()["path"] == "/after"
    finally:
        for sock in slow:
            sock.close()
        g.close()
