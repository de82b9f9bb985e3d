"""The LLM engine scaler: queue depth and KV-cache use in, engines out, within min/max, without flapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.autoscaling import EngineLoad, EngineScaler, EngineThresholds
from serving.errors import AdmissionError


def test_queue_depth_scales_up_and_back_down_after_the_window() -> None:
    scaler = EngineScaler(1, 2, EngineThresholds(scale_down_window=30.0))
    assert scaler.desired(0, 1, [EngineLoad(running=4, waiting=6, kv_usage=0.5)]).desired == 2
    assert scaler.desired(5, 2, [EngineLoad(running=4, waiting=5), EngineLoad()]).desired == 2  # second one starting
    assert scaler.desired(10, 2, [EngineLoad(), EngineLoad()]).desired == 2  # idle, but within the window
    assert scaler.desired(41, 2, [EngineLoad(), EngineLoad()]).desired == 1


def test_kv_cache_pressure_scales_up() -> None:
    scaler = EngineScaler(1, 4)
    assert scaler.desired(0, 2, [EngineLoad(running=8, kv_usage=0.95), EngineLoad(running=8, kv_usage=0.95)]).desired == 3


def test_no_scale_up_while_an_engine_is_starting() -> None:
    scaler = EngineScaler(1, 4)
    decision = scaler.desired(0, 2, [EngineLoad(waiting=20)])
    assert decision.desired == 2 and "starting" in decision.reason


def test_scale_to_zero_only_after_idle_and_back_on_a_waiting_request() -> None:
    scaler = EngineScaler(0, 2, EngineThresholds(scale_down_window=0.0, scale_to_zero_after=60.0))
    assert scaler.desired(0, 1, [EngineLoad(running=1)]).desired == 1
    assert scaler.desired(30, 1, [EngineLoad()]).desired == 1
    assert scaler.desired(61, 1, [EngineLoad()]).desired == 0
    assert scaler.desired(70, 0, []).desired == 0
    assert scaler.desired(71, 0, [], queued_at_router=1).desired == 1


def test_bad_thresholds_name_the_field() -> None:
    with pytest.raises(AdmissionError, match="target_kv_usage"):
        EngineThresholds(target_kv_usage=1.5)
    with pytest.raises(AdmissionError, match="maxReplicas"):
        EngineScaler(3, 2)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.integers(0, 2), st.integers(0, 4), st.lists(st.tuples(st.floats(0, 20), st.floats(0, 1)), min_size=1, max_size=50))
def test_within_bounds(low: int, extra: int, steps: list[tuple[float, float]]) -> None:
    high = max(1, low) + extra
    scaler = EngineScaler(low, high)
    current, now = max(1, low), 0.0
    for waiting, kv in steps:
        now += 5.0
        loads = [EngineLoad(running=1, waiting=waiting, kv_usage=kv)] * current
        current = scaler.desired(now, current, loads).desired
        assert low <= current <= high
