"""Flow control: which requests run now, which wait, which are turned away.

A pure state machine the async router drives; it never sleeps and owns no clock (``now`` is passed
in). The router calls ``admit`` on arrival, dispatches on ``Admit``, parks the request on ``Queue``,
answers ``Reject`` (429 for shedding, 503 for a missed deadline); it calls ``next_ready`` whenever
capacity may have freed (a response finished, a metrics scrape) and ``expire`` on a timer.

Ordering is priority class first, then arrival. Sheddable classes (batch by default) never queue:
when saturated they are rejected at once so the client backs off, while interactive and streaming
requests wait until capacity frees up or their deadline passes.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .types import PodState, Priority, SchedRequest


@dataclass(frozen=True, slots=True)
class Admit:
    """Dispatch now; the request counts against its tenant's quota until ``release``."""


@dataclass(frozen=True, slots=True)
class Queue:
    """Parked; ``position`` is its place in line at the time of the answer (0 = next)."""

    position: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Turned away. ``reason`` is a short code; ``status`` is the HTTP status the router should send."""

    reason: str
    message: str = ""

    @property
    def status(self) -> int:
        return 503 if self.reason == "deadline" else 429


Verdict = Admit | Queue | Reject


@dataclass(slots=True)
class FlowControlConfig:
    max_queue: int = 1024
    # Used when a request carries no deadline of its own, in seconds after arrival.
    default_queue_timeout_s: float = 30.0
    sheddable: frozenset[Priority] = frozenset({Priority.BATCH})
    # Per-tenant in-flight limits; tenants not listed get ``default_tenant_quota`` (None = unlimited).
    tenant_quotas: dict[str, int] = field(default_factory=dict)
    default_tenant_quota: int | None = None
    # A pod is saturated when its engine queue or KV usage crosses these; all pods saturated = shed.
    saturation_max_waiting: int = 16
    saturation_kv_threshold: float = 0.95


def pod_saturated(pod: PodState, config: FlowControlConfig) -> bool:
    return pod.waiting >= config.saturation_max_waiting or pod.kv_usage >= config.saturation_kv_threshold


def is_saturated(pods: Iterable[PodState], config: FlowControlConfig) -> bool:
    """True when every serving pod is over its load threshold (or there is none to serve)."""
    serving = [p for p in pods if p.healthy and not p.draining]
    return all(pod_saturated(p, config) for p in serving)


@dataclass(slots=True)
class _Entry:
    key: tuple[int, int]
    request: SchedRequest
    deadline: float


class FlowController:
    """Admission, quotas, a bounded priority queue with deadlines, and shedding."""

    def __init__(self, config: FlowControlConfig | None = None) -> None:
        self.config = config or FlowControlConfig()
        self._seq = itertools.count()
        self._queue: list[_Entry] = []  # sorted by (priority, arrival); small, so insort is fine
        self._queued: dict[int, _Entry] = {}  # id(request) -> entry
        self._in_flight: set[int] = set()
        self._tenant_in_flight: dict[str, int] = {}

    # -- observability --------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def tenant_in_flight(self, tenant: str) -> int:
        return self._tenant_in_flight.get(tenant, 0)

    def queued(self) -> list[SchedRequest]:
        return [e.request for e in self._queue]

    # -- transitions ----------------------------------------------------------------------------
    def admit(self, req: SchedRequest, now: float, *, saturated: bool = False) -> Verdict:
        """Decide a newly arrived request. ``saturated``: see ``is_saturated`` (the caller knows the pods)."""
        if req.deadline is not None and req.deadline <= now:
            return Reject("deadline", "the request's deadline passed before it was admitted")
        quota_ok = self._under_quota(req.tenant)
        # Never overtake a queued request of the same or a higher class that could run now.
        blocked = any(
            e.request.priority <= req.priority and self._under_quota(e.request.tenant) for e in self._queue
        )
        if not saturated and quota_ok and not blocked:
            self._start(req)
            return Admit()
        if req.priority in self.config.sheddable:
            if not quota_ok:
                return Reject("quota", f"tenant {req.tenant!r} is at its concurrency quota")
            return Reject("saturated", "all engines are saturated; sheddable request rejected, retry later")
        if len(self._queue) >= self.config.max_queue:
            return Reject("queue_full", f"the queue is full ({self.config.max_queue} requests)")
        deadline = req.deadline if req.deadline is not None else now + self.config.default_queue_timeout_s
        entry = _Entry((int(req.priority), next(self._seq)), req, deadline)
        index = bisect.bisect(self._queue, entry.key, key=lambda e: e.key)
        self._queue.insert(index, entry)
        self._queued[id(req)] = entry
        return Queue(index)

    def release(self, req: SchedRequest) -> None:
        """The request finished (or its client left): free its quota slot, or drop it from the queue."""
        rid = id(req)
        if rid in self._in_flight:
            self._in_flight.discard(rid)
            count = self._tenant_in_flight.get(req.tenant, 0) - 1
            if count > 0:
                self._tenant_in_flight[req.tenant] = count
            else:
                self._tenant_in_flight.pop(req.tenant, None)
        elif rid in self._queued:
            self._queue.remove(self._queued.pop(rid))

    def next_ready(self, now: float, capacity_fn: Callable[[], int]) -> list[SchedRequest]:
        """Pop, in order, up to ``capacity_fn()`` queued requests that may run now; they become in flight.

        ``capacity_fn`` is called once and only when something waits (it may read pod metrics).
        Requests whose tenant is at quota are skipped (not blocking others); expired ones are left for
        ``expire`` so that the router answers them with the right reason.
        """
        if not self._queue:
            return []
        slots = capacity_fn()
        ready: list[SchedRequest] = []
        if slots <= 0:
            return ready
        keep: list[_Entry] = []
        for entry in self._queue:
            if len(ready) < slots and entry.deadline > now and self._under_quota(entry.request.tenant):
                del self._queued[id(entry.request)]
                self._start(entry.request)
                ready.append(entry.request)
            else:
                keep.append(entry)
        self._queue = keep
        return ready

    def expire(self, now: float) -> list[tuple[SchedRequest, Reject]]:
        """Remove and return queued requests whose deadline has passed."""
        expired = [e for e in self._queue if e.deadline <= now]
        if not expired:
            return []
        self._queue = [e for e in self._queue if e.deadline > now]
        out = []
        for entry in expired:
            del self._queued[id(entry.request)]
            out.append((entry.request, Reject("deadline", "waited in the queue past its deadline")))
        return out

    # -- internals ------------------------------------------------------------------------------
    def _quota(self, tenant: str) -> int | None:
        return self.config.tenant_quotas.get(tenant, self.config.default_tenant_quota)

    def _under_quota(self, tenant: str) -> bool:
        quota = self._quota(tenant)
        return quota is None or self._tenant_in_flight.get(tenant, 0) < quota

    def _start(self, req: SchedRequest) -> None:
        self._in_flight.add(id(req))
        self._tenant_in_flight[req.tenant] = self._tenant_in_flight.get(req.tenant, 0) + 1


def free_slots(pods: Sequence[PodState], config: FlowControlConfig) -> int:
    """A simple ``capacity_fn``: how many more requests the unsaturated pods can take before saturating."""
    total = 0
    for pod in pods:
        if pod.healthy and not pod.draining and not pod_saturated(pod, config):
            total += max(1, config.saturation_max_waiting - pod.waiting)
    return total
