"""Reason phrases and status lines, once for every server and proxy in the project."""

from __future__ import annotations

REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created", 202: b"Accepted",
    204: b"No Content", 301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified",
    307: b"Temporary Redirect", 308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized",
    403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    409: b"Conflict", 413: b"Content Too Large", 415: b"Unsupported Media Type", 422: b"Unprocessable Content",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 499: b"Client Closed Request",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

_STATUS_LINES: dict[int, bytes] = {}


def reason(status: int) -> bytes:
    """The reason phrase for ``status`` (``Unknown`` for codes outside the table: the phrase is advisory)."""
    return REASONS.get(status, b"Unknown")


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, built once per code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason(status))
    return line
