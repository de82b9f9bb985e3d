"""Filters: drop pods that must not (or should not) get a request. Each has one job.

``kind`` says what an empty result means: "availability" filters (health, role) leave no pod that can
serve at all (NoPods, 503); "capacity" filters leave none with room (NoCapacity, 429).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Protocol

from .types import ROLES, PodState, SchedRequest


class Filter(Protocol):
    name: str
    kind: str

    def filter(self, request: SchedRequest, pods: list[PodState]) -> list[PodState]: ...


class HealthyFilter:
    """Only healthy pods that are not draining (a draining pod finishes what it has, takes nothing new)."""

    name = "healthy"
    kind: ClassVar[str] = "availability"

    def filter(self, request: SchedRequest, pods: list[PodState]) -> list[PodState]:
        return [p for p in pods if p.healthy and not p.draining]


class RoleFilter:
    """Only pods whose role is in ``roles`` (a decode profile takes decode+both; a prefill one, prefill)."""

    name = "role"
    kind: ClassVar[str] = "availability"

    def __init__(self, roles: Iterable[str] = ("decode", "both")) -> None:
        self.roles = frozenset(roles)
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)} (known: {', '.join(ROLES)})")

    def filter(self, request: SchedRequest, pods: list[PodState]) -> list[PodState]:
        return [p for p in pods if p.role in self.roles]


class LowQueueFilter:
    """Drop pods whose engine queue is longer than ``threshold``, unless that would drop every pod.

    Soft on purpose: when all pods are busy the scorers still choose the best of them, and shedding
    is flow control's job, not a filter's.
    """

    name = "low-queue"
    kind: ClassVar[str] = "capacity"

    def __init__(self, threshold: int = 128) -> None:
        self.threshold = threshold

    def filter(self, request: SchedRequest, pods: list[PodState]) -> list[PodState]:
        kept = [p for p in pods if p.waiting <= self.threshold]
        return kept or pods


class CapacityFilter:
    """Hard limit: drop pods at or over ``max_kv_usage`` or ``max_waiting``; may leave none (NoCapacity)."""

    name = "capacity"
    kind: ClassVar[str] = "capacity"

    def __init__(self, max_kv_usage: float = 1.0, max_waiting: int | None = None) -> None:
        self.max_kv_usage = max_kv_usage
        self.max_waiting = max_waiting

    def filter(self, request: SchedRequest, pods: list[PodState]) -> list[PodState]:
        return [
            p
            for p in pods
            if p.kv_usage < self.max_kv_usage and (self.max_waiting is None or p.waiting < self.max_waiting)
        ]
