"""Knative-style conditions: a "living" condition set whose ``Ready`` follows its dependents.

As knative.dev/pkg/apis ``NewLivingConditionSet``: Ready is True when every dependent is True; False
when one is False (that one lends its reason and message); otherwise Unknown (the first Unknown one
lends them). A condition keeps its ``lastTransitionTime`` while its status does not change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

READY = "Ready"
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def condition(kind: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {"type": kind, "status": status}
    if reason:
        made["reason"] = reason
    if message:
        made["message"] = message
    return made


def ready_from(dependents: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``Ready`` condition a living condition set derives from its dependents."""
    for wanted in (FALSE, UNKNOWN):
        blocking = next((c for c in dependents if c["status"] == wanted), None)
        if blocking is not None:
            return condition(READY, wanted, blocking.get("reason"), blocking.get("message"))
    return condition(READY, TRUE)


def status_of(conditions: list[dict[str, Any]] | None, kind: str) -> str:
    """The status of condition ``kind``; a missing condition is Unknown, as Knative reads it."""
    for cond in conditions or []:
        if cond.get("type") == kind:
            return str(cond.get("status", UNKNOWN))
    return UNKNOWN


def find(conditions: list[dict[str, Any]] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def stamped(conditions: list[dict[str, Any]], previous: list[dict[str, Any]] | None, now: datetime) -> list[dict[str, Any]]:
    """``conditions`` sorted by type, each with a ``lastTransitionTime``: the previous one while its
    status is unchanged, else ``now``."""
    stamp = timestamp(now)
    old = {c.get("type"): c for c in previous or []}
    out = []
    for cond in conditions:
        before = old.get(cond["type"])
        kept = before is not None and before.get("status") == cond["status"] and before.get("lastTransitionTime")
        out.append({**cond, "lastTransitionTime": before["lastTransitionTime"] if kept and before else stamp})
    return sorted(out, key=lambda c: c["type"])


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
