"""The gateway's route table: which ready replicas serve which InferenceService, and how a request finds them.

Pure data and string handling (no sockets), so every routing decision is unit-testable. The daemon calls
``set``/``remove`` as replicas become ready or go away; the gateway calls ``resolve`` once per request and
``RouteTarget.pick``/``release`` around each upstream attempt. Everything runs on one event loop, so no
locks: each mutation replaces or updates whole entries between callbacks.

Routing rules, first match wins:

1. ``/serving/{namespace}/{name}/rest`` -> ``/rest`` (the ``status.url`` the daemon publishes);
2. a ``Host`` of ``{name}.{namespace}.<anything>`` -> the path unchanged (Knative/Istio style);
3. ``/v1/models/{name}[:verb]`` and ``/v2/models/{name}[/...]`` -> the path unchanged, when exactly one
   InferenceService is called ``name`` (the one in ``default`` wins a tie).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from serving.autoscaling.meter import ConcurrencyMeter

PREFIX = "/serving/"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready replica: a model server listening on ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class RouteTarget:
    """One InferenceService's ready endpoints and how many requests each has in flight.

    The target object lives as long as its route, so counters survive endpoint changes: an endpoint
    that stays keeps its count, a request on an endpoint that left releases into nothing.
    """

    __slots__ = ("_next", "endpoints", "key", "name", "namespace", "outstanding")

    def __init__(self, namespace: str, name: str, endpoints: Sequence[Endpoint] = ()) -> None:
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.endpoints: tuple[Endpoint, ...] = ()
        self.outstanding: dict[Endpoint, int] = {}
        self._next = 0
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        unique = tuple(dict.fromkeys(endpoints))
        self.outstanding = {ep: self.outstanding.get(ep, 0) for ep in unique}
        self.endpoints = unique
        if self._next >= max(len(unique), 1):
            self._next = 0

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint with the fewest requests in flight (ties: round robin), counted as one more.

        ``exclude`` skips endpoints already tried for this request. None when nothing is left.
        """
        endpoints = self.endpoints
        n = len(endpoints)
        if n == 1 and not exclude:  # the common case: one replica
            ep = endpoints[0]
            self.outstanding[ep] += 1
            return ep
        best: Endpoint | None = None
        best_load = best_index = 0
        start = self._next
        outstanding = self.outstanding
        for offset in range(n):
            index = (start + offset) % n
            ep = endpoints[index]
            if ep in exclude:
                continue
            load = outstanding[ep]
            if best is None or load < best_load:
                best, best_load, best_index = ep, load, index
                if load == 0:
                    break
        if best is None:
            return None
        # Start the next scan after the winner, so equal loads rotate.
        self._next = (best_index + 1) % n
        outstanding[best] = best_load + 1
        return best

    @property
    def in_flight(self) -> int:
        """Requests in flight on this route: the one count the gateway's metrics (and, later, per-revision
        concurrency) read; ``pick`` adds to it and ``release`` takes from it, nothing else does."""
        return sum(self.outstanding.values())

    def release(self, endpoint: Endpoint) -> None:
        """One request on ``endpoint`` finished (or was never sent)."""
        count = self.outstanding.get(endpoint)
        if count:
            self.outstanding[endpoint] = count - 1

    def __repr__(self) -> str:
        return f"RouteTarget({self.key}, {[str(e) for e in self.endpoints]})"


@dataclass(frozen=True)
class Backend:
    """One revision behind a route, with its share of the route's traffic (see ``RouteTable.set_split``)."""

    revision: str  # a Knative revision name, or a Standard Deployment name
    percent: int  # 0..100; a route's backends sum to 100 (0-percent backends are reachable by tag only)
    endpoints: tuple[Endpoint, ...]
    tag: str | None = None  # "latest", "prev", or a user's tag
    hold: bool = True  # False: no ready replica is an immediate 503 (a failed or unknown revision)


