"""Knative's autoscaler tests (pkg/autoscaler/scaling/autoscaler_test.go) ported as facts, then the
PodAutoscaler's scale-to-zero and activation lifecycle, all on a driven clock."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.autoscaling import KPA, Activity, Decider, KPASettings, ScaleResult
from serving.autoscaling.meter import ConcurrencyMeter

UTILIZATION = 0.75  # Knative's tests presume 75 %
STABLE_WINDOW = 60.0


def decider(target: float, tbc: float, ready: int = 1, **changes: Any) -> Decider:
    spec = KPASettings( target=target, total=target / UTILIZATION, target_burst_capacity=tbc, panic_threshold=2.0,
                       max_scale_up_rate=10, max_scale_down_rate=10, stable_window=STABLE_WINDOW)
    return Decider(replace(spec, **changes), now=0.0, ready_pods=ready)


def ebc(target: float, tbc: float, observed: float, pods: float) -> float:
    return float(math.floor(target / UTILIZATION * pods - tbc - observed))


def test_stable_mode_increase() -> None:
    d = decider(10, 101)
    assert d.scale(0, 1, 50, 10) == ScaleResult(5, ebc(10, 101, 10, 1))
    assert d.scale(0, 1, 100, 10) == ScaleResult(10, ebc(10, 101, 10, 1))


def test_unpanic_after_slow_increase() -> None:
    d = decider(1, 98)
    assert d.scale(0, 10, 11, 25) == ScaleResult(25, ebc(1, 98, 25, 10))
    assert d.panic_time == 0
    assert d.scale(30, 40, 30, 41) == ScaleResult(41, ebc(1, 98, 41, 40))
    assert d.panic_time == 0  # below the threshold: the panic is not extended
    assert d.scale(62, 55, 50, 56) == ScaleResult(50, ebc(1, 98, 56, 55))  # a stable window later: stable mode
    assert d.panic_time is None


def test_extend_panic_window() -> None:
    d = decider(1, 98)
    d.scale(0, 10, 11, 25)
    assert d.scale(30, 40, 30, 80) == ScaleResult(80, ebc(1, 98, 80, 40))
    assert d.panic_time == 30


def test_stable_mode_decrease_and_scale_to_zero() -> None:
    d = decider(10, 98)
    assert d.scale(0, 8, 100, 100).desired == 10
    assert d.scale(0, 8, 50, 50).desired == 5
    d = decider(10, 75)
    assert d.scale(0, 1, 1, 0).desired == 1
    assert d.scale(0, 1, 0, 0).desired == 0


def test_activation_scale() -> None:
    d = decider(10, 75, activation_scale=2)
    assert d.scale(0, 1, 0, 0).desired == 0
    assert d.scale(0, 1, 1, 0).desired == 2


def test_panic_exponential_track_and_stabilize() -> None:
    d = decider(1, 101)
    assert d.scale(0, 1, 6, 6).desired == 6
    assert d.scale(1, 6, 36, 36).desired == 36 and d.panic_time == 1
    assert d.scale(2, 36, 216, 216).desired == 216 and d.panic_time == 2
    assert d.scale(2, 216, 1296, 1296).desired == 1296
    assert d.scale(3, 1296, 1296, 1296).desired == 1296


@pytest.mark.parametrize(("label", "target", "tbc", "stable", "panic", "ready", "changes", "prep", "want", "want_ebc"), [
    ("NoData", 10, 100, 0, 0, 1, {}, None, 0, ebc(10, 100, 0, 1)),
    ("UnlimitedTBC", 181, -1, 21, 26, 1, {}, None, 1, -1),
    ("ZeroTBC", 10, 0, 50, 49, 1, {}, None, 5, 0),
    ("NoChange", 10, 100, 50, 50, 1, {}, None, 5, ebc(10, 100, 50, 1)),
    ("PanicStableLargerThanPanic", 1, 100, 50, 30, 5, {}, (-5, 5), 50, ebc(1, 100, 30, 5)),
    ("PanicStableLessThanPanic", 1, 100, 20, 30, 5, {}, (-5, 5), 30, ebc(1, 100, 30, 5)),
    ("NoChangeAlreadyScaled", 10, 100, 50, 50, 5, {}, None, 5, ebc(10, 100, 50, 5)),
    ("SmallScaleUpRate", 1, 1982, 3, 3.1, 2, {"max_scale_up_rate": 1.1}, None, 3, ebc(1, 1982, 3.1, 2)),
    ("SmallScaleDownRate", 10, 1982, 1, 1, 100, {"max_scale_down_rate": 1.1}, None, 90, ebc(10, 1982, 1, 100)),
    ("DecreaseNonReachable", 10, 1982, 1, 1, 100, {"max_scale_down_rate": 1.1, "reachable": False}, None, 1, ebc(10, 1982, 1, 100)),
    ("PanicModeDoublePodCount", 10, 84, 50, 100, 1, {}, None, 10, ebc(10, 84, 100, 1)),
])
def test_knative_scale_table(label: str, target: float, tbc: float, stable: float, panic: float, ready: int,
                             changes: dict[str, Any], prep: tuple[float, int] | None, want: int, want_ebc: float) -> None:
    d = decider(target, tbc, **changes)
    if prep is not None:
        d.panic_time, d.max_panic_pods = prep
    assert d.scale(0, ready, stable, panic) == ScaleResult(want, want_ebc), label


def test_panic_then_unpanic_scale_down() -> None:
    d = decider(10, 93)
    assert d.scale(0, 1, 100, 100).desired == 10
    assert d.scale(0, 10, 100, 1000).desired == 100
    assert d.scale(30, 10, 1, 1).desired == 100  # traffic dropped, still panicking: no scale-down
    assert d.scale(61, 10, 1, 1).desired == 1  # a stable window after the last panic


def test_rate_limits() -> None:
    d = decider(10, 61)
    assert d.scale(0, 1, 1000, 1001).desired == 10  # needs 100, may only grow x10
    assert d.scale(0, 10, 1000, 1001).desired == 100
    d = decider(10, 61)
    assert d.scale(0, 100, 1, 1).desired == 10  # needs 1, may only shrink /10
    assert d.scale(0, 10, 1, 1).desired == 1
    d = decider(10, 81)
    assert d.scale(0, 0, 1000, 888).desired == 10  # no ready pod counts as one for the rate limit


def test_start_in_panic_mode_over_one_pod() -> None:
    for ready in (0, 1):
        d = decider(100, 11, ready=ready)
        assert d.panic_time is None and d.max_panic_pods == ready
    d = decider(100, 11, ready=2)
    assert d.panic_time is not None and d.max_panic_pods == 2


def test_scale_down_delay() -> None:
    d = decider(10, 0, panic_threshold=100, scale_down_delay=300.0)
    assert d.scale(2, 0, 40, 40).desired == 4
    assert d.scale(300, 0, 0, 0).desired == 4  # five minutes at lower concurrency: not yet
    assert d.scale(302, 0, 0, 0).desired == 0
    assert d.scale(540, 0, 40, 40).desired == 4
    assert d.scale(600, 0, 30, 30).desired == 4
    assert d.scale(660, 0, 0, 0).desired == 4
    assert d.scale(840, 0, 0, 0).desired == 3
    assert d.scale(900, 0, 0, 0).desired == 0
    d = decider(10, 0, panic_threshold=100, scale_down_delay=0.0)
    assert d.scale(0, 0, 40, 40).desired == 4
    assert d.scale(0.5, 0, 20, 20).desired == 2  # no delay: at once


# --- the PodAutoscaler around the decider -----------------------------------------------------------------


def spec(**changes: object) -> KPASettings:
    base = KPASettings(target=1.0, total=1.0, stable_window=60.0, panic_window=6.0, scale_to_zero_grace_period=30.0)
    return replace(base, **changes)  # type: ignore[arg-type]


def tick(kpa: KPA, now: float, ready: int, concurrency: float = 0.0) -> int:
    kpa.record(now, concurrency, concurrency)
    return kpa.desired(now, ready).desired


def test_new_revision_keeps_initial_scale_then_scales_to_zero_after_a_stable_window_idle() -> None:
    kpa = KPA(spec(), now=0.0)
    assert kpa.desired(0.0, 0).desired == 1  # no data yet: the initial scale holds while activating
    assert kpa.activity is Activity.ACTIVATING
    assert tick(kpa, 1.0, 1) == 1
    assert kpa.activity is Activity.ACTIVE
    now = 1.0
    while now < 61.0:
        now += 1.0
        assert tick(kpa, now, 1) == 1, f"scaled down at {now} before a whole stable window active"
    decision = kpa.desired(now, 1)
    assert kpa.activity is Activity.INACTIVE and decision.desired in (0, 1)
    assert tick(kpa, now + 1.0, 1) == 0  # the gateway has been in the path past the grace period


def test_activation_from_zero_is_immediate_and_uses_activation_scale() -> None:
    kpa = KPA(spec(activation_scale=3, max_scale=5), now=0.0)
    now = 0.0
    for _ in range(200):
        now += 1.0
        tick(kpa, now, 1 if kpa.scale else 0)
    assert kpa.scale == 0 and kpa.activity is Activity.INACTIVE
    kpa.activate(now + 0.2)
    decision = kpa.desired(now + 0.2, 0)
    assert decision.desired == 3 and decision.activity is Activity.ACTIVATING
    assert tick(kpa, now + 1.0, 3, concurrency=1.0) == 3
    assert kpa.activity is Activity.ACTIVE


def test_retention_keeps_the_last_replica() -> None:
    kpa = KPA(spec(scale_to_zero_pod_retention_period=120.0), now=0.0)
    now, went_inactive = 0.0, None
    while now < 400 and kpa.scale > 0:
        now += 1.0
        tick(kpa, now, 1)
        if went_inactive is None and kpa.activity is Activity.INACTIVE:
            went_inactive = now
    assert went_inactive is not None and now - went_inactive >= 120.0


def test_min_scale_and_disabled_scale_to_zero_keep_replicas() -> None:
    for kpa, floor in ((KPA(spec(min_scale=2, initial_scale=2), now=0.0), 2), (KPA(spec(enable_scale_to_zero=False), now=0.0), 1)):
        for second in range(1, 300):
            assert tick(kpa, float(second), floor) == floor


def test_burst_panics_scales_up_then_back_down_after_the_stable_window() -> None:
    kpa = KPA(spec(max_scale=10), now=0.0)
    ready, now, peak, panicked = 1, 0.0, 1, False
    for _ in range(20):  # 8 concurrent clients at target 1
        now += 1.0
        kpa.record(now, 8.0, 80.0)
        decision = kpa.desired(now, ready)
        panicked |= decision.panic
        ready = decision.desired  # replicas come up at once in this model
        peak = max(peak, ready)
    assert panicked and peak == 8
    calm = now
    while ready > 1 and now < calm + 200:
        now += 1.0
        kpa.record(now, 0.0, 0.0)
        decision = kpa.desired(now, ready)
        if decision.panic:
            assert decision.desired >= peak  # never down while panicking
        ready = max(decision.desired, 0)
    assert now - calm >= 6.0  # not before the panic window cleared


def test_meter_time_weighted_concurrency_and_rps() -> None:
    meter = ConcurrencyMeter(now=10.0)
    meter.started(10.0)
    meter.started(10.25)
    meter.finished(10.5)
    stat = meter.report(11.0)
    assert stat.concurrency == pytest.approx((0.25 * 1 + 0.25 * 2 + 0.5 * 1) / 1.0)
    assert stat.rps == 2.0 and meter.in_flight == 1 and meter.requests_total == 2
    meter.finished(11.5)
    assert meter.report(12.0).concurrency == pytest.approx(0.5)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.integers(0, 20)), min_size=1, max_size=60),
       st.integers(0, 3), st.integers(0, 12), st.floats(1.1, 20), st.floats(1.1, 20))
def test_invariants(load: list[tuple[float, int]], min_scale: int, extra: int, up_rate: float, down_rate: float) -> None:
    max_scale = min_scale + extra if extra else 0
    kpa = KPA(spec(min_scale=min_scale, max_scale=max_scale, initial_scale=max(1, min_scale),
                   max_scale_up_rate=up_rate, max_scale_down_rate=down_rate), now=0.0)
    now, previous_panic_max = 0.0, 0
    for concurrency, ready in load:
        now += 1.0
        kpa.record(now, concurrency, concurrency)
        decision = kpa.desired(now, ready)
        assert decision.desired >= min_scale or decision.desired == kpa.settings.initial_scale
        if max_scale:
            assert decision.desired <= max_scale
        raw = decision.decider_desired
        if raw >= 0 and not decision.reason.startswith("activation"):
            base = max(1, ready)
            assert raw <= max(math.ceil(up_rate * base), previous_panic_max)
            if decision.panic:
                assert raw >= previous_panic_max  # never scale down while panicking
        previous_panic_max = kpa.decider.max_panic_pods if decision.panic else 0
