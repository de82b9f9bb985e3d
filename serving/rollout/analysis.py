"""The verdict on a canary, from two snapshots of the gateway's per-revision metrics (pure).

The gateway counts every answer per revision (``odh_gateway_revision_requests_total{namespace,revision,code}``)
and times it (``odh_gateway_revision_request_duration_seconds``, a histogram). The difference between a
snapshot at the start of the window and one now is what each side did during the window: its 5xx share and
its p95 (Prometheus' ``histogram_quantile``: linear inside the bucket).

Fail fast, promote late: a canary with ``min_requests`` answers whose 5xx share is past ``max_error_rate`` is
rolled back at once; promotion is decided only at the end of the window. A canary without ``min_requests``
by then gets the window once more (at most twice the window in all) and is rolled back if it still has not:
never promote blind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.operate.scrape import Scrape
from serving.operate.window import counter_increases, histogram_increase, histogram_quantile

Verdict = Literal["promote", "rollback", "watch"]


@dataclass(frozen=True)
class RevisionFigures:
    revision: str
    requests: int
    errors: int  # 5xx answers
    p95_seconds: float | None  # None: no answer in the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float
    max_latency_ratio: float
    min_requests: int

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"max_error_rate {self.max_error_rate} is out of range: use a share from 0 to 1")
        if not self.max_latency_ratio > 0:
            raise ValueError(f"max_latency_ratio {self.max_latency_ratio} must be above 0 (2.0: canary p95 up to twice stable)")
        if self.min_requests < 1:
            raise ValueError(f"min_requests {self.min_requests} must be at least 1: a canary is never promoted blind")


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    stable: RevisionFigures
    canary: RevisionFigures


def figures(before: Scrape, after: Scrape, namespace: str, revision: str) -> RevisionFigures:
    """What ``revision`` answered between the two scrapes (the same window math as ``operate``'s)."""
    key = f"{namespace}/{revision}"
    delta = counter_increases(before.revision_requests.get(key, {}), after.revision_requests.get(key, {}))
    requests = int(sum(delta.values()))
    errors = int(sum(count for code, count in delta.items() if code.isdigit() and int(code) >= 500))
    latency = after.latency.get(key)
    p95 = histogram_quantile(0.95, histogram_increase(before.latency.get(key), latency).buckets) if latency else None
    return RevisionFigures(revision, requests, errors, p95)


def judge(stable: RevisionFigures, canary: RevisionFigures, thresholds: Thresholds, *, elapsed: float,
          window: float) -> Decision:
    """Promote, roll back or keep watching after ``elapsed`` seconds of a ``window``-second analysis."""
    def decide(verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict, reason, stable, canary)

    enough = canary.requests >= thresholds.min_requests
    errors = (f"canary 5xx {_pct(canary.error_rate)} {{}} {_pct(thresholds.max_error_rate)} "
              f"over {canary.requests} requests")
    if enough and canary.error_rate > thresholds.max_error_rate:
        return decide("rollback", errors.format(">"))
    if elapsed < window:
        return decide("watch", f"{elapsed:.0f} of {window:g} s; canary has {canary.requests} requests")
    if not enough:
        if elapsed < 2 * window:
            return decide("watch", f"window extended: canary has {canary.requests} of {thresholds.min_requests} "
                                   f"requests after {elapsed:.0f} s")
        return decide("rollback", f"not enough canary traffic: {canary.requests} requests < {thresholds.min_requests} "
                                  f"in {elapsed:.0f} s (window extended once); never promoted blind")
    if canary.p95_seconds is not None and stable.p95_seconds:
        ratio = canary.p95_seconds / stable.p95_seconds
        latency = (f"canary p95 {_ms(canary.p95_seconds)} vs stable {_ms(stable.p95_seconds)} "
                   f"(x{ratio:.2f} {{}} x{thresholds.max_latency_ratio:g})")
        if ratio > thresholds.max_latency_ratio:
            return decide("rollback", latency.format(">"))
        return decide("promote", f"{errors.format('<=')}; {latency.format('<=')}")
    return decide("promote", f"{errors.format('<=')}; p95 not compared (the stable side had no requests in the window)")


def _pct(share: float) -> str:
    return f"{share * 100:.1f} %".replace(".0 %", " %")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
