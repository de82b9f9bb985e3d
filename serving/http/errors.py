"""The HTTP core's exceptions, one tree for the servers and the upstream client::

    HttpError                     anything this package raises
    ├── RequestRefused            a client's request is answered with ``status`` instead of being served
    │   └── FramingError          ambiguous or unsupported framing (400): the inputs behind request smuggling
    └── UpstreamError             an upstream (replica, engine) failed before its response was complete
        ├── ConnectFailed         no connection could be opened: nothing was sent, another upstream may try
        ├── ReadTimeout           no byte from the upstream for the read timeout
        ├── Disconnected          closed or reset before the response was complete
        └── BadResponse           bytes that are not valid HTTP/1.1
            └── OutOfStep         bytes that answer no request in flight (a second response, talk while idle)

``RequestRefused`` is raised from parser callbacks to stop parsing a connection; its ``status`` and
``message`` become the answer. ``ConnectFailed`` is the one upstream failure that is always safe to retry
elsewhere; ``Disconnected`` is safe only when no response byte came and the request can be replayed.
"""

from __future__ import annotations


class HttpError(Exception):
    """Base of every exception the HTTP core raises."""


class RequestRefused(HttpError):
    """The request is answered with ``status`` (400, 408, 413, 431) and the connection then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FramingError(RequestRefused):
    """Framing two parsers could read differently, or a coding we do not decode: always 400."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class UpstreamError(HttpError):
    """The upstream could not be reached, or failed before the response was complete."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unreachable, connect timeout): nothing was sent."""


class ReadTimeout(UpstreamError):
    """No byte from the upstream for the read timeout."""


class Disconnected(UpstreamError):
    """The upstream closed or reset the connection before the response was complete."""


class BadResponse(UpstreamError):
    """The upstream's bytes were not valid HTTP/1.1."""


class OutOfStep(BadResponse):
    """Bytes that answer no request in flight: the connection is out of step and is never reused."""
