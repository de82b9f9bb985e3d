"""The batch endpoint's JSONL: parse ``{"custom_id", "method", "url", "body"}`` lines, render results.

Result lines follow OpenAI's batch output format:
``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": {...} | null}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

ALLOWED_URLS = ("/v1/completions", "/v1/chat/completions")


class BatchError(ValueError):
    """The batch input is unusable as a whole (the message names the line)."""


@dataclass(frozen=True, slots=True)
class BatchLine:
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


def parse_batch(data: bytes | str, max_lines: int = 50_000) -> list[BatchLine]:
    """Parse every non-blank line; raise BatchError naming the first bad line (1-based)."""
    if isinstance(data, str):
        data = data.encode()
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BatchError(f"line {number}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise BatchError(f"line {number}: must be a JSON object")
        custom_id, method, url, body = obj.get("custom_id"), obj.get("method", "POST"), obj.get("url"), obj.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            raise BatchError(f"line {number}: 'custom_id' must be a non-empty string")
        if custom_id in seen:
            raise BatchError(f"line {number}: duplicate custom_id {custom_id!r}")
        if not isinstance(method, str) or method.upper() != "POST":
            raise BatchError(f"line {number}: 'method' must be POST")
        if url not in ALLOWED_URLS:
            raise BatchError(f"line {number}: 'url' must be one of {', '.join(ALLOWED_URLS)}, got {url!r}")
        if not isinstance(body, dict):
            raise BatchError(f"line {number}: 'body' must be a JSON object")
        if body.get("stream"):
            raise BatchError(f"line {number}: streaming is not supported in a batch")
        seen.add(custom_id)
        lines.append(BatchLine(custom_id, "POST", url, body))
        if len(lines) > max_lines:
            raise BatchError(f"more than {max_lines} requests in one batch")
    if not lines:
        raise BatchError("the batch is empty: send one JSON request per line")
    return lines


def result_line(custom_id: str, status: int, body: Any, error: dict[str, Any] | None = None) -> bytes:
    """One output line (with its newline)."""
    response = None if error is not None and status == 0 else {
        "status_code": status, "request_id": uuid.uuid4().hex, "body": body}
    return orjson.dumps({"id": "batch_req_" + uuid.uuid4().hex, "custom_id": custom_id, "response": response,
                         "error": error}) + b"\n"
