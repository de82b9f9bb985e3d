"""The Knative Pod Autoscaler for one revision, as Knative Serving runs it, over an injectable clock.

Three of Knative's parts in one object, each faithful to its source:

* the metric collector (``pkg/autoscaler/metrics``): concurrency and rps in one-second buckets over the
  stable and the panic window, averaged linearly or with exponential weights;
* the decider (``pkg/autoscaler/scaling/autoscaler.go``): desired = ceil(observed / target) from the stable
  window, rate-limited by max-scale-up/down rates; panic mode when the panic window's demand reaches the
  panic threshold of the ready pods' capacity, and no scale-down while panicking (left after a stable
  window below the threshold); activation scale; the scale-down delay; excess burst capacity;
* the PodAutoscaler reconciler (``pkg/reconciler/autoscaling/kpa``): min/max/initial scale, and scale to
  zero only after the revision has been active a whole stable window, then inactive past the grace period
  and the last-pod retention period.

Use: one ``KPA`` per revision. The gateway measures each revision with ``meter.ConcurrencyMeter``; once a
second the daemon calls ``record(now, stat.concurrency, stat.rps, stat.period)`` then ``desired(now,
ready_pods)`` (Knative's decider ticks every 2 s; every second is fine) and runs ``decision.desired``
replicas. When the activator holds a request for a revision with no ready replica it calls
``activate(now)`` and then ``desired`` at once: the answer is at least ``max(1, activation scale)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from serving.autoscaling.aggregation import MaxWindow, TimedBuckets, WeightedBuckets
from serving.autoscaling.config import BUCKET_SIZE, TICK_INTERVAL
from serving.autoscaling.settings import RPS, WEIGHTED_EXPONENTIAL, KPASettings

SCALE_UNKNOWN = -1


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """The decider's answer (Knative's ``ScaleResult``): ``valid`` is False when there was no data."""

    desired: int
    excess_burst_capacity: float
    valid: bool = True


INVALID = ScaleResult(0, 0.0, valid=False)


class Decider:
    """Knative's autoscaler algorithm for one revision: observed stable/panic values in, pods out."""

    def __init__(self, settings: KPASettings, now: float, ready_pods: int = 0) -> None:
        self.settings = settings
        # A new decider over more than one pod starts panicking: it has no history yet, and scaling down a
        # running revision on no evidence (a restarted daemon) is the mistake Knative avoids this way.
        self.panic_time: float | None = now if ready_pods > 1 else None
        self.max_panic_pods = ready_pods
        self.delay_window = MaxWindow(settings.scale_down_delay, TICK_INTERVAL) if settings.scale_down_delay > 0 else None

    def update(self, settings: KPASettings) -> None:
        if settings.scale_down_delay != self.settings.scale_down_delay:
            self.delay_window = MaxWindow(settings.scale_down_delay, TICK_INTERVAL) if settings.scale_down_delay > 0 else None
        self.settings = settings

    @property
    def panicking(self) -> bool:
        return self.panic_time is not None

    def scale(self, now: float, ready_pods: int, stable: float, panic: float) -> ScaleResult:
        spec = self.settings
        ready = float(max(1, ready_pods))  # no ready pod counts as one: the rate limits need a base
        # at least one more pod even when the rate is too small to add one (1.1 x 2 pods is still 3)
        max_up = math.ceil(spec.max_scale_up_rate * ready)
        max_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0
        stable_pods = math.ceil(stable / spec.target)
        panic_pods = math.ceil(panic / spec.target)
        desired_stable = int(min(max(stable_pods, max_down), max_up))
        desired_panic = int(min(max(panic_pods, max_down), max_up))
        if spec.activation_scale > 1:
            if stable_pods > 0 and spec.activation_scale > desired_stable:
                desired_stable = spec.activation_scale
            if panic_pods > 0 and spec.activation_scale > desired_panic:
                desired_panic = spec.activation_scale

        over_threshold = panic_pods / ready >= spec.panic_threshold
        if over_threshold:
            self.panic_time = now  # start panicking, or extend the panic
        elif self.panic_time is not None and self.panic_time + spec.stable_window < now:
            # the surge has made its way into the stable window: back to stable mode
            self.panic_time = None
            self.max_panic_pods = 0

        desired = desired_stable
        if self.panic_time is not None:
            # provision for the larger of the two, and never scale down while panicking
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods

        if spec.reachable and self.delay_window is not None:
            self.delay_window.record(now, desired)
            desired = self.delay_window.current()

        # excess burst capacity: what the ready pods can take beyond the observed burst and the target burst
        # capacity; negative means the activator should stay in the path
        if spec.target_burst_capacity == 0:
            excess = 0.0
        elif spec.target_burst_capacity > 0:
            excess = float(math.floor(ready_pods * spec.total - spec.target_burst_capacity - panic))
        else:
            excess = -1.0
        return ScaleResult(desired, excess)


