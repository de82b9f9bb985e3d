"""Knative's aggregation tests (pkg/autoscaler/aggregation), ported as facts: records in, averages out."""

from __future__ import annotations

import pytest

from serving.autoscaling.aggregation import MIN_EXPONENT, MaxWindow, TimedBuckets, WeightedBuckets, smoothing_coefficient
from serving.autoscaling.durations import parse_duration

T0 = 1000.0  # a whole second, so every offset below lands in the bucket Knative's test means


@pytest.mark.parametrize(("buckets", "want"), [(100, MIN_EXPONENT), (60, MIN_EXPONENT), (40, 0.20567), (6, 0.78456)])
def test_smoothing_coefficient(buckets: int, want: float) -> None:
    assert smoothing_coefficient(buckets) == pytest.approx(want, abs=1e-4)


def test_linear_window_average() -> None:
    buckets = TimedBuckets(5, 1)
    buckets.record(T0, 1)
    assert buckets.window_average(T0) == 1.0  # over the partial window since the first write, not 1/5
    for i in range(1, 5):
        buckets.record(T0 + i, i + 1)
    assert buckets.window_average(T0 + 4) == 15 / 5
    assert buckets.window_average(T0 + 3.6) == 15 / 5  # now lagging behind the last write
    assert buckets.window_average(T0 + 6) == (15 - 1 - 2) / (5 - 2)  # a short hole drops the old buckets
    assert buckets.window_average(T0 + 10) == 0.0  # a long hole: nothing
    buckets.record(T0 + 6, 91)
    assert buckets.window_average(T0 + 6) == (15 - 1 - 2 + 91) / 5  # gaps inside the window are zeros
    now = T0 + 60
    buckets.record(now, 1984)
    assert buckets.window_average(now) == 1984.0  # a window without data starts over
    buckets.record(now - 3, 4)
    assert buckets.window_average(now) == (4 + 1984) / 4
    now += 1
    buckets.record(now, 5)
    assert buckets.window_average(now) == (4 + 1984 + 5) / 5
    buckets.record(now - 3, 10)
    assert buckets.window_average(now) == (4 + 10 + 1984 + 5) / 5
    buckets.record(now - 6, 10)  # older than the window: ignored
    buckets.record(now - 5, 10)  # exactly a window old: ignored
    assert buckets.window_average(now) == (4 + 10 + 1984 + 5) / 5
    buckets.record(now + 5, 10)  # exactly a window without data: cleared
    assert buckets.window_average(now + 5) == 10.0


def test_same_bucket_sums_and_emptiness() -> None:
    buckets = TimedBuckets(120, 1)
    assert buckets.is_empty(T0)
    buckets.record(T0, 1)
    buckets.record(T0 + 0.1, 10)
    assert buckets.window_average(T0) == 11.0
    assert not buckets.is_empty(T0 + 120)
    assert buckets.is_empty(T0 + 121)


def test_weighted_window_average() -> None:
    buckets = WeightedBuckets(5, 1)
    m = buckets.smoothing
    buckets.record(T0, 2)
    want = 2 * m
    assert buckets.window_average(T0) == pytest.approx(want)
    want *= 1 - m  # a second later, no writes
    assert buckets.window_average(T0 + 1) == pytest.approx(want)
    buckets.record(T0 + 1, 2)
    want += 2 * m
    assert buckets.window_average(T0 + 1) == pytest.approx(want)
    for i in range(5):
        buckets.record(T0 + 2 + i, i + 2)
    want = 6 * m + 5 * m * (1 - m) + 4 * m * (1 - m) ** 2 + 3 * m * (1 - m) ** 3 + 2 * m * (1 - m) ** 4
    assert buckets.window_average(T0 + 6) == pytest.approx(want)
    assert buckets.window_average(T0 + 16) == 0.0


def test_max_window_holds_the_largest_value_for_its_duration() -> None:
    window = MaxWindow(300, 2)  # Knative's scale-down delay of 5 min at a 2 s tick
    window.record(2, 4)
    window.record(300, 0)
    assert window.current() == 4
    window.record(302, 0)
    assert window.current() == 0
    window.record(540, 4)
    window.record(600, 3)
    window.record(660, 0)
    assert window.current() == 4
    window.record(840, 0)
    assert window.current() == 3  # 4 scrolled out
    window.record(900, 0)
    assert window.current() == 0


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("1m30s", 90), ("1.5h", 5400), ("500ms", 0.5), ("0", 0), ("-2s", -2)])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["60", "", "s", "1x", "1m 2s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
