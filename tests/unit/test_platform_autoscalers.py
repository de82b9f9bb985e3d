"""The embedded platform's autoscaler loop without a daemon: settings, HPA status, engine bounds, KEDA on a
real ConcurrencyMeter with an injected clock, and process-group CPU of a real busy process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from support import wait_until

from serving.autoscaling.meter import ConcurrencyMeter
from serving.errors import AdmissionError
from serving.kserve.reconcile.policy import autoscaling_policy
from serving.platform.local.autoscalers import (
    Autoscalers,
    AutoscalerSettings,
    ProcessGroupMeter,
    container_requests,
    engine_bounds,
)
from serving.platform.local.replicas import ReplicaInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRunner:
    replicas: int
    infos: list[ReplicaInfo] = field(default_factory=list)

    def replica_infos(self) -> list[ReplicaInfo]:
        return self.infos


def test_settings_from_env_name_the_variable_on_a_bad_value() -> None:
    settings = AutoscalerSettings.from_env({"ODH_HPA_SYNC_PERIOD_S": "1", "ODH_HPA_DOWNSCALE_STABILIZATION_S": "0"})
    assert (settings.sync_period, settings.downscale_stabilization) == (1.0, 0)
    assert AutoscalerSettings.from_env({}) == AutoscalerSettings()
    with pytest.raises(ValueError, match="ODH_HPA_SYNC_PERIOD_S='0'"):
        AutoscalerSettings.from_env({"ODH_HPA_SYNC_PERIOD_S": "0"})
    with pytest.raises(ValueError, match=r"ODH_HPA_DOWNSCALE_STABILIZATION_S='1\.5'.*whole seconds"):
        AutoscalerSettings.from_env({"ODH_HPA_DOWNSCALE_STABILIZATION_S": "1.5"})


def test_engine_bounds_follow_the_crd_and_name_the_field() -> None:
    assert engine_bounds({"replicas": 1}) is None
    assert engine_bounds({"scaling": {"maxReplicas": 3, "wva": {"hpa": {}}}}) == (1, 3)
    with pytest.raises(AdmissionError) as info:
        engine_bounds({"scaling": {"minReplicas": 4, "maxReplicas": 2}})
    fields = {e.field for e in info.value.errors}
    assert fields == {"spec.scaling.minReplicas", "spec.scaling"}


def test_container_requests_read_the_main_container() -> None:
    deployment = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "resources": {"requests": {"cpu": "4"}}},
        {"name": "kserve-container", "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
    ]}}}}
    assert container_requests(deployment) == {"cpu": 0.25, "memory": float(1 << 30)}


def hpa_object(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "m-predictor", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "m-predictor"}, "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource",
                                  "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
                     "behavior": {}, **spec}}


def test_an_hpa_without_a_scale_down_window_takes_the_platform_default_and_writes_kubernetes_status() -> None:
    clock, written, woken = Clock(), {}, []
    scalers = Autoscalers(AutoscalerSettings(sync_period=1, downscale_stabilization=7), lambda *a: written.update({a[:3]: a[3]}),
                          lambda: woken.append(1), clock=clock)
    deployment = {"spec": {"template": {"spec": {"containers": [{"name": "kserve-container", "resources": {"requests": {"cpu": "1"}}}]}}}}
    policy = autoscaling_policy(hpa_object())
    assert scalers.replicas_for(policy, deployment, {}, None) == 1
    assert scalers.deployments[("ns", "m-predictor")].hpa.behavior.scale_down.stabilization_window_seconds == 7
    # No replica process: no metric, so the HPA keeps the count and says why.
    clock.now += 1
    scalers.sync({("ns", "m-predictor"): FakeRunner(1, [ReplicaInfo("p0", "Ready", True, 1, None, 0, 0, "")])})
    status = written[("HorizontalPodAutoscaler", "ns", "m-predictor")]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"AbleToScale": ("True", "ReadyForNewScale"), "ScalingActive": ("False", "FailedGetResourceMetric"),
                          "ScalingLimited": ("False", "DesiredWithinRange")}
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 1) and not woken


def keda_object(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "k-predictor", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"name": "k-predictor"}, "pollingInterval": 1, "cooldownPeriod": 5,
                     "minReplicaCount": 0, "maxReplicaCount": 4,
                     "triggers": [{"type": "prometheus", "metadata": {"serverAddress": "", "threshold": "2",
                                   "query": 'sum(odh_gateway_in_flight{route="ns/k"})'}}], **spec}}


def test_keda_scales_on_gateway_concurrency_and_to_zero_after_the_cooldown() -> None:
    clock, woken = Clock(), []
    meter = ConcurrencyMeter(clock.now)
    scalers = Autoscalers(AutoscalerSettings(), lambda *a: None, lambda: woken.append(1),
                          meter_for=lambda ns, name: meter if (ns, name) == ("ns", "k-predictor") else None, clock=clock)
    policy = autoscaling_policy(keda_object())
    assert scalers.replicas_for(policy, {}, None, None) == 1  # a new Deployment starts at 1
    runner = FakeRunner(1)
    for _ in range(6):  # six requests in flight for the whole period: 6 / 2 per replica -> 3
        meter.started(clock.now)
    clock.now += 1
    scalers.sync({("ns", "k-predictor"): runner})
    assert scalers.replicas_for(policy, {}, None, 1) == 3 and woken
    for _ in range(6):
        meter.finished(clock.now)
    runner.replicas = 3
    seen = []
    for _ in range(8):  # idle: the cooldown (5 s) passes, then zero
        clock.now += 1
        scalers.sync({("ns", "k-predictor"): runner})
        runner.replicas = scalers.replicas_for(policy, {}, None, runner.replicas)
        seen.append(runner.replicas)
    assert seen[-1] == 0 and seen[0] > 0
    meter.started(clock.now)  # a request arrives (the gateway holds it): activation
    clock.now += 1
    scalers.sync({("ns", "k-predictor"): runner})
    assert scalers.replicas_for(policy, {}, None, 0) == 1


def test_process_group_cpu_counts_a_busy_child_of_the_leader() -> None:
    # The leader sleeps; its child burns a core: the group's CPU is the child's.
    code = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'while True: pass'])\ntime.sleep(300)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        meter = ProcessGroupMeter()
        wait_until(lambda: psutil.Process(proc.pid).children(), timeout=30, what="the busy child")
        first = meter.sample(proc.pid, time.monotonic())
        assert "cpu" not in first and first["memory"] > 0
        assert "cpu" not in meter.sample(proc.pid, time.monotonic())  # too soon after the first: no rate from rounding
        cores = wait_until(lambda: (u := meter.sample(proc.pid, time.monotonic())).get("cpu", 0) > 0.3 and u["cpu"],
                           timeout=30, interval=0.3, what="the child's CPU in the group's")
        assert cores < 1.2  # one busy process: about one core, whatever the machine has
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