class Activity(enum.Enum):
    """The PodAutoscaler's ``Active`` condition: True, Unknown (activating) or False."""

    ACTIVE = "Active"
    ACTIVATING = "Activating"
    INACTIVE = "Inactive"


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """What to run now. ``desired`` replicas (apply it); ``panic``; the decider's view (``decider_desired``,
    ``SCALE_UNKNOWN`` without data); the windowed ``stable_value``/``panic_value`` of the metric; the
    ``excess_burst_capacity``; the ``activity`` after this decision; and a ``reason`` for logs and events."""

    desired: int
    panic: bool
    excess_burst_capacity: float
    reason: str
    decider_desired: int
    stable_value: float
    panic_value: float
    activity: Activity


class MetricWindows:
    """The collector for one revision: concurrency and rps over the stable and the panic window."""

    def __init__(self, settings: KPASettings) -> None:
        bucket_type = WeightedBuckets if settings.aggregation == WEIGHTED_EXPONENTIAL else TimedBuckets
        self.stable_window = settings.stable_window
        self.panic_window = settings.panic_window
        self.concurrency = (bucket_type(settings.stable_window, BUCKET_SIZE), bucket_type(settings.panic_window, BUCKET_SIZE))
        self.rps = (bucket_type(settings.stable_window, BUCKET_SIZE), bucket_type(settings.panic_window, BUCKET_SIZE))

    def record(self, now: float, concurrency: float, rps: float, period: float = 1.0) -> None:
        # Values are weighted by the reporting period, so a bucket holds request-seconds (concurrency) and
        # requests (rps) whatever the caller's cadence; at Knative's one report a second it is the same.
        for bucket in self.concurrency:
            bucket.record(now, concurrency * period)
        for bucket in self.rps:
            bucket.record(now, rps * period)

    def values(self, metric: str, now: float) -> tuple[float, float] | None:
        """(stable, panic) averages, or None when nothing was recorded in the stable window."""
        stable, panic = self.rps if metric == RPS else self.concurrency
        if stable.is_empty(now):
            return None
        return stable.window_average(now), panic.window_average(now)


