"""API keys: ``KEY[:TIER[:TENANT]]`` specs, and checking an ``Authorization: Bearer KEY`` header.

A key's tier is a priority class (interactive, streaming, batch) used by flow control when the
request names none; its tenant is the flow-control quota bucket (default: the key's own prefix).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from serving.llmd.scheduler import Priority


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    tier: Priority | None = None
    tenant: str = ""


def parse_key(spec: str) -> ApiKey:
    """``sk-abc`` or ``sk-abc:batch`` or ``sk-abc:interactive:team-a``; raises ValueError when malformed."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"API key spec {spec!r}: expected KEY[:TIER[:TENANT]]")
    tier = Priority.parse(parts[1]) if len(parts) > 1 and parts[1] else None
    tenant = parts[2] if len(parts) > 2 and parts[2] else f"key-{parts[0][:6]}"
    return ApiKey(parts[0], tier, tenant)


class KeyRing:
    """The configured keys; empty means auth is off and every request is the anonymous tenant."""

    def __init__(self, specs: Iterable[str | ApiKey] = ()) -> None:
        self.keys = [s if isinstance(s, ApiKey) else parse_key(s) for s in specs]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, authorization: str | None) -> ApiKey | None:
        """The matching key, an anonymous key when auth is off, or None (answer 401)."""
        if not self.keys:
            return ApiKey("", None, "")
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found = None
        for key in self.keys:  # constant time per key; no early exit on a match
            if hmac.compare_digest(key.key.encode(), presented):
                found = key
        return found
