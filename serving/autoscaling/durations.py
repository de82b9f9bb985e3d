"""Go's ``time.ParseDuration`` in Python: Knative's annotations and ConfigMap keys are Go durations.

``"60s"``, ``"1m30s"``, ``"1.5h"``, ``"500ms"``, ``"0"``; a bare number other than 0 is rejected, as Go
rejects it, so a manifest that works with Knative means the same thing here.
"""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in the Go duration ``text``; ``ValueError`` with Go's wording when it is not one."""
    body = text.strip()
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _TERM.match(body, pos)
        if match is None:
            missing_unit = re.fullmatch(r"[\d.]+", body[pos:]) is not None
            raise ValueError(f'time: {"missing unit in" if missing_unit else "invalid"} duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """A short Go-style spelling of ``seconds`` for messages: ``1h0m0s`` becomes ``3600s``; whole seconds stay whole."""
    return f"{seconds:g}s"
