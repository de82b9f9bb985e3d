"""A deployment's health from its objects: Ready and why not, replicas, restarts and crash loops (pure).

A crash loop is restarts that went up since the previous look while not every replica is ready: a replica
that exits at load (a corrupt model) is restarted by the platform again and again and never gets ready.
A pod the platform itself reports as waiting in ``CrashLoopBackOff`` while replicas are missing counts too,
so the first look already sees a loop that began before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.operate.inventory import Inventory, Served

CRASH_LOOP_REASON = "CrashLoopBackOff"


@dataclass(frozen=True)
class Health:
    ready: bool
    reason: str  # the Ready condition's reason (and message), or "" when Ready
    ready_replicas: int
    desired_replicas: int
    restarts: int
    new_restarts: int  # since the previous look
    crash_loop: bool

    @property
    def healthy(self) -> bool:
        return self.ready and not self.crash_loop

    @property
    def state(self) -> str:
        if self.crash_loop:
            return "crash-loop"
        return "ready" if self.ready else "not-ready"


def assess_health(served: Served, inventory: Inventory, previous_restarts: Mapping[str, int]) -> Health:
    """``served``'s health; ``previous_restarts`` is each deployment's restart total at the previous look."""
    condition = served.condition("Ready")
    ready = condition is not None and condition.status == "True"
    if ready:
        reason = ""
    elif condition is None:
        reason = "no Ready condition yet"
    else:
        reason = _why(condition.reason, condition.message) or f"Ready is {condition.status}"
    replicas = inventory.replicas.get(served.key)
    pods = [p for p in inventory.pods if p.owner == served.key]
    ready_pods = sum(1 for p in pods if p.ready)
    ready_replicas = replicas.ready if replicas is not None else ready_pods
    desired = replicas.desired if replicas is not None else len(pods)
    restarts = sum(p.restarts for p in pods)
    before = previous_restarts.get(served.key)
    # Fewer restarts than before: the pods were replaced (a new revision, a restarted platform): none new.
    new_restarts = max(0, restarts - before) if before is not None else 0
    short = ready_replicas < desired or any(not p.ready for p in pods)
    backing_off = any(p.waiting_reason == CRASH_LOOP_REASON for p in pods)
    crash_loop = short and (new_restarts > 0 or backing_off)
    if crash_loop and not reason:
        crashing = next((p for p in pods if p.waiting_reason == CRASH_LOOP_REASON or not p.ready), None)
        reason = _why(CRASH_LOOP_REASON, crashing.message if crashing else "")
    return Health(ready, reason, ready_replicas, desired, restarts, new_restarts, crash_loop)


def _why(reason: str, message: str) -> str:
    return f"{reason}: {message}" if reason and message else reason or message
