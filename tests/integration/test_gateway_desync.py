"""Request smuggling and response desync through the gateway: every client gets its own answer.

The upstream framing is always the gateway's own: a header named in ``Connection`` cannot remove
Content-Length, Transfer-Encoding or Host; ambiguous framing is refused with 400; an upstream connection
whose responses do not line up with its requests is closed, never pooled.
"""

from __future__ import annotations

import socket
import threading

import pytest

from serving.platform.local.routes import Endpoint
from support import wait_until
from test_gateway import GatewayUnderTest, _read_request, gw, raw_upstream  # noqa: F401  (gw: fixture)

pytestmark = pytest.mark.integration


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


class _PathEcho:
    """A raw replica that answers each request it parses with that request's path, and keeps every head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        while (head := _read_request(conn, buffer)) is not None:
            with self.lock:
                self.heads.append(head)
            path = head.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(path), path))


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
        heads = wait_until(lambda: list(replica.heads) if len(replica.heads) >= 6 else None, what="six requests")
    first = heads[0].lower()
    assert first.startswith(b"post /v1/models/iris:predict ")
    assert b"\r\ncontent-length: %d" % len(smuggled) in first  # the gateway framed the body itself
    assert not any(b"SMUGGLED" in head for head in heads)
