"""Kubernetes' HPA algorithm: replica calculation with tolerance and missing/unready pods, the behavior
field's stabilization windows and rate policies, and its defaults; on a driven clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.autoscaling import HPA, Behavior, MetricTarget, PodSample
from serving.errors import AdmissionError

CPU80 = (MetricTarget("cpu", utilization=80),)


def pods(*usages: float | None, request: float = 1.0, unready: int = 0) -> list[PodSample]:
    out = []
    for index, usage in enumerate(usages):
        out.append(PodSample(f"p{index}", {} if usage is None else {"cpu": usage}, {"cpu": request}, ready=index >= unready))
    return out


def test_scale_up_is_ceil_of_ratio_times_ready_pods() -> None:
    hpa = HPA(1, 10, CPU80)
    decision = hpa.desired(0, 3, pods(1.0, 1.0, 1.0))  # 100 % of request vs 80 %
    assert decision.desired == 4 and decision.utilization["cpu"] == 100


def test_within_tolerance_no_change() -> None:
    hpa = HPA(1, 10, CPU80)
    assert hpa.desired(0, 3, pods(0.85, 0.85, 0.85)).desired == 3  # 106 % of target: within 10 %


def test_missing_pods_count_as_full_request_on_scale_down() -> None:
    hpa = HPA(1, 10, CPU80, behavior=Behavior.from_spec({"scaleDown": {"stabilizationWindowSeconds": 0}}))
    # Kubernetes' TestReplicaCalcMissingMetricsNoChangeGt: a missing pod would flip a scale-down into no change
    decision = hpa.desired(0, 4, pods(0.4, 0.4, 0.4, None))
    # 40 % vs 80 %: ratio 0.5 over 3 ready; with the missing pod at 100 %: (120+100)/4 = 55 % -> ceil(0.6875 * 4) = 3
    assert decision.desired == 3


def test_unready_cpu_pods_count_as_zero_on_scale_up() -> None:
    hpa = HPA(1, 10, CPU80)
    # 2 ready at 100 %, 1 unready: (100+100+0)/3 = 66 % < 80 %: the assumption flips the direction, no change
    assert hpa.desired(0, 3, pods(1.0, 1.0, 1.0, unready=1)).desired == 3


def test_scale_down_waits_for_the_stabilization_window() -> None:
    hpa = HPA(1, 10, CPU80)
    assert hpa.desired(0, 4, pods(0.8, 0.8, 0.8, 0.8)).desired == 4
    assert hpa.desired(15, 4, pods(0.2, 0.2, 0.2, 0.2)).desired == 4  # the 300 s window remembers 4
    assert hpa.desired(301, 4, pods(0.2, 0.2, 0.2, 0.2)).desired == 1
    assert hpa.desired(301, 4, pods(0.2, 0.2, 0.2, 0.2)).reason in ("DesiredWithinRange", "ReadyForNewScale")


def test_default_scale_up_policies_cap_growth_per_15s() -> None:
    hpa = HPA(1, 100, CPU80)
    decision = hpa.desired(0, 1, pods(8.0))  # wants 10; limit max(1 * 2, 1 + 4) = 5
    assert (decision.desired, decision.reason) == (5, "ScaleUpLimit")
    assert hpa.desired(5, 5, pods(8.0, 8.0, 8.0, 8.0, 8.0)).desired == 5  # 4 added in this period already
    assert hpa.desired(16, 5, pods(8.0, 8.0, 8.0, 8.0, 8.0)).desired == 10  # next period: 5 x 2


def test_select_policy_min_and_disabled() -> None:
    behavior = Behavior.from_spec({"scaleUp": {"selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}, {"type": "Percent", "value": 100, "periodSeconds": 60}]}})
    assert HPA(1, 10, CPU80, behavior=behavior).desired(0, 2, pods(4.0, 4.0)).desired == 3
    disabled = Behavior.from_spec({"scaleDown": {"selectPolicy": "Disabled"}})
    hpa = HPA(1, 10, CPU80, behavior=disabled)
    assert hpa.desired(400, 4, pods(0.1, 0.1, 0.1, 0.1)).desired == 4


def test_min_max_and_scaling_disabled_at_zero() -> None:
    hpa = HPA(2, 5, CPU80)
    assert hpa.desired(0, 7, pods(*[0.8] * 7)).desired == 5
    assert hpa.desired(0, 1, pods(0.8)).desired == 2
    assert hpa.desired(0, 0, []).reason == "ScalingDisabled"


def test_from_spec_and_bad_behavior() -> None:
    hpa = HPA.from_spec({"minReplicas": 1, "maxReplicas": 3, "metrics": [
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]})
    assert hpa.metrics[0].average_value == 100 * 2**20
    with pytest.raises(AdmissionError, match=r"spec.behavior.scaleUp.policies\[0\].type"):
        Behavior.from_spec({"scaleUp": {"policies": [{"type": "Bogus", "value": 1, "periodSeconds": 15}]}})


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.integers(0, 3), st.integers(1, 8), st.lists(st.tuples(st.floats(0, 4), st.integers(1, 12)), min_size=1, max_size=40))
def test_invariants(min_replicas: int, extra: int, steps: list[tuple[float, int]]) -> None:
    low, high = max(1, min_replicas), max(1, min_replicas) + extra
    hpa = HPA(low, high, CPU80)
    now, current = 0.0, low
    for usage, _ in steps:
        now += 15.0
        decision = hpa.desired(now, current, pods(*[usage] * current))
        assert low <= decision.desired <= high
        assert decision.desired <= max(current * 2, current + 4)  # the default scale-up policies
        current = decision.desired
