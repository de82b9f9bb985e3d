"""The gateway's route table: which revisions serve which InferenceService, and how a request finds them.

Pure data and string handling (no sockets), so every routing decision is unit-testable. The daemon calls
``set_split`` (or ``set``) and ``remove`` as revisions and replicas come and go; the gateway calls
``resolve`` once per request, ``Route.choose`` for the revision and ``RouteTarget.pick``/``release``
around each upstream attempt. Everything runs on one event loop, so no locks.

A *route* (``namespace/name``: an InferenceService) has *backends*: revisions with a share of its traffic.
Each revision is one ``RouteTarget`` (its ready endpoints, in-flight counts, request meter and the
activator's queue), keyed by ``(namespace, revision)`` and shared by every route that points at it, so
its counts see every request of the revision. A target no route points at any more is dropped.

Routing rules, first match wins:

1. ``/serving/{namespace}/{name}/rest`` -> ``/rest`` (the ``status.url`` the daemon publishes);
2. a ``Host`` of ``{name}.{namespace}.<anything>`` (or ``{name}-predictor.{namespace}.<anything>``, the
   Knative Service's own host) -> the path unchanged;
3. ``/v1/models/{name}[:verb]`` and ``/v2/models/{name}[/...]`` -> the path unchanged, when exactly one
   InferenceService is called ``name`` (the one in ``default`` wins a tie).

Tag routes (Knative's tag routing; KServe's ``serving.kserve.io/enable-tag-routing`` names the tags
``latest`` and ``prev``): a backend with ``tag`` is also the route ``{tag}-{name}``, pinned to its revision
and reachable by rules 1 and 2 (``/serving/{ns}/latest-{name}/...``, ``Host: latest-{name}.{ns}.…`` or
``latest-{name}-predictor.{ns}.…``), never by rule 3. A route of that name of its own wins.

API keys (``ApiKeys``): a route that requires a key has ``auth`` set to the table's key store (a tag route
follows its InferenceService); every other route has ``auth`` None, so the gateway's hot path pays one
attribute test. Which routes require one, and the keys of each namespace, are the daemon's to set
(``set_auth``, ``ApiKeys.replace``), effective from the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from serving.autoscaling.meter import ConcurrencyMeter

PREFIX = "/serving/"
DEFAULT_NAMESPACE = "default"
# The Knative Service KServe renders for an InferenceService is called {name}-predictor: its hosts are too.
_PREDICTOR_SUFFIX = "-predictor"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready replica: a model server listening on ``host:port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Backend:
    """One revision behind a route, with its share of the route's traffic (see ``RouteTable.set_split``)."""

    revision: str  # a Knative revision name, or a Standard Deployment name
    percent: int  # 0..100; a route's backends sum to 100 (0-percent backends are reachable by tag only)
    endpoints: tuple[Endpoint, ...]
    tag: str | None = None  # "latest", "prev", or a user's tag
    hold: bool = True  # False: no ready replica is an immediate 503 (a failed or unknown revision)


class Waiter(Protocol):
    """A request the activator holds for a revision (the gateway's exchange)."""

    def wake(self) -> None:
        """The revision has endpoints again: try them."""

    def drop(self) -> None:
        """The revision is gone, or may no longer be waited for: answer 503."""


