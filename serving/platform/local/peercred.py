"""A Unix socket only the daemon's own user (and root) may use, checked twice.

The socket is bound 0600 before it listens, in a 0700 state directory; and every connection's peer is
checked with ``SO_PEERCRED`` as it is accepted, so a loosened directory or socket mode still lets no
other user drive the daemon (whoever applies a manifest runs its container command as the daemon's user).
A refused peer gets a 403 naming the rule, and the daemon logs who it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.errors import PlatformError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> PeerCredentials:
    """Who is at the other end of a connected Unix socket (the kernel's record from connect time)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


def allowed_uids() -> frozenset[int]:
    return frozenset({os.geteuid(), 0})


def private_directory(path: Path) -> None:
    """Create ``path`` as 0700, or tighten it to 0700 when it exists with group or other bits."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            path.chmod(0o700)
        except PermissionError as exc:
            raise PlatformError(f"state directory {path} is mode {mode:o} and cannot be made 0700 "
                                f"by uid {os.geteuid()}: use a state directory you own") from exc
        log.warning("state directory %s was mode %o; now 0700", path, mode)


def bind_private_socket(path: Path, backlog: int = 128) -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0600.

    The mode is set between bind and listen: before listen() every connect is refused, so there is no
    moment when the socket accepts a connection with looser bits. The caller holds the daemon's
    single-instance lock, so a file left at ``path`` is a dead predecessor's and is replaced.
    """
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class PeerCheckedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, checking each connection's peer uid before any request is served."""

    allowed: frozenset[int] = frozenset()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        try:
            peer = peer_credentials(sock)
        except (OSError, AttributeError, struct.error):
            log.warning("refused a control API connection whose peer credentials cannot be read")
            transport.close()
            return
        if peer.uid not in self.allowed:
            log.warning("refused a control API connection from uid %d (pid %d): only uid(s) %s may use it",
                        peer.uid, peer.pid, _uids(self.allowed))
            self.app = _forbidden(peer, self.allowed)


def peer_checked_protocol(allowed: frozenset[int]) -> type[PeerCheckedProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for a socket open to ``allowed`` uids."""
    return type("PeerCheckedProtocol", (PeerCheckedProtocol,), {"allowed": allowed})


def _uids(allowed: frozenset[int]) -> str:
    return ", ".join(str(u) for u in sorted(allowed))


def _forbidden(peer: PeerCredentials, allowed: frozenset[int]) -> Any:
    body = json.dumps({"error": f"forbidden: this odh daemon's control socket serves only uid(s) {_uids(allowed)}; "
                                f"you are uid {peer.uid}"}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return app
