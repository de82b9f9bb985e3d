"""What happened between two scrapes, per deployment: request rate, error rate, p50 and p95 latency (pure).

Counters only grow, except when the gateway starts afresh (the daemon came back): a value lower than the
one before is a reset, and the increase is then the new value, as Prometheus' ``increase`` takes it. A
series absent before is new since then: all of it counts. Quantiles use Prometheus' ``histogram_quantile``
interpolation over the revisions' summed buckets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from serving.operate.inventory import Inventory, Served
from serving.operate.scrape import Histogram, Scrape


@dataclass(frozen=True)
class TrafficFigures:
    """One deployment's traffic over the window. Latencies are None without a request to measure."""

    seconds: float
    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    upstream_errors: float = 0.0  # failures reaching a replica (some were retried and answered fine)
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def request_rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """The share of answers that were 5xx: what a client saw fail."""
        return self.errors / self.requests if self.requests > 0 else 0.0


def increase(before: float | None, after: float) -> float:
    """A counter's increase from ``before`` (None: the series is new) to ``after``, resets included."""
    if before is None or after < before:
        return after
    return after - before


def counter_increases(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Per label value (a status code, an error kind), the increase between two readings."""
    return {label: increase(before.get(label), value) for label, value in after.items()}


def histogram_increase(before: Histogram | None, after: Histogram) -> Histogram:
    """The histogram of what was observed between the two readings (a lower count is a reset)."""
    if before is None or after.count < before.count:
        return after
    buckets = {le: increase(before.buckets.get(le), value) for le, value in after.buckets.items()}
    return Histogram(buckets=buckets, sum=increase(before.sum, after.sum), count=increase(before.count, after.count))


def histogram_quantile(q: float, buckets: Mapping[str, float]) -> float | None:
    """Prometheus' ``histogram_quantile(q, ...)`` over cumulative ``buckets`` keyed by ``le``.

    The rank ``q * total`` falls in some bucket; the answer is interpolated linearly inside it (the first
    bucket starts at 0). In the ``+Inf`` bucket the answer is the highest finite bound. None without
    observations, without an ``+Inf`` bucket, or with fewer than two buckets, where Prometheus says NaN.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    bounds = sorted((float(le), count) for le, count in buckets.items())
    if len(bounds) < 2 or not math.isinf(bounds[-1][0]):
        return None
    cumulative: list[tuple[float, float]] = []
    for bound, count in bounds:  # Prometheus repairs a bucket lower than the one below it (scrape races)
        cumulative.append((bound, max(count, cumulative[-1][1]) if cumulative else count))
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(cumulative) if count >= rank)
    if index == len(cumulative) - 1:
        return cumulative[-2][0]
    upper, count = cumulative[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else cumulative[index - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def route_owner(route: str, served: Served) -> bool:
    """Whether a gateway route (``ns/name``) is the deployment's own, or one of its tags' (``ns/tag-name``)."""
    if route == served.key:
        return True
    namespace, _, label = route.partition("/")
    return namespace == served.namespace and any(t.tag and label == f"{t.tag}-{served.name}" for t in served.traffic)


def traffic_figures(before: Scrape, after: Scrape, inventory: Inventory) -> dict[str, TrafficFigures]:
    """Per deployment key, its traffic between the two scrapes."""
    seconds = max(0.0, after.taken_at - before.taken_at)
    out: dict[str, TrafficFigures] = {}
    for served in inventory.served:
        requests = errors = upstream = 0.0
        for route, codes in after.route_requests.items():
            if route_owner(route, served):
                for code, value in counter_increases(before.route_requests.get(route, {}), codes).items():
                    requests += value
                    errors += value if code.startswith("5") else 0.0
        for route, kinds in after.upstream_errors.items():
            if route_owner(route, served):
                upstream += sum(counter_increases(before.upstream_errors.get(route, {}), kinds).values())
        merged: dict[str, float] = {}
        for revision, histogram in after.latency.items():
            if inventory.revision_owner.get(revision) == served.key:
                for le, value in histogram_increase(before.latency.get(revision), histogram).buckets.items():
                    merged[le] = merged.get(le, 0.0) + value
        p50, p95 = histogram_quantile(0.5, merged), histogram_quantile(0.95, merged)
        out[served.key] = TrafficFigures(seconds, requests, errors, upstream,
                                         None if p50 is None else p50 * 1000, None if p95 is None else p95 * 1000)
    return out
