"""Health (Ready, replicas, restarts, crash loops) and SLO evaluation against the LifecyclePolicy."""

from __future__ import annotations

from typing import Any

import pytest

from serving.lifecycle import SLO_ERROR_RATE, SLO_P95_MS, LifecyclePolicy
from serving.operate.assess import assess
from serving.operate.health import assess_health
from serving.operate.inventory import Inventory, build_inventory
from serving.operate.scrape import parse_metrics
from serving.operate.slo import evaluate_slo
from serving.operate.window import TrafficFigures

ISVC = "serving.kserve.io/inferenceservice"


def isvc(name: str, ready: str = "True", reason: str = "", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason}]}}


def pod(owner: str, name: str, ready: bool, restarts: int, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": "process exited with code 1"}} if waiting else {"running": {}}
    return {"metadata": {"name": name, "namespace": "default", "labels": {ISVC: owner}},
            "status": {"containerStatuses": [{"ready": ready, "restartCount": restarts, "state": state}]}}


def deployment(owner: str, desired: int, ready: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{owner}-predictor", "namespace": "default", "labels": {ISVC: owner}},
            "status": {"replicas": desired, "readyReplicas": ready}}


def inventory_of(*objects: tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]) -> Inventory:
    return build_inventory(inference_services=[o[0] for o in objects], pods=[p for o in objects for p in o[1]],
                           deployments=[o[2] for o in objects])


def test_healthy_deployment() -> None:
    inventory = inventory_of((isvc("iris"), [pod("iris", "iris-0", True, 0)], deployment("iris", 1, 1)))
    health = assess_health(inventory.served[0], inventory, {"default/iris": 0})
    assert health.healthy and health.state == "ready" and health.reason == ""
    assert (health.ready_replicas, health.desired_replicas, health.restarts, health.new_restarts) == (1, 1, 0, 0)


def test_restarts_going_up_while_replicas_are_missing_is_a_crash_loop() -> None:
    inventory = inventory_of((isvc("bad", "Unknown", "MinimumReplicasUnavailable"), [pod("bad", "bad-0", False, 5)],
                              deployment("bad", 1, 0)))
    health = assess_health(inventory.served[0], inventory, {"default/bad": 3})
    assert health.crash_loop and health.state == "crash-loop" and not health.healthy
    assert health.new_restarts == 2 and health.reason == "MinimumReplicasUnavailable"


def test_restarts_that_went_up_with_every_replica_ready_are_no_crash_loop() -> None:
    inventory = inventory_of((isvc("iris"), [pod("iris", "iris-0", True, 1)], deployment("iris", 1, 1)))
    health = assess_health(inventory.served[0], inventory, {"default/iris": 0})
    assert health.new_restarts == 1 and not health.crash_loop and health.healthy


def test_not_ready_without_restarts_is_not_ready_not_a_crash_loop() -> None:
    inventory = inventory_of((isvc("slow", "False", "ModelLoading"), [pod("slow", "slow-0", False, 0)], deployment("slow", 1, 0)))
    health = assess_health(inventory.served[0], inventory, {"default/slow": 0})
    assert health.state == "not-ready" and health.reason == "ModelLoading" and not health.crash_loop


def test_first_look_sees_a_loop_the_platform_already_backs_off_and_fewer_restarts_are_none_new() -> None:
    inventory = inventory_of((isvc("bad", "Unknown"), [pod("bad", "bad-0", False, 2, "CrashLoopBackOff")], deployment("bad", 1, 0)))
    first = assess_health(inventory.served[0], inventory, {})
    assert first.crash_loop and first.new_restarts == 0
    replaced = assess_health(inventory.served[0], inventory, {"default/bad": 9})
    assert replaced.new_restarts == 0


def figures(requests: float, errors: float, p95_ms: float | None) -> TrafficFigures:
    return TrafficFigures(seconds=10.0, requests=requests, errors=errors, p95_ms=p95_ms)


def test_slo_ok_breached_and_no_traffic() -> None:
    policy = LifecyclePolicy(slo_error_rate=0.05, slo_p95_ms=200)
    assert evaluate_slo(policy, figures(100, 5, 150)).state == "ok"  # 5% is not past 5%
    breached = evaluate_slo(policy, figures(100, 6, 250))
    assert breached.breached
    assert breached.reasons == ("error rate 6.0% > 5.0%", "p95 250 ms > 200 ms")
    assert evaluate_slo(policy, figures(0, 0, None)).state == "no-traffic"


def test_assess_reads_each_deployments_slo_annotations_and_reports_a_bad_one() -> None:
    metrics = ('odh_gateway_requests_total{route="default/strict",code="200"} 90\n'
               'odh_gateway_requests_total{route="default/strict",code="500"} 10\n'
               'odh_gateway_requests_total{route="default/lenient",code="200"} 90\n'
               'odh_gateway_requests_total{route="default/lenient",code="500"} 10\n')
    inventory = build_inventory(inference_services=[
        isvc("strict", annotations={SLO_ERROR_RATE: "0.01"}), isvc("lenient", annotations={SLO_ERROR_RATE: "0.5"}),
        isvc("typo", annotations={SLO_P95_MS: "fast"})])
    found = {a.key: a for a in assess(parse_metrics("", 0.0), parse_metrics(metrics, 10.0), inventory, {})}
    assert found["default/strict"].slo.breached and found["default/strict"].state == "slo-breached"
    assert found["default/lenient"].slo.state == "ok" and found["default/lenient"].state == "ok"
    assert found["default/typo"].slo.state == "invalid" and SLO_P95_MS in found["default/typo"].slo.reasons[0]
    assert found["default/strict"].traffic.request_rate == pytest.approx(10.0)


def test_assess_limits_to_a_namespace() -> None:
    other = isvc("x")
    other["metadata"]["namespace"] = "team"
    inventory = build_inventory(inference_services=[isvc("iris"), other])
    assert [a.key for a in assess(parse_metrics("", 0.0), parse_metrics("", 1.0), inventory, {}, "team")] == ["team/x"]
