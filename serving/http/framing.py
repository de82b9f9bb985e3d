"""HTTP/1.1 framing and hop-by-hop rules: the one place that decides where a message ends.

The desync rule: what a proxy sends on is framed by what it parsed, never by the sender's header text.
``RequestFraming`` reads a request's framing fields as its headers go by and refuses what two parsers
could frame differently (RFC 9112 sections 3.2 and 6); llhttp (httptools) already refuses Content-Length
with Transfer-Encoding, two Content-Lengths, obsolete line folding and bare line ends. Hop-by-hop fields
(RFC 9110 7.6.1) and the fields a ``Connection`` header names are never forwarded, except that a
``Connection`` token can never remove a framing field: those are always written by us.
"""

from __future__ import annotations

from serving.http.errors import FramingError

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward (plus any the Connection field
# names). Trailer goes too: trailers are not forwarded, because bodies are re-framed.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Fields that frame a request or pick its server: always written by the sender itself.
FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
# What ``RequestFraming.field`` takes out of a request's headers (never forwarded as sent).
CONSUMED = HOP_BY_HOP | FRAMING
# Connection tokens that are options, not names of fields to remove.
_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` must not be empty: that is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def connection_tokens(value: bytes) -> tuple[bytes, ...]:
    """The lower-case tokens of one ``Connection`` header value."""
    return tuple(t.strip().lower() for t in value.split(b","))


def named_fields(tokens: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Of ``Connection`` tokens, those that name fields to drop (not ``close``/``keep-alive``/``upgrade``)."""
    return tuple(t for t in tokens if t not in _OPTIONS)


def drop_named(parts: list[bytes], names: tuple[bytes, ...]) -> list[bytes]:
    """Remove, from ``[name, ": ", value, "\\r\\n", ...]`` quads, the fields ``names`` lists."""
    kept: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i:i + 4]
    return kept


def last_coding_is_chunked(value: bytes) -> bool:
    """A response's Transfer-Encoding as llhttp reads it: chunked when that is the last coding, else the
    body ends at EOF."""
    return value.rpartition(b",")[2].strip().lower() == b"chunked"


def check_lookalike(name: bytes, lname: bytes) -> None:
    """Refuse ``Content_Length``-style names: servers that map ``_`` to ``-`` (CGI-style) would frame by
    them (nginx drops such names too)."""
    if b"_" in lname and lname.replace(b"_", b"-") in FRAMING:
        raise FramingError(f"header {name.decode('latin-1')} looks like {lname.replace(b'_', b'-').decode()}: "
                           "send the real header")


class RequestFraming:
    """One request's framing, read field by field as the headers go by; ``check`` decides at their end.

    ``field`` consumes hop-by-hop and framing fields (returns True: the caller does not forward them) and
    raises ``FramingError`` at the first field that makes the framing ambiguous.
    """

    __slots__ = ("chunked", "content_length", "host", "sized", "tokens")

    def __init__(self) -> None:
        self.chunked = False  # Transfer-Encoding: chunked
        self.content_length = 0
        self.sized = False  # a Content-Length was sent
        self.host: bytes | None = None
        self.tokens: tuple[bytes, ...] = ()  # Connection tokens, lower-case

    def field(self, lname: bytes, value: bytes) -> bool:
        """Take one header (``lname`` lower-case); True when it is a framing or hop-by-hop field."""
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                # llhttp takes any coding list ending in chunked; we decode (and forward) only chunked.
                if value.strip().lower() != b"chunked":
                    raise FramingError(f"Transfer-Encoding {value.decode('latin-1')} is not supported: send "
                                       "chunked or a Content-Length")
                self.chunked = True
            elif lname == b"connection":
                self.tokens += connection_tokens(value)
            return True
        if lname == b"host":
            if self.host is not None:
                raise FramingError("more than one Host header: send exactly one")
            self.host = value
            return True
        if lname == b"content-length":
            self.content_length = int(value)  # llhttp has validated it (digits, one header, no TE)
            self.sized = True
            return True
        return False

    def check(self, version: str, upgrade: bool | None = None) -> None:
        """The headers are all in: refuse an HTTP version we do not speak and chunked HTTP/1.0; a proxy
        passes ``upgrade`` (the parser's verdict) to refuse an upgrade with a body too."""
        if version != "1.1":
            if version != "1.0":
                raise FramingError(f"HTTP/{version} is not supported: send HTTP/1.1")
            if self.chunked:  # RFC 9112 6.1: the framing of such a message is faulty
                raise FramingError("Transfer-Encoding is not allowed in HTTP/1.0: send a Content-Length")
        if upgrade is not None:
            self.check_upgrade(upgrade)

    def check_upgrade(self, upgrade: bool) -> None:
        """A proxy's rule: llhttp hands the body of an upgrade request (and CONNECT) over as raw upgrade
        bytes, so one with a body is refused (bodiless ones go on as plain HTTP)."""
        if (upgrade or b"upgrade" in self.tokens) and (self.content_length or self.chunked):
            raise FramingError("protocol upgrade with a request body is not supported: send the request "
                               "without Upgrade")

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0
