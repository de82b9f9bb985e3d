"""Idle keep-alive connections to upstreams, by key (an endpoint): one pool object for every client.

LIFO per key: the warmest connection first, the least likely to have been closed by its server. A
connection goes back only when it is open and in step (its bytes lined up with its requests: a second
response, talk while idle or a response that ended before its request did all put it out of step), only
while the key holds fewer than ``max_idle``, and it is not handed out again after ``keepalive_expiry``
seconds idle. Pure bookkeeping: the owner opens connections and calls ``close`` on what the pool drops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Poolable(Protocol):
    """What the pool needs of a connection."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=Poolable)


@dataclass(slots=True)
class PoolStats:
    """What happened to connections offered to and taken from the pool."""

    reused: int = 0  # handed out from the idle list
    stored: int = 0  # accepted back
    expired: int = 0  # dropped on take: idle past keepalive_expiry
    dead: int = 0  # dropped: closed by the server while idle (or before it came back)
    full: int = 0  # dropped on put: the key already held max_idle
    not_reusable: int = 0  # dropped on put: the server said close, or its bytes were out of step


class ConnectionPool(Generic[K, C]):
    """Idle connections by key; ``take``/``put``/``forget``, and ``close`` for shutdown."""

    def __init__(self, *, max_idle: int, keepalive_expiry: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle {max_idle}: must be 0 or more")
        if keepalive_expiry is not None and keepalive_expiry <= 0:
            raise ValueError(f"keepalive_expiry {keepalive_expiry}: must be positive, or None for no expiry")
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.clock = clock
        self.stats = PoolStats()
        self.closed = False
        self._idle: dict[K, list[tuple[C, float]]] = {}

    def take(self, key: K) -> C | None:
        """The warmest usable idle connection for ``key``, or None (the caller opens one)."""
        idle = self._idle.get(key)
        if not idle:
            return None
        expiry = self.keepalive_expiry
        cutoff = self.clock() - expiry if expiry is not None else None
        stats = self.stats
        while idle:
            conn, since = idle.pop()
            if conn.closed:
                stats.dead += 1
            elif cutoff is not None and since < cutoff:
                stats.expired += 1
                conn.close()
            else:
                stats.reused += 1
                return conn
        return None

    def put(self, key: K, conn: C, reusable: bool = True) -> bool:
        """Offer ``conn`` back; True when kept. One that is not kept is closed here. ``reusable`` is the
        owner's verdict: False when the server said close or the connection got out of step."""
        stats = self.stats
        if conn.closed:
            stats.dead += 1
            return False
        if not reusable:
            stats.not_reusable += 1
            conn.close()
            return False
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if self.closed or len(idle) >= self.max_idle:
            stats.full += 1
            conn.close()
            return False
        idle.append((conn, self.clock() if self.keepalive_expiry is not None else 0.0))
        stats.stored += 1
        return True

    def forget(self, key: K, conn: C) -> None:
        """``conn`` closed while idle: take it off the list now rather than at the next ``take``."""
        idle = self._idle.get(key)
        if idle:
            for index, (held, _) in enumerate(idle):
                if held is conn:
                    del idle[index]
                    self.stats.dead += 1
                    return

    def idle(self, key: K) -> list[C]:
        """The idle connections held for ``key``, coldest first (a copy)."""
        return [conn for conn, _ in self._idle.get(key, ())]

    def idle_count(self, key: K | None = None) -> int:
        """Idle connections held for ``key`` (all keys when None)."""
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(conns) for conns in self._idle.values())

    def close(self) -> None:
        """Close every idle connection and keep none from now on."""
        self.closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                conn.close()
