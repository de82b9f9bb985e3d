"""Request framing at the router's HTTP server: only what the server itself parsed decides where a request
ends. Ambiguous framing (the inputs behind request smuggling) is refused with 400 and a closed connection
before any handler runs; a refusal behind a pipelined request waits for that request's answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serving.llmd.http_server import HttpRequest, HttpServer, Writer


class Recorder:
    """Answers every request with its method, path, body and header names; counts the calls."""

    def __init__(self) -> None:
        self.seen: list[HttpRequest] = []

    async def __call__(self, request: HttpRequest, out: Writer) -> None:
        self.seen.append(request)
        names = b",".join(name for name, _ in request.headers)
        out.send(200, [], b"%s %s %s [%s]" % (request.method.encode(), request.path.encode(), request.body, names))


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, HttpServer]]:
    app = Recorder()
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    yield app, server
    await server.stop(grace=0.5)


async def exchange(server: HttpServer, raw: bytes) -> bytes:
    """Send ``raw`` in one write and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


AMBIGUOUS = {
    "content-length and transfer-encoding": b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n"
                                            b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding and content-length": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n"
                                            b"content-length: 5\r\n\r\n0\r\n\r\n",
    "two equal content-lengths": b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
    "two different content-lengths": b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    "a content-length list": b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3, 3\r\n\r\nabc",
    "a signed content-length": b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: +3\r\n\r\nabc",
    "transfer-encoding gzip": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\nabc",
    "transfer-encoding gzip, chunked": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
                                       b"3\r\nabc\r\n0\r\n\r\n",
    "transfer-encoding twice": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n"
                               b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding in HTTP/1.0": b"POST /x HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                                     b"3\r\nabc\r\n0\r\n\r\n",
    "a space before the colon": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
    "obsolete line folding": b"POST /x HTTP/1.1\r\nhost: a\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
    "a folded transfer-encoding": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "bare LF line ends": b"POST /x HTTP/1.1\nhost: a\ncontent-length: 0\n\n",
    "a bare LF after a header": b"POST /x HTTP/1.1\r\nhost: a\ncontent-length: 0\r\n\r\n",
    "a bare CR after a header": b"POST /x HTTP/1.1\r\nhost: a\rcontent-length: 0\r\n\r\n",
    "a bare LF after a chunk size": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                                    b"3\nabc\r\n0\r\n\r\n",
    "a bare LF after a chunk extension": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                                         b"3;ext\nabc\r\n0\r\n\r\n",
    "a chunk size overflow": b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "two hosts": b"GET /x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
async def test_ambiguous_framing_is_400_and_closes_before_any_handler_runs(
        served: tuple[Recorder, HttpServer], raw: bytes) -> None:
    app, server = served
    answer = await exchange(server, raw)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"\r\nconnection: close\r\n" in answer and answer.count(b"HTTP/1.1 ") == 1
    assert app.seen == []


async def test_a_refusal_behind_a_pipelined_request_comes_after_its_answer(
        served: tuple[Recorder, HttpServer]) -> None:
    app, server = served
    answer = await exchange(server, b"POST /first HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nok"
                                    b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab")
    first, _, rest = answer.partition(b"HTTP/1.1 400 ")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"POST /first ok [host,content-length]")
    assert rest and b"HTTP/1.1" not in rest  # the refusal, then the close
    assert [r.path for r in app.seen] == ["/first"]


async def test_connection_naming_framing_headers_changes_nothing(served: tuple[Recorder, HttpServer]) -> None:
    """``Connection: content-length`` does not make the server forget the length it framed the body by:
    the bytes after it are the next request, parsed as such."""
    app, server = served
    inner = b"GET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n"
    raw = (b"POST /outer HTTP/1.1\r\nhost: a\r\nconnection: content-length, transfer-encoding, host\r\n"
           b"content-length: 4\r\n\r\nbody" + inner + b"GET /last HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
    answer = await exchange(server, raw)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert [(r.method, r.path, r.body) for r in app.seen] == [
        ("POST", "/outer", b"body"), ("GET", "/smuggled", b""), ("GET", "/last", b"")]


async def test_chunk_extensions_are_dropped_and_trailers_never_become_headers(
        served: tuple[Recorder, HttpServer]) -> None:
    app, server = served
    answer = await exchange(server, b"POST /t HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
                                    b"\r\n3;name=value\r\nabc\r\n0\r\nauthorization: Bearer sk-trailer\r\n"
                                    b"x-trailer: 1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    (request,) = app.seen
    assert request.body == b"abc"
    assert [name for name, _ in request.headers] == [b"host", b"transfer-encoding", b"connection"]


@pytest.mark.parametrize("close", [b"connection: close", b"proxy-connection: close"])
async def test_nothing_after_a_request_that_said_close_is_read(served: tuple[Recorder, HttpServer],
                                                               close: bytes) -> None:
    app, server = served
    answer = await exchange(server, b"GET /last HTTP/1.1\r\nhost: a\r\n%s\r\n\r\n" % close +
                                    b"GET /after HTTP/1.1\r\nhost: a\r\n\r\ngarbage")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.count(b"HTTP/1.1") == 1
    assert [r.path for r in app.seen] == ["/last"]


@pytest.mark.parametrize(("upgrade", "status", "handled"), [
    (b"GET /up HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", 200, 1),
    (b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", 400, 0),
])
async def test_an_upgrade_request_gets_one_plain_answer_and_the_close(
        served: tuple[Recorder, HttpServer], upgrade: bytes, status: int, handled: int) -> None:
    """No protocol switch: the request is answered as HTTP, once, and what follows it (the other protocol)
    is never parsed as requests."""
    app, server = served
    answer = await exchange(server, upgrade + b"\x81\x05hello GET /after HTTP/1.1\r\nhost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 %d " % status) and answer.count(b"HTTP/1.1 ") == 1
    assert b"\r\nconnection: close\r\n" in answer and len(app.seen) == handled


@pytest.mark.parametrize("target", [b"/\xff", b"/a\x01b", b"http://[::1/x", b"a:80"])
async def test_a_request_target_that_is_not_a_path_is_400(served: tuple[Recorder, HttpServer], target: bytes) -> None:
    app, server = served
    answer = await exchange(server, b"GET %s HTTP/1.1\r\nhost: a\r\n\r\n" % target)
    assert answer.startswith(b"HTTP/1.1 400 ") and app.seen == []
