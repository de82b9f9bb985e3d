"""A desync corpus against the LLM-D router: attackers send framing tricks (hop-by-hop lists naming the
framing headers in any case and order, duplicate or conflicting lengths, Content-Length with
Transfer-Encoding, codings, obsolete line folding, bare LF, chunk extensions, requests hidden in bodies)
while bystanders send normal completions over keep-alive connections sharing the router's engine pool.
Every bystander must get the answer to its own prompt: the engine echoes each prompt back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from support import StreamServer, serving_router


class EchoEngine(StreamServer):
    """A keep-alive engine whose completion text is the prompt it was sent."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            prompt = orjson.loads(await reader.readexactly(length)).get("prompt")
            data = orjson.dumps({"choices": [{"text": prompt}]})
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(data), data))


@pytest.fixture
async def router_port() -> AsyncIterator[int]:
    async with EchoEngine() as first, EchoEngine() as second, \
            serving_router([first.port, second.port]) as (_, server):
        yield server.port


def completion(prompt: str) -> bytes:
    return orjson.dumps({"model": "m", "prompt": prompt, "max_tokens": 1})


SMUGGLED = completion("SMUGGLED")
INNER = b"POST /v1/completions HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED)
OUTER = completion("attacker")


def corpus() -> list[bytes]:
    """Attack requests, each followed by a hidden second request."""
    attacks = []
    framing = ["Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding", "Host", "TE"]
    for names in itertools.chain(itertools.permutations(framing[:1] + framing[3:5], 2), ([n] for n in framing)):
        listed = ", ".join(["keep-alive", *names]).encode()
        attacks.append(b"POST /v1/completions HTTP/1.1\r\nhost: r\r\nconnection: %s\r\ncontent-length: %d\r\n\r\n%s%s"
                       % (listed, len(OUTER), OUTER, INNER))
        attacks.append(b"POST /v1/completions HTTP/1.1\r\nhost: r\r\nconnection: %s\r\ntransfer-encoding: chunked\r\n\r\n"
                       b"%x\r\n%s\r\n0\r\n\r\n%s" % (listed, len(OUTER), OUTER, INNER))
    head = b"POST /v1/completions HTTP/1.1\r\nhost: r\r\n"
    for framing_lines in (b"content-length: %d\r\ntransfer-encoding: chunked\r\n" % len(OUTER),
                          b"transfer-encoding: chunked\r\ncontent-length: %d\r\n" % len(OUTER),
                          b"content-length: %d\r\ncontent-length: %d\r\n" % (len(OUTER), len(OUTER) + len(INNER)),
                          b"content-length: %d\r\ncontent-length: %d\r\n" % (len(OUTER), len(OUTER)),
                          b"content-length: %d, %d\r\n" % (len(OUTER), len(OUTER)),
                          b"transfer-encoding: gzip, chunked\r\n", b"transfer-encoding: chunked, identity\r\n",
                          b"transfer-encoding: xchunked\r\n", b"transfer-encoding:\r\n chunked\r\n",
                          b"transfer-encoding : chunked\r\n", b"transfer-encoding:\tchunked\r\ncontent-length: 3\r\n",
                          b"x-fold: a\r\n content-length: 0\r\ncontent-length: %d\r\n" % len(OUTER),
                          b"content-length: %d\ntransfer-encoding: chunked\r\n" % len(OUTER)):
        attacks.append(head + framing_lines + b"\r\n%x\r\n%s\r\n0\r\n\r\n%s" % (len(OUTER), OUTER, INNER))
    attacks.append(head + b"transfer-encoding: chunked\r\n\r\n%x;ext=\"%s\"\r\n%s\r\n0\r\n\r\n%s"
                   % (len(OUTER), b"x" * 20, OUTER, INNER))  # a chunk extension
    attacks.append(head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\ncontent-length: 0\r\n\r\n%s"
                   % (len(OUTER), OUTER, INNER))  # framing in a trailer
    attacks.append(b"POST /v1/completions HTTP/1.1\nhost: r\ncontent-length: %d\n\n%s%s" % (len(OUTER), OUTER, INNER))
    attacks.append(b"POST /v1/completions HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s"
                   % (len(OUTER), OUTER, INNER))
    return attacks


async def attack(port: int, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(65536), 5)  # its own answer (or refusal); not what is checked
    finally:
        writer.close()


async def bystander(port: int, who: int, rounds: int) -> list[tuple[str, str]]:
    """(prompt sent, text received) for each of ``rounds`` completions on one keep-alive connection."""
    seen = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for i in range(rounds):
            prompt = f"bystander {who} request {i}"
            response = await client.post("/v1/completions", content=completion(prompt))
            seen.append((prompt, response.json()["choices"][0]["text"] if response.status_code == 200 else
                         f"{response.status_code} {response.text}"))
    return seen


async def test_every_bystander_gets_its_own_answer_while_attackers_send_the_corpus(router_port: int) -> None:
    attacks = corpus()
    assert len(attacks) > 40

    async def attackers() -> None:
        for _ in range(3):
            await asyncio.gather(*(attack(router_port, raw) for raw in attacks))

    results = await asyncio.gather(attackers(), *(bystander(router_port, who, 60) for who in range(4)))
    crossed = [(sent, got) for seen in results[1:] for sent, got in seen if sent != got]
    assert not crossed, crossed[:5]
    assert sum(len(seen) for seen in results[1:]) == 240
