"""The router's HTTP server under requests that ask too much: a body over the limit is 413 before it is
read, a head over the limit 431, a head or body that does not arrive in time 408; hundreds of such
connections leave a bystander answered. Real sockets on loopback, small limits so the tests are quick."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from support import wait_until_async

from serving.llmd.http_server import HttpRequest, HttpServer, RequestLimits, Writer
from serving.llmd.serve import limits_from, parse_args
from serving.platform.local.limits import PlatformLimits

LIMITS = RequestLimits(max_body=1000, max_head=2000, head_timeout=0.5, body_timeout=0.5)


class Echo:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: HttpRequest, out: Writer) -> None:
        self.calls += 1
        out.send(200, [], b"%d" % len(request.body))


@pytest.fixture
async def served() -> AsyncIterator[tuple[Echo, HttpServer]]:
    app = Echo()
    server = HttpServer(app, limits=LIMITS)
    await server.start("127.0.0.1", 0)
    yield app, server
    await server.stop(grace=0.5)


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def answer(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (a refusal closes the connection)."""
    return await asyncio.wait_for(reader.read(-1), 10)


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


async def ask(server: HttpServer, body: bytes = b"x") -> bytes:
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    try:
        return await answer(reader)
    finally:
        writer.close()


def test_defaults_are_the_platform_limits_and_odh_llmd_serve_takes_flags() -> None:
    platform = PlatformLimits()
    assert RequestLimits() == RequestLimits(platform.max_request_body, platform.max_request_head,
                                            platform.request_head_timeout, platform.request_body_timeout)
    base = ["--port", "1", "--model", "m", "--engine", "http://127.0.0.1:2"]
    assert limits_from(parse_args(base)) == RequestLimits()
    assert limits_from(parse_args([*base, "--max-request-body-bytes", "10", "--max-request-head-bytes", "20",
                                   "--request-head-timeout-s", "1.5", "--request-body-timeout-s", "2"])) == \
        RequestLimits(10, 20, 1.5, 2.0)
    with pytest.raises(SystemExit):
        parse_args([*base, "--max-request-body-bytes", "0"])


