"""The project's one HTTP/1.1 core, shared by the platform gateway, the LLM-D router's server and its
engine client: framing and hop-by-hop rules, back-pressure, the upstream connection pool, the proxied
exchange's state, status phrases, the typed transport and one exception tree. Import from here."""

from serving.http.errors import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    FramingError,
    HttpError,
    OutOfStep,
    ReadTimeout,
    RequestRefused,
    UpstreamError,
)
from serving.http.exchange import ExchangeState, ReplayBuffer, TransitionError, check_transition
from serving.http.flow import FlowControl, Pause
from serving.http.framing import (
    CONSUMED,
    FRAMING,
    HOP_BY_HOP,
    LAST_CHUNK,
    RequestFraming,
    check_lookalike,
    chunk,
    connection_tokens,
    drop_named,
    last_coding_is_chunked,
    named_fields,
)
from serving.http.pool import ConnectionPool, PoolStats
from serving.http.status import REASONS, reason, status_line
from serving.http.transport import UNCONNECTED, stream_transport

__all__ = [
    "CONSUMED", "FRAMING", "HOP_BY_HOP", "LAST_CHUNK", "REASONS", "UNCONNECTED", "BadResponse", "ConnectFailed",
    "ConnectionPool", "Disconnected", "ExchangeState", "FlowControl", "FramingError", "HttpError", "OutOfStep",
    "Pause", "PoolStats", "ReadTimeout", "ReplayBuffer", "RequestFraming", "RequestRefused", "TransitionError",
    "UpstreamError", "check_lookalike", "check_transition", "chunk", "connection_tokens", "drop_named",
    "last_coding_is_chunked", "named_fields", "reason", "status_line", "stream_transport",
]
