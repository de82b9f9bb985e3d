"""What the daemon writes into an object's status when it cannot act on it.

Reconciliation is per object: an object whose reconcile raises is marked ``Ready=False`` with the
reason and message (and keeps whatever of it already runs); the others go on. Stored objects the daemon
does not act on (a kind users cannot apply, or a child whose owner reference is not a user object:
e.g. from an older version's database) are marked ``Ignored`` so ``odh delete`` can be pointed at them.
"""

from __future__ import annotations

from typing import Any

from serving.errors import AdmissionError
from serving.kserve.status import stamp_transitions
from serving.platform.local.store import now

INVALID_SPEC = "InvalidSpec"
RECONCILE_FAILED = "ReconcileFailed"


def describe_failure(exc: Exception) -> tuple[str, str]:
    """``(reason, message)`` for a status condition: admission errors name their fields."""
    if isinstance(exc, AdmissionError):
        return INVALID_SPEC, "; ".join(str(e) for e in exc.errors)
    return RECONCILE_FAILED, f"{type(exc).__name__}: {exc}"


def failed_status(previous: Any, reason: str, message: str, generation: Any = None) -> dict[str, Any]:
    """``previous`` with its Ready condition set False for ``reason``; the other conditions, the URL and
    the model status stay as they were (what runs keeps running)."""
    previous = previous if isinstance(previous, dict) else {}
    kept = [c for c in previous.get("conditions") or [] if isinstance(c, dict) and c.get("type") != "Ready"]
    ready = {"type": "Ready", "status": "False", "reason": reason, "message": message}
    stamp_transitions([ready], {"conditions": [c for c in previous.get("conditions") or [] if isinstance(c, dict)]},
                      now())
    status = {**previous, "conditions": sorted([*kept, ready], key=lambda c: str(c.get("type")))}
    if isinstance(generation, int):
        status["observedGeneration"] = generation
    return status


def ignored_status(previous: Any, kind: str, namespace: str, name: str, why: str) -> dict[str, Any]:
    """The status of a stored object the daemon does not act on, saying how to remove it."""
    previous = previous if isinstance(previous, dict) else {}
    where = f" -n {namespace}" if namespace else ""
    message = f"{why}; the platform ignores it: remove it with `odh delete {kind} {name}{where}`"
    kept = [c for c in previous.get("conditions") or [] if isinstance(c, dict) and c.get("type") != "Ignored"]
    condition = {"type": "Ignored", "status": "True", "reason": "NotManaged", "message": message}
    stamp_transitions([condition], {"conditions": [c for c in previous.get("conditions") or [] if isinstance(c, dict)]},
                      now())
    return {**previous, "conditions": [*kept, condition]}
