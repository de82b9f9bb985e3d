"""One proxied exchange's progress as a state, and the request bytes kept so it can be sent again.

``ExchangeState`` replaces a handful of booleans (started, held, done, finished, aborted) whose
combinations were the real state. States are ordered, so "has the client seen a response byte" is one
comparison on the hot path; ``TRANSITIONS`` lists every legal move and ``check_transition`` enforces it::

    QUEUED ──> CONNECTING ──> SENT ──> HEAD_HELD ──> STREAMING ──> RESPONDED ──> FINISHED
      │          ^   │  ^      │ │        │                            ^
      │          └───┘  └──────┘ └────────┴──── (no body) ─────────────┤
      └──────────────── local answers, failures before a byte ─────────┘
    ABORTED from any state but FINISHED (the client went away)

CONNECTING -> CONNECTING is the next replica after a connect failure; SENT -> CONNECTING is the redial of a
stale pooled connection (the replica never saw the request); HEAD_HELD -> RESPONDED is a held head
replaced by an error answer, which the client never saw.
"""

from __future__ import annotations

from enum import IntEnum


class ExchangeState(IntEnum):
    QUEUED = 0  # parsed (or being parsed), waiting for its turn on the client connection
    CONNECTING = 1  # an upstream connection is being taken from the pool or opened
    SENT = 2  # the request is going (or went) up; no response byte yet: it may still be retried
    HEAD_HELD = 3  # the response head is in, held until the first body bytes (one write, not two)
    STREAMING = 4  # response bytes are committed to the client: no retry, no clean error any more
    RESPONDED = 5  # the response is complete; the request body may still be draining
    FINISHED = 6  # counted and released
    ABORTED = 7  # the client went away first


_S = ExchangeState
TRANSITIONS: frozenset[tuple[ExchangeState, ExchangeState]] = frozenset({
    (_S.QUEUED, _S.CONNECTING), (_S.QUEUED, _S.RESPONDED),
    (_S.CONNECTING, _S.CONNECTING), (_S.CONNECTING, _S.SENT), (_S.CONNECTING, _S.RESPONDED),
    (_S.SENT, _S.CONNECTING), (_S.SENT, _S.HEAD_HELD), (_S.SENT, _S.STREAMING), (_S.SENT, _S.RESPONDED),
    (_S.HEAD_HELD, _S.STREAMING), (_S.HEAD_HELD, _S.RESPONDED),
    (_S.STREAMING, _S.RESPONDED), (_S.STREAMING, _S.FINISHED),
    (_S.RESPONDED, _S.FINISHED),
} | {(state, _S.ABORTED) for state in _S if state < _S.FINISHED})


class TransitionError(RuntimeError):
    """A move the exchange's state machine does not allow: a bug in the proxy, never the peer's doing."""


# The same table as one bit mask per state: the check runs several times per request, and hashing an enum
# pair goes through Enum.__hash__ in Python, while indexing and shifting an IntEnum stay in C.
ALLOWED_MASKS: tuple[int, ...] = tuple(
    sum(1 << new for old, new in TRANSITIONS if old == state) for state in ExchangeState)


def check_transition(old: ExchangeState, new: ExchangeState) -> ExchangeState:
    """``new`` when ``old -> new`` is legal, else ``TransitionError``."""
    if not ALLOWED_MASKS[old] >> new & 1:
        raise TransitionError(f"exchange cannot go from {old.name} to {new.name}")
    return new


class ReplayBuffer:
    """The request body so far, kept while it is small enough to send again (a stale connection's redial,
    a replica that went away before answering). Dropped for good once a response begins or it grows past
    ``limit``: from then on the request is not replayable."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] | None = []
        self.size = 0
        self.limit = limit

    @property
    def replayable(self) -> bool:
        return self.parts is not None

    def add(self, data: bytes) -> None:
        parts = self.parts
        if parts is not None:
            self.size += len(data)
            if self.size > self.limit:
                self.parts = None
            else:
                parts.append(data)

    def drop(self) -> None:
        self.parts = None

    def replay(self) -> list[bytes]:
        """A copy of the body so far; only while ``replayable``."""
        if self.parts is None:
            raise TransitionError("the request body is no longer replayable")
        return list(self.parts)
