"""What the gateway measures per revision for the KPA: Knative's queue-proxy statistics, in-process.

The gateway calls ``started(now)`` when it accepts a request for the revision (held by the activator or
proxied) and ``finished(now)`` when the response is done; the daemon's autoscaling loop calls
``report(now)`` about once a second and feeds the result to ``KPA.record``. Concurrency is the
time-weighted average of in-flight requests over the period (a 5 ms request still counts, as 0.005 of a
request-second, where a point sample once a second would almost never see it); rps is the requests started
in the period divided by its length. Not thread-safe: call it from the gateway's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stat:
    """One reporting period of one revision: average concurrency, requests per second, its length."""

    concurrency: float
    rps: float
    period: float


class ConcurrencyMeter:
    def __init__(self, now: float) -> None:
        self.in_flight = 0
        self.requests_total = 0  # monotonic, for /metrics
        self._period_start = now
        self._last_change = now
        self._area = 0.0  # request-seconds accumulated in the current period
        self._started_in_period = 0

    def _advance(self, now: float) -> None:
        if now > self._last_change:
            self._area += self.in_flight * (now - self._last_change)
            self._last_change = now

    def started(self, now: float) -> None:
        self._advance(now)
        self.in_flight += 1
        self.requests_total += 1
        self._started_in_period += 1

    def finished(self, now: float) -> None:
        self._advance(now)
        self.in_flight = max(0, self.in_flight - 1)

    def report(self, now: float) -> Stat:
        """The statistics since the previous report; starts the next period."""
        self._advance(now)
        period = now - self._period_start
        if period <= 0:
            # a second call at the same instant: nothing elapsed, report what is in flight
            return Stat(float(self.in_flight), 0.0, 0.0)
        stat = Stat(self._area / period, self._started_in_period / period, period)
        self._period_start = now
        self._area = 0.0
        self._started_in_period = 0
        return stat
