"""Back-pressure for one connection: why reading is paused, and waiting for the write buffer to drain.

Reading pauses for any number of reasons at once (a pipelined request waits, the upstream is slow, a
refusal stops the connection, a reader lags behind) and resumes only when the last one is lifted, so two
parts of a proxy can never resume each other's pause. Reasons are bit flags (plain ints: this runs per
request on the hot path). Writing follows the transport's ``pause_writing``/``resume_writing``.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar


class Pause:
    """Reasons to stop reading a connection (bit flags)."""

    PIPELINE = 1  # a pipelined request waits for the one before it
    UPSTREAM = 2  # the peer we forward to does not take the bytes as fast as they come
    PENDING = 4  # bytes buffered while no upstream connection is open yet
    REFUSED = 8  # a request was refused: nothing after it is read
    READER = 16  # the consumer of a streamed body reads slower than it arrives

    NAMES: ClassVar[dict[int, str]] = {PIPELINE: "pipeline", UPSTREAM: "upstream", PENDING: "pending", REFUSED: "refused", READER: "reader"}


class FlowControl:
    """Pause and resume one transport's reading by reason; track its write side and let writers drain."""

    __slots__ = ("_drain", "closed", "reasons", "transport", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reasons = 0
        self.write_paused = False
        self.closed = False  # set by the owner when the connection closes: the transport is left alone
        self._drain: asyncio.Future[None] | None = None

    @property
    def read_paused(self) -> bool:
        return self.reasons != 0

    def pause_reading(self, reason: int) -> None:
        if not self.reasons and not self.closed:
            self.transport.pause_reading()
        self.reasons |= reason

    def resume_reading(self, reason: int) -> bool:
        """Lift ``reason``; True when that was the last one and reading resumed."""
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and not self.closed:
                self.transport.resume_reading()
                return True
        return False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        """Return once the transport's write buffer is below its low-water mark (or the connection closed)."""
        if self.write_paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def close(self) -> None:
        """The connection is gone: wake a writer waiting to drain; leave the transport alone from now on."""
        self.closed = True
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def __repr__(self) -> str:
        names = [name for bit, name in Pause.NAMES.items() if self.reasons & bit]
        return f"FlowControl(paused={names}, write_paused={self.write_paused}, closed={self.closed})"