async def test_a_body_whose_length_is_over_the_limit_is_413_before_it_is_sent(served: tuple[Echo, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ncontent-length: 1001\r\n\r\n")  # the body never comes
    raw = await answer(reader)
    assert status(raw) == 413 and b"connection: close" in raw
    error = orjson.loads(raw.partition(b"\r\n\r\n")[2])["error"]  # OpenAI's error shape, as the SDKs read it
    assert error["code"] == 413 and error["type"] == "invalid_request_error"
    assert error["message"] == "the request body is larger than 1000 bytes"
    assert app.calls == 0
    writer.close()
    assert status(await ask(server, b"y" * 1000)) == 200  # at the limit is fine


async def test_expect_continue_over_the_limit_gets_413_instead_of_100(served: tuple[Echo, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n")
    raw = await answer(reader)
    assert raw.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in raw
    writer.close()


async def test_a_chunked_body_is_cut_off_at_the_limit(served: tuple[Echo, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(4):
        writer.write(b"12c\r\n" + b"z" * 300 + b"\r\n")  # 1,200 bytes in all, never a last chunk
    assert status(await answer(reader)) == 413 and app.calls == 0
    writer.close()


async def test_a_refused_upload_still_reads_its_answer(served: tuple[Echo, HttpServer]) -> None:
    """The client goes on sending after the 413; the server drops that input for a moment instead of
    closing on it (which would reset the connection and could destroy the answer)."""
    _, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ncontent-length: 200000\r\n\r\n" + b"b" * 200_000)
    assert status(await answer(reader)) == 413
    writer.close()


async def test_a_head_over_the_limit_is_431(served: tuple[Echo, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /e HTTP/1.1\r\nhost: a\r\n" + b"".join(b"x-%d: %s\r\n" % (i, b"v" * 100) for i in range(30))
                 + b"\r\n")
    assert status(await answer(reader)) == 431 and app.calls == 0
    writer.close()


async def test_one_endless_header_is_431_without_waiting_for_its_end(served: tuple[Echo, HttpServer]) -> None:
    """httptools keeps a header line until it ends: the server counts the bytes itself."""
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /e HTTP/1.1\r\nhost: a\r\nx-big: ")
    for _ in range(5):
        writer.write(b"v" * 1000)  # no line end, ever
        await writer.drain()
    assert status(await answer(reader)) == 431 and app.calls == 0
    writer.close()


async def test_pipelined_requests_with_bodies_are_not_mistaken_for_a_large_head() -> None:
    """One segment holding a body larger than the head limit and the start of the next head: the head is
    counted from its own first line, not from the segment's start."""
    server = HttpServer(Echo(), limits=RequestLimits(max_body=1000, max_head=500))
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(server)
        head = b"POST /e HTTP/1.1\r\nhost: a\r\n"
        writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ncontent-length: 990\r\n\r\n" + b"p" * 990 + head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n990"), 10)  # that segment was read
        assert first.startswith(b"HTTP/1.1 200 OK")
        writer.write(b"connection: close\r\ncontent-length: 990\r\n\r\n" + b"q" * 990)
        assert (await answer(reader)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
    finally:
        await server.stop(grace=0.5)


async def test_a_head_that_does_not_finish_in_time_is_408(served: tuple[Echo, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /e HTTP/1.1\r\nhost: a\r\n")  # and nothing more
    raw = await answer(reader)
    assert status(raw) == 408 and b"within 0.5 s" in raw and app.calls == 0
    writer.close()


async def test_a_head_sent_a_byte_at_a_time_is_408_although_bytes_keep_coming(
        served: tuple[Echo, HttpServer]) -> None:
    _, server = served
    reader, writer = await connect(server)
    read = asyncio.ensure_future(answer(reader))
    head = b"GET /e HTTP/1.1\r\nhost: a\r\n" + b"x-slow: " + b"s" * 1000
    for byte in head:
        if read.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.02)  # the slow client under test: a byte every 20 ms, well inside any idle limit
    assert status(await read) == 408
    writer.close()


async def test_a_stalled_body_is_408(served: tuple[Echo, HttpServer]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")  # 7 bytes never come
    raw = await answer(reader)
    assert status(raw) == 408 and b"request body" in raw and app.calls == 0
    writer.close()


async def test_a_body_that_keeps_coming_is_not_timed_out() -> None:
    app = Echo()
    server = HttpServer(app, limits=RequestLimits(body_timeout=5.0))
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(server)
        writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: 3\r\n\r\n")
        for piece in (b"a", b"b", b"c"):
            await asyncio.sleep(0.2)  # the client under test sends its body slowly, far inside the timeout
            writer.write(piece)
        assert (await answer(reader)).endswith(b"\r\n\r\n3")
        writer.close()
    finally:
        await server.stop(grace=0.5)


async def test_hundreds_of_slow_connections_leave_a_bystander_answered(served: tuple[Echo, HttpServer]) -> None:
    _, server = served
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for i in range(300):
            reader, writer = await connect(server)
            if i % 3 == 0:
                writer.write(b"GET /e HTTP/1.1\r\nhost: a\r\nx-partial: ")  # a head that stops
            elif i % 3 == 1:
                writer.write(b"POST /e HTTP/1.1\r\nhost: a\r\ncontent-length: 900\r\n\r\nsome")  # a body that stops
            slow.append((reader, writer))  # and every third says nothing at all
        await wait_until_async(lambda: len(server._conns) >= 300, timeout=30, what="300 slow connections accepted")
        assert (await ask(server)).endswith(b"\r\n\r\n1")  # the bystander
        # The partial heads and bodies are answered 408 and closed; the silent ones are left to the idle timeout.
        answers = await asyncio.gather(*(answer(reader) for i, (reader, _) in enumerate(slow) if i % 3 != 2))
        assert len(answers) == 200 and {status(a) for a in answers} == {408}
        assert (await ask(server)).endswith(b"\r\n\r\n1")
    finally:
        for _, writer in slow:
            with contextlib.suppress(Exception):
                writer.close()