class KPA:
    """One revision's autoscaler: feed it ``record``/``activate``, ask it ``desired``."""

    def __init__(self, settings: KPASettings, now: float, ready_pods: int = 0) -> None:
        self.settings = settings
        self.metrics = MetricWindows(settings)
        self.decider = Decider(settings, now, ready_pods)
        self.created = now
        self.scale = settings.initial_scale  # what the platform was last told to run
        self.activity = Activity.ACTIVATING
        self.activity_since = now
        self.initialized = False  # the initial scale was reached once
        self.poked_at: float | None = None

    def update(self, settings: KPASettings) -> None:
        """New annotations on the same revision (a config change); changed windows restart their data."""
        if (settings.stable_window, settings.panic_window, settings.aggregation) != (
                self.settings.stable_window, self.settings.panic_window, self.settings.aggregation):
            self.metrics = MetricWindows(settings)
        self.decider.update(settings)
        self.settings = settings

    def record(self, now: float, concurrency: float, rps: float, period: float = 1.0) -> None:
        """One report from the gateway: average concurrency and requests per second over ``period`` s."""
        self.metrics.record(now, concurrency, rps, period)

    def activate(self, now: float) -> None:
        """The activator holds a request for this revision: scale from zero without waiting for a tick."""
        self.poked_at = now

    def _set_activity(self, activity: Activity, now: float) -> None:
        if activity is not self.activity:
            self.activity, self.activity_since = activity, now

    def desired(self, now: float, ready_pods: int) -> ScaleDecision:
        spec = self.settings
        values = self.metrics.values(spec.metric, now)
        stable, panic = values if values is not None else (0.0, 0.0)
        result = self.decider.scale(now, ready_pods, stable, panic) if values is not None else INVALID
        want = result.desired if result.valid else SCALE_UNKNOWN
        reason = "metrics" if result.valid else "no data yet"
        poked = self.poked_at is not None and now - self.poked_at < spec.stable_window
        if poked and want < 1:
            # the request the activator holds is demand the buckets may not show yet
            want = max(1, spec.activation_scale)
            reason = "activation: a request is waiting"
        if not poked:
            self.poked_at = None

        applied, apply, reason = self._bound(now, want, reason)
        if apply:
            self.scale = applied
        self._update_activity(now, applied, ready_pods)
        return ScaleDecision(desired=self.scale, panic=self.decider.panicking, excess_burst_capacity=result.excess_burst_capacity,
                             reason=reason, decider_desired=want, stable_value=stable, panic_value=panic,
                             activity=self.activity)

    def _bound(self, now: float, want: int, reason: str) -> tuple[int, bool, str]:
        """Knative's ``scaler.scale``: min/max/initial scale, then the scale-to-zero rules. Returns the
        scale to report, whether to apply it, and why."""
        spec = self.settings
        if want < 0 and self.activity is not Activity.ACTIVATING:
            return want, False, reason
        low, high = spec.min_scale, spec.max_scale
        if spec.initial_scale > 1 and not self.initialized and spec.reachable:
            low = max(spec.initial_scale, low)
        bounded = low if want < low else (high if high and want > high else want)
        if bounded != want and want >= 0:
            reason = f"{reason}; bounded to [{low}, {high or 'unbounded'}]"
        return self._scale_to_zero(now, bounded, reason)

    def _scale_to_zero(self, now: float, desired: int, reason: str) -> tuple[int, bool, str]:
        spec = self.settings
        if desired != 0:
            return desired, True, reason
        if not spec.enable_scale_to_zero:
            return 1, True, "scale to zero is disabled"
        if self.activity is Activity.ACTIVATING:
            if now - self.activity_since >= spec.activation_timeout:
                return 0, True, "failed to activate in time"
            return SCALE_UNKNOWN, False, "activating"
        if self.activity is Activity.ACTIVE:
            if now - self.activity_since >= spec.stable_window:
                return 0, False, "idle for a stable window: inactive"  # becomes inactive now, replicas stay
            return 1, True, "idle, but active for less than a stable window: keeping one replica"
        inactive_for = now - self.activity_since
        retention = spec.scale_to_zero_pod_retention_period
        if inactive_for >= max(spec.scale_to_zero_grace_period, retention):
            return 0, True, "scaled to zero"
        if retention > 0 and inactive_for < retention:
            return 0, False, f"last replica retained for {retention:g}s"
        # The grace period lets the activator get into the path; the gateway always is in it, since this
        # autoscaler was created.
        if spec.scale_to_zero_grace_period - (now - self.created) <= 0:
            return 0, True, "scaled to zero"
        return 0, False, "scale-to-zero grace period"

    def _update_activity(self, now: float, want: int, ready: int) -> None:
        """Knative's ``computeActiveCondition``."""
        spec = self.settings
        min_ready = max(spec.min_scale, spec.initial_scale if not self.initialized else 1)
        if ready >= min_ready:
            self.initialized = True
        if want == 0 or min_ready == 0:
            self._set_activity(Activity.INACTIVE, now)
        elif ready < min_ready:
            if want > 0 or self.activity is not Activity.INACTIVE:
                self._set_activity(Activity.ACTIVATING, now)
        elif want > 0 or self.activity is not Activity.INACTIVE:
            self._set_activity(Activity.ACTIVE, now)