class RouteTarget:
    """One revision's ready endpoints, how many requests each has in flight, its request meter and the
    requests held for it while it has no usable endpoint (the activator's queue, FIFO).

    The target object lives as long as some route points at its revision, so counters survive endpoint
    changes: an endpoint that stays keeps its count, a request on an endpoint that left releases into nothing.
    """

    __slots__ = ("_next", "activating", "dropped", "endpoints", "held", "hold", "key", "meter", "name", "namespace",
                 "outstanding", "refs")

    def __init__(self, namespace: str, name: str, endpoints: Sequence[Endpoint] = (), *, hold: bool = False,
                 meter: ConcurrencyMeter | None = None) -> None:
        self.namespace = namespace
        self.name = name  # the revision
        self.key = f"{namespace}/{name}"
        self.endpoints: tuple[Endpoint, ...] = ()
        self.outstanding: dict[Endpoint, int] = {}
        self._next = 0
        self.hold = hold  # requests wait (True) or get 503 (False) while no endpoint is usable
        self.meter = meter if meter is not None else ConcurrencyMeter(time.monotonic())
        self.held: dict[Waiter, None] = {}  # insertion-ordered: FIFO with O(1) removal
        self.activating = False  # on_activate was called since the last update that gave endpoints
        self.dropped = False  # no route points here any more
        self.refs = 0  # routes (main and tag) that point here
        self.update(endpoints)

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        unique = tuple(dict.fromkeys(endpoints))
        self.outstanding = {ep: self.outstanding.get(ep, 0) for ep in unique}
        self.endpoints = unique
        if unique:
            self.activating = False
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
        """Requests on an endpoint of this revision now (``pick`` adds, ``release`` takes); the held ones
        are ``len(held)``, and the meter counts both."""
        return sum(self.outstanding.values())

    def release(self, endpoint: Endpoint) -> None:
        """One request on ``endpoint`` finished (or was never sent)."""
        count = self.outstanding.get(endpoint)
        if count:
            self.outstanding[endpoint] = count - 1

    # -- the activator's queue -------------------------------------------------------------------

    def enqueue(self, waiter: Waiter, limit: int) -> bool:
        """Hold ``waiter`` at the back of the queue; False when ``limit`` are held already."""
        if len(self.held) >= limit:
            return False
        self.held[waiter] = None
        return True

    def dequeue(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out of the queue (it went away, or gave up); False when it was not there."""
        if waiter in self.held:
            del self.held[waiter]
            return True
        return False

    def take_held(self) -> list[Waiter]:
        """Every held waiter, first held first; the queue is empty afterwards."""
        waiters = list(self.held)
        self.held.clear()
        return waiters

    def __repr__(self) -> str:
        return f"RouteTarget({self.key}, {[str(e) for e in self.endpoints]})"


class ApiKeys:
    """The API keys of each namespace, held as SHA-256 digests (never the keys themselves).

    ``refusal`` answers a request's ``Authorization`` headers for a namespace: None when one of its keys is
    presented, else ``(401, why)`` for no key, a malformed header or an unknown key, and ``(403, why)`` for a
    key of another namespace. The presented key is hashed and compared with ``hmac.compare_digest``
    against every key of the namespace, so the time taken says nothing about how much of a key matched.
    """

    __slots__ = ("_all", "_by_namespace")

    def __init__(self) -> None:
        self._by_namespace: dict[str, tuple[bytes, ...]] = {}
        self._all: frozenset[bytes] = frozenset()

    def replace(self, keys: dict[str, list[str]]) -> None:
        """Every namespace's keys at once (``{namespace: [key, ...]}``)."""
        digested = {ns: tuple(dict.fromkeys(_digest(k.encode()) for k in values)) for ns, values in keys.items() if values}
        self._by_namespace = digested
        self._all = frozenset(d for values in digested.values() for d in values)

    def namespaces(self) -> list[str]:
        return sorted(self._by_namespace)

    def count(self, namespace: str) -> int:
        return len(self._by_namespace.get(namespace, ()))

    def refusal(self, namespace: str, headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if not values:
            return 401, f"an API key of namespace {namespace} is required: send Authorization: Bearer KEY"
        if len(values) > 1:
            return 401, "send one Authorization header"
        scheme, _, token = values[0].strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token or b" " in token:
            return 401, "the Authorization header must be Bearer KEY"
        presented = _digest(token)
        granted = False
        for digest in self._by_namespace.get(namespace, ()):  # no early exit: every key is compared
            granted |= hmac.compare_digest(digest, presented)
        if granted:
            return None
        if presented in self._all:
            return 403, f"the API key does not grant access to namespace {namespace}"
        return 401, f"the API key is not one of namespace {namespace}"


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class Route:
    """One addressable route: an InferenceService's revisions and their shares, or one tag's revision.

    ``choose`` is nginx's smooth weighted round robin over the backends with a share: deterministic and
    exact (80/20 gives 8 of every 10 and 2 of every 10, interleaved), and a new split starts afresh.
    """

    __slots__ = ("_current", "_only", "_total", "_weighted", "_weights", "auth", "backends", "installed", "key", "name",
                 "namespace")

    def __init__(self, namespace: str, name: str, backends: Sequence[tuple[RouteTarget, int]]) -> None:
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.backends: tuple[tuple[RouteTarget, int], ...] = tuple(backends)
        weighted = [(target, percent) for target, percent in backends if percent > 0]
        self._weighted = [target for target, _ in weighted]
        self._weights = [percent for _, percent in weighted]
        self._current = [0] * len(weighted)
        self._total = sum(self._weights)
        self._only = self._weighted[0] if len(weighted) == 1 else None  # the fast path: one revision
        self.installed = True  # False once a newer split (or a removal) replaced this route in the table
        self.auth: ApiKeys | None = None  # set: a request needs a key of the namespace (RouteTable.set_auth)

    def choose(self) -> RouteTarget | None:
        """The revision for the next request; None when no backend has a share of the traffic."""
        only = self._only
        if only is not None:
            return only
        weighted = self._weighted
        if not weighted:
            return None
        current, weights = self._current, self._weights
        best = 0
        for index in range(len(weighted)):
            current[index] += weights[index]
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        return weighted[best]

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every backend's ready endpoints (those with a share first)."""
        ordered = sorted(self.backends, key=lambda backend: backend[1] == 0)
        return tuple(dict.fromkeys(ep for target, _ in ordered for ep in target.endpoints))

    @property
    def targets(self) -> list[RouteTarget]:
        return [target for target, _ in self.backends]

    @property
    def in_flight(self) -> int:
        return sum(target.in_flight for target in self.targets)

    def __repr__(self) -> str:
        return f"Route({self.key}, {[(t.name, p) for t, p in self.backends]})"


class RouteTable:
    """Routes by ``(namespace, name)`` (with tag routes and an index by name for rule 3), and the revision
    targets they share."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._tag_routes: dict[tuple[str, str], Route] = {}
        self._tags_of: dict[tuple[str, str], tuple[str, ...]] = {}  # a route's tag route names
        self._by_name: dict[str, Route | None] = {}
        self._targets: dict[tuple[str, str], RouteTarget] = {}
        self._meters: dict[tuple[str, str], ConcurrencyMeter] = {}
        # (namespace, revision): a request waits for a revision without a usable replica (the daemon's KPA
        # scales it from zero). Called once per such transition, not per request.
        self.on_activate: Callable[[str, str], None] | None = None
        self.keys = ApiKeys()
        self._auth_routes: frozenset[tuple[str, str]] = frozenset()  # (namespace, name) that require a key
        self._auth_all = False  # every route requires one

    # -- changes (the daemon) ----------------------------------------------------------------------

    def set_split(self, namespace: str, name: str, backends: Sequence[Backend]) -> None:
        """Route ``namespace/name`` to ``backends`` by their percent, from the next request on.

        Percents are 0..100 and sum to 100 (or all 0: the route is known but sends nowhere, 503). A
        revision listed twice (Knative lists the latest revision once untagged, once as ``latest``) is one
        target with the summed percent. Each tag becomes the route ``{tag}-{name}``. Requests held for a
        revision that now has endpoints are released; those held for a revision no route points at any
        more, or that may no longer be waited for (``hold`` False), get 503. Raises ValueError naming the
        bad backend field.
        """
        merged = _merge_backends(namespace, name, backends)
        fresh: list[tuple[RouteTarget, int]] = []
        for revision, (percent, endpoints, hold) in merged.items():
            target = self._targets.get((namespace, revision))
            if target is None:
                target = self._targets[(namespace, revision)] = RouteTarget(
                    namespace, revision, endpoints, hold=hold, meter=self.meter(namespace, revision))
            else:
                target.update(endpoints)
                target.hold = hold
            fresh.append((target, percent))
        main = Route(namespace, name, fresh)
        tag_routes = [Route(namespace, f"{b.tag}-{name}", [(self._targets[(namespace, b.revision)], 100)])
                      for b in backends if b.tag]
        self._install(namespace, name, main, tag_routes)
        for target, _ in fresh:
            self._settle(target)

    def set(self, namespace: str, name: str, endpoints: Sequence[Endpoint]) -> None:
        """Replace the ready endpoints of ``namespace/name``: one revision called ``name``, all traffic, and
        no holding (``[]`` means known but none ready: 503)."""
        self.set_split(namespace, name, [Backend(name, 100, tuple(endpoints), hold=False)])

    def remove(self, namespace: str, name: str) -> None:
        """Forget the route and its tag routes (idempotent); revisions nothing else points at are dropped."""
        if (namespace, name) in self._routes:
            self._install(namespace, name, None, [])

    def set_auth(self, routes: Iterable[tuple[str, str]], every_route: bool = False) -> None:
        """Require a key of the namespace on ``routes`` (``(namespace, name)``: an InferenceService and its tag
        routes), or on every route; the others need none. Takes effect on installed routes at once."""
        self._auth_routes = frozenset(routes)
        self._auth_all = every_route
        for (namespace, name), route in self._routes.items():
            self._mark(route, namespace, name)
            for tag_name in self._tags_of.get((namespace, name), ()):
                tagged = self._tag_routes.get((namespace, tag_name))
                if tagged is not None:
                    self._mark(tagged, namespace, name)

    def requires_key(self, namespace: str, name: str) -> bool:
        return self._auth_all or (namespace, name) in self._auth_routes

    def _mark(self, route: Route, namespace: str, name: str) -> None:
        route.auth = self.keys if self.requires_key(namespace, name) else None

    def meter(self, namespace: str, revision: str) -> ConcurrencyMeter:
        """The revision's request meter: created on first use, kept while its target lives (the daemon reads
        ``report`` from it; the gateway calls ``started``/``finished``)."""
        meter = self._meters.get((namespace, revision))
        if meter is None:
            meter = self._meters[(namespace, revision)] = ConcurrencyMeter(time.monotonic())
        return meter

    def activate(self, target: RouteTarget) -> None:
        """A request is held for ``target``: tell the daemon, once until the target gets endpoints again."""
        if target.activating:
            return
        target.activating = True
        if self.on_activate is not None:
            self.on_activate(target.namespace, target.name)

    # -- reads (the gateway, status pages, tests) ----------------------------------------------------

    def targets(self) -> list[RouteTarget]:
        """Every revision's target (a snapshot: safe while routes change)."""
        return list(self._targets.values())

    def routes(self) -> list[Route]:
        """Every InferenceService's route, tag routes left out (a snapshot)."""
        return list(self._routes.values())

    def get(self, namespace: str, revision: str) -> RouteTarget | None:
        """The target of ``revision`` (after ``set(ns, name, ...)``, the revision is ``name``)."""
        return self._targets.get((namespace, revision))

    def route(self, namespace: str, name: str) -> Route | None:
        """The route ``namespace/name``: an InferenceService's, else a tag route of that name."""
        return self._routes.get((namespace, name)) or self._tag_routes.get((namespace, name))

    def resolve(self, path: str, host: str | None) -> tuple[Route | None, str]:
        """``(route, upstream path)`` for a request target (path plus query) and Host header.

        The route is None when no rule matches; ``route.choose()`` then picks the revision.
        """
        if path.startswith(PREFIX):
            namespace, sep, rest = path[len(PREFIX):].partition("/")
            if sep:
                name, rest = _split_segment(rest)
                route = self._routes.get((namespace, name)) or self._tag_routes.get((namespace, name))
                if route is not None:
                    if not rest.startswith("/"):
                        rest = "/" + rest  # "" or "?query"
                    return route, rest
        if host:
            labels = host.lower().split(".", 2)
            if len(labels) == 3:
                route = self._by_host(labels[1], labels[0])
                if route is not None:
                    return route, path
        if path.startswith(("/v2/models/", "/v1/models/")):
            name = _model_name(path[11:])
            if name:
                route = self._by_name.get(name)
                if route is not None:
                    return route, path
        return None, path

    def snapshot(self) -> dict[str, list[str]]:
        """``{"namespace/name": ["host:port", ...]}`` per InferenceService route, for status pages and tests."""
        return {r.key: [str(e) for e in r.endpoints] for r in self._routes.values()}

    def __len__(self) -> int:
        return len(self._routes)

    # -- internals ---------------------------------------------------------------------------------

    def _by_host(self, namespace: str, label: str) -> Route | None:
        route = self._routes.get((namespace, label)) or self._tag_routes.get((namespace, label))
        if route is None and label.endswith(_PREDICTOR_SUFFIX):
            stem = label[:-len(_PREDICTOR_SUFFIX)]
            route = self._routes.get((namespace, stem)) or self._tag_routes.get((namespace, stem))
        return route

    def _install(self, namespace: str, name: str, main: Route | None, tag_routes: Sequence[Route]) -> None:
        """Put ``main`` and its ``tag_routes`` in place of what ``namespace/name`` had; count references
        before releasing the old ones, so a revision both old and new is never dropped in between."""
        key = (namespace, name)
        old: list[Route] = []
        previous = self._routes.pop(key, None)
        if previous is not None:
            old.append(previous)
        for tag_name in self._tags_of.pop(key, ()):
            tagged = self._tag_routes.pop((namespace, tag_name), None)
            if tagged is not None:
                old.append(tagged)
        new: list[Route] = []
        if main is not None:
            for route in (main, *tag_routes):
                self._mark(route, namespace, name)
            self._routes[key] = main
            new.append(main)
            self._tags_of[key] = tuple(r.name for r in tag_routes)
            for tagged in tag_routes:
                self._tag_routes[(namespace, tagged.name)] = tagged
                new.append(tagged)
        for route in new:
            for target in route.targets:
                target.refs += 1
        for route in old:
            route.installed = False
            for target in route.targets:
                target.refs -= 1
                if target.refs <= 0:
                    self._drop(target)
        if (previous is None) != (main is None):
            self._reindex(name)
        elif main is not None and self._by_name.get(name) is previous:
            self._by_name[name] = main

    def _drop(self, target: RouteTarget) -> None:
        key = (target.namespace, target.name)
        if self._targets.get(key) is target:
            del self._targets[key]
            self._meters.pop(key, None)
        target.dropped = True
        for waiter in target.take_held():
            waiter.drop()

    def _settle(self, target: RouteTarget) -> None:
        """After a change: release the requests held for ``target`` when it has endpoints, or answer them
        when they may no longer wait."""
        if not target.held:
            return
        if target.endpoints:
            for waiter in target.take_held():
                waiter.wake()
        elif not target.hold:
            for waiter in target.take_held():
                waiter.drop()

    def _reindex(self, name: str) -> None:
        candidates = [r for (_, n), r in self._routes.items() if n == name]
        if len(candidates) == 1:
            self._by_name[name] = candidates[0]
        elif candidates:
            # Ambiguous: only the default namespace may claim the bare model name.
            self._by_name[name] = self._routes.get((DEFAULT_NAMESPACE, name))
        else:
            self._by_name.pop(name, None)


def _merge_backends(namespace: str, name: str,
                    backends: Iterable[Backend]) -> dict[str, tuple[int, tuple[Endpoint, ...], bool]]:
    """``{revision: (percent, endpoints, hold)}`` in first-listed order, checked: percents 0..100 summing to
    100 (or all 0), a revision and a tag on each backend that names them, one revision per tag."""
    merged: dict[str, tuple[int, tuple[Endpoint, ...], bool]] = {}
    tags: dict[str, str] = {}
    for index, backend in enumerate(backends):
        where = f"route {namespace}/{name}: backends[{index}]"
        if not backend.revision:
            raise ValueError(f"{where}.revision is empty: name the revision (or Deployment) that serves it")
        if not 0 <= backend.percent <= 100:
            raise ValueError(f"{where}.percent is {backend.percent}: use 0 to 100 (0: reachable by its tag only)")
        if backend.tag is not None:
            if not backend.tag or "." in backend.tag or "/" in backend.tag:
                raise ValueError(f"{where}.tag {backend.tag!r}: use a DNS label such as 'latest' or 'prev', or None")
            owner = tags.setdefault(backend.tag, backend.revision)
            if owner != backend.revision:
                raise ValueError(f"{where}.tag {backend.tag!r} already names revision {owner!r}: one revision per tag")
        percent, endpoints, hold = merged.get(backend.revision, (0, (), True))
        merged[backend.revision] = (percent + backend.percent, tuple(dict.fromkeys(endpoints + backend.endpoints)),
                                    hold and backend.hold)
    total = sum(percent for percent, _, _ in merged.values())
    if total not in (0, 100):
        raise ValueError(f"route {namespace}/{name}: backend percents sum to {total}; they must sum to 100 "
                         "(give the remainder to a revision, or 0 to every backend for a route that sends nowhere)")
    return merged


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