class RouteTable:
    """InferenceService routes by ``(namespace, name)``, with an index by name for rule 3."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, str], RouteTarget] = {}
        self._by_name: dict[str, RouteTarget | None] = {}
        self._meters: dict[tuple[str, str], ConcurrencyMeter] = {}
        # (namespace, revision): a request waits for a revision without a ready replica (the daemon's KPA).
        self.on_activate: Callable[[str, str], None] | None = None

    def set_split(self, namespace: str, name: str, backends: Sequence[Backend]) -> None:
        """Route ``namespace/name`` to ``backends`` by their percent.

        Interim: the endpoints of every backend with traffic share the route (no weights, no tags, no
        holding) until the gateway's split and activator land.
        """
        self.set(namespace, name, [ep for b in backends if b.percent > 0 for ep in b.endpoints])

    def meter(self, namespace: str, revision: str) -> ConcurrencyMeter:
        """The revision's request meter (created on first use)."""
        meter = self._meters.get((namespace, revision))
        if meter is None:
            meter = self._meters[(namespace, revision)] = ConcurrencyMeter(time.monotonic())
        return meter

    def set(self, namespace: str, name: str, endpoints: Sequence[Endpoint]) -> None:
        """Replace the ready endpoints of ``namespace/name``; ``[]`` means known but none ready (503)."""
        target = self._targets.get((namespace, name))
        if target is None:
            self._targets[(namespace, name)] = RouteTarget(namespace, name, endpoints)
            self._reindex(name)
        else:
            target.update(endpoints)

    def remove(self, namespace: str, name: str) -> None:
        if self._targets.pop((namespace, name), None) is not None:
            self._reindex(name)

    def targets(self) -> list[RouteTarget]:
        """Every route's target (a snapshot: safe while routes change)."""
        return list(self._targets.values())

    def get(self, namespace: str, name: str) -> RouteTarget | None:
        return self._targets.get((namespace, name))

    def _reindex(self, name: str) -> None:
        candidates = [t for (ns, n), t in self._targets.items() if n == name]
        if len(candidates) == 1:
            self._by_name[name] = candidates[0]
        elif candidates:
            # Ambiguous: only the default namespace may claim the bare model name.
            self._by_name[name] = self._targets.get((DEFAULT_NAMESPACE, name))
        else:
            self._by_name.pop(name, None)

    def resolve(self, path: str, host: str | None) -> tuple[RouteTarget | None, str]:
        """``(target, upstream path)`` for a request target (path plus query) and Host header.

        The target is None when no rule matches; its ``endpoints`` are empty when none is ready.
        """
        targets = self._targets
        if path.startswith(PREFIX):
            namespace, sep, rest = path[len(PREFIX):].partition("/")
            if sep:
                name, rest = _split_segment(rest)
                target = targets.get((namespace, name))
                if target is not None:
                    if not rest.startswith("/"):
                        rest = "/" + rest  # "" or "?query"
                    return target, rest
        if host:
            labels = host.lower().split(".", 2)
            if len(labels) == 3:
                target = targets.get((labels[1], labels[0]))
                if target is not None:
                    return target, path
        if path.startswith(("/v2/models/", "/v1/models/")):
            name = _model_name(path[11:])
            if name:
                target = self._by_name.get(name)
                if target is not None:
                    return target, path
        return None, path

    def snapshot(self) -> dict[str, list[str]]:
        """``{"namespace/name": ["host:port", ...]}`` for status pages and tests."""
        return {t.key: [str(e) for e in t.endpoints] for t in self._targets.values()}

    def __len__(self) -> int:
        return len(self._targets)


def _split_segment(rest: str) -> tuple[str, str]:
    """Split ``name/more?q`` (or ``name?q``) into the first path segment and what follows it."""
    for index, char in enumerate(rest):
        if char == "/" or char == "?":
            return rest[:index], rest[index:]
    return rest, ""


def _model_name(rest: str) -> str:
    """The model name at the start of ``rest``: up to ``/``, ``:`` (a V1 verb) or ``?``."""
    for index, char in enumerate(rest):
        if char == "/" or char == ":" or char == "?":
            return rest[:index]
    return rest
