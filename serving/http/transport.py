"""The transport, typed once: protocols start with ``UNCONNECTED`` rather than ``None``, so the type
checker needs no ``Optional`` at each use and a write before ``connection_made`` fails loudly
(asyncio's base ``Transport`` raises ``NotImplementedError`` for every operation)."""

from __future__ import annotations

import asyncio
from typing import cast

UNCONNECTED: asyncio.Transport = asyncio.Transport()


def stream_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """The transport ``connection_made`` hands a stream protocol: a read-write ``Transport`` (asyncio's and
    uvloop's TCP transports both are; uvloop's are not registered as subclasses, hence a cast, not a check)."""
    return cast(asyncio.Transport, transport)
