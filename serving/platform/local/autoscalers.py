"""The autoscalers that act on the embedded platform: an HPA or KEDA ScaledObject per Standard Deployment,
and the engine scaler per autoscaled LLMInferenceService.

The algorithms are pure (``serving.autoscaling``); this module feeds them what this machine measures and
remembers what they decided. The daemon asks ``replicas_for`` / ``engine_replicas`` how many replicas to
run while it reconciles, and calls ``sync(now, runners)`` once per pass: each autoscaler whose period has
elapsed measures, decides and, when its count changes, wakes the daemon so the next pass runs it.

- **HPA** (Kubernetes' controller on the replica processes): every ``sync_period`` (Kubernetes'
  ``--horizontal-pod-autoscaler-sync-period``, 15 s) each replica's process group is sampled: CPU as the
  group's CPU seconds over the period (threads and child processes included), memory as the group's RSS,
  against the main container's ``resources.requests``. A replica seen for the first time (new, or
  restarted) has no CPU figure yet: a missing metric, as a pod without a sample is to Kubernetes. The
  HPA object's ``status`` is written as Kubernetes writes it.
- **KEDA** (a ScaledObject on the gateway's rps or concurrency): every ``pollingInterval`` the route's
  meter is read; KEDA's HPA targets an AverageValue per replica, so desired = ceil(metric / target) with
  the HPA's tolerance, windows and bounds (``max(1, minReplicaCount)``); with ``minReplicaCount: 0`` the
  Deployment goes to zero after ``cooldownPeriod`` without activity and back to one on the first request.
- **LLM engines**: each engine's ``/metrics`` is scraped (``serving.llmd.monitor``'s parser) and the
  ``EngineScaler`` picks the count within ``spec.scaling``'s min and max.

A window Kubernetes leaves to the controller's flags (an HPA without ``behavior.scaleDown
.stabilizationWindowSeconds``, which is every HPA KServe renders) takes ``downscale_stabilization``
(``--horizontal-pod-autoscaler-downscale-stabilization``, 300 s). Each setting has an ``ODH_*`` variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import psutil

from serving.autoscaling.hpa import HPA, HPADecision, MetricTarget, PodSample, ScalingRules, parse_quantity
from serving.autoscaling.llm import EngineLoad, EngineScaler, EngineThresholds
from serving.autoscaling.meter import ConcurrencyMeter
from serving.errors import AdmissionError, FieldError
from serving.kserve.reconcile.policy import AutoscalingPolicy, MetricGoal
from serving.platform.local.replicas import ReplicaInfo

log = logging.getLogger(__name__)

SYNC_PERIOD_ENV = "ODH_HPA_SYNC_PERIOD_S"
DOWNSCALE_STABILIZATION_ENV = "ODH_HPA_DOWNSCALE_STABILIZATION_S"
ENGINE_SYNC_PERIOD_ENV = "ODH_ENGINE_SCALER_PERIOD_S"
ENGINE_SCALE_DOWN_WINDOW_ENV = "ODH_ENGINE_SCALE_DOWN_WINDOW_S"
MAIN_CONTAINER = "kserve-container"
ENGINE_SCRAPE_TIMEOUT = 2.0
# CPU time advances in clock ticks (10 ms): a rate over less than this would be mostly rounding.
MIN_CPU_INTERVAL = 0.5
_NOT_RUNNING = ("Pending", "Initializing")


@dataclass(frozen=True)
class AutoscalerSettings:
    """Platform-wide autoscaler settings (seconds)."""

    sync_period: float = 15.0
    downscale_stabilization: int = 300
    engine_sync_period: float = 2.0
    engine_scale_down_window: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AutoscalerSettings:
        """The defaults, each replaced by its ``ODH_*`` variable when set; a bad value raises ValueError
        naming the variable and what it takes."""
        env = os.environ if environ is None else environ
        return cls(
            sync_period=_seconds(env, SYNC_PERIOD_ENV, cls.sync_period, positive=True),
            downscale_stabilization=int(_seconds(env, DOWNSCALE_STABILIZATION_ENV, cls.downscale_stabilization, whole=True)),
            engine_sync_period=_seconds(env, ENGINE_SYNC_PERIOD_ENV, cls.engine_sync_period, positive=True),
            engine_scale_down_window=_seconds(env, ENGINE_SCALE_DOWN_WINDOW_ENV, cls.engine_scale_down_window),
        )


def _seconds(env: Mapping[str, str], name: str, default: float, *, positive: bool = False, whole: bool = False) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0 or (positive and value == 0) or not math.isfinite(value):
        raise ValueError(f"{name}={raw!r}: must be {'more than' if positive else 'at least'} 0 seconds")
    if whole and (not value.is_integer() or value > 3600):
        raise ValueError(f"{name}={raw!r}: must be whole seconds from 0 to 3600 (as stabilizationWindowSeconds)")
    return value


# --------------------------------------------------------------------------- measuring replica processes


class ProcessGroupMeter:
    """CPU and memory of replica process groups (a replica's pid leads its group: the model server and
    whatever threads or children it has). CPU is a rate, so each process's CPU time is remembered
    between samples; a group seen for the first time has no rate yet."""

    def __init__(self) -> None:
        # group leader -> (when sampled, CPU seconds per (pid, create time) of the group's processes then)
        self._groups: dict[int, tuple[float, dict[tuple[int, float], float]]] = {}

    def sample(self, leader: int, now: float) -> dict[str, float]:
        """``{"cpu": cores, "memory": bytes}`` for the group led by ``leader``; no ``cpu`` on the first sample
        of a leader, nothing at all when it is gone."""
        try:
            root = psutil.Process(leader)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            self._groups.pop(leader, None)
            return {}
        previous = self._groups.get(leader)
        if previous is not None and now - previous[0] < MIN_CPU_INTERVAL:
            return {"memory": float(sum(_rss(p) for p in processes))}  # too soon for a rate: keep the baseline
        seen: dict[tuple[int, float], float] = {}
        cpu_delta = rss = 0.0
        for proc in processes:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue  # gone meanwhile
            # Reaped children's time lands in their parent's children_* counters: it was spent in the group.
            total = times.user + times.system + times.children_user + times.children_system
            seen[key] = total
            if previous is not None:
                cpu_delta += max(0.0, total - previous[1].get(key, 0.0))
        usage = {"memory": rss}
        if previous is not None and now > previous[0]:
            usage["cpu"] = cpu_delta / (now - previous[0])
        self._groups[leader] = (now, seen)
        return usage

    def forget(self, live_leaders: Iterable[int]) -> None:
        """Drop what is remembered of groups whose leader is no longer a replica."""
        live = set(live_leaders)
        for leader in [p for p in self._groups if p not in live]:
            del self._groups[leader]


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


def container_requests(deployment: Mapping[str, Any]) -> dict[str, float]:
    """The main container's ``resources.requests`` as cores and bytes (the container the platform runs)."""
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    main = next((c for c in containers if c.get("name") == MAIN_CONTAINER), containers[0] if containers else {})
    requests = (main.get("resources") or {}).get("requests") or {}
    out: dict[str, float] = {}
    for resource in ("cpu", "memory"):
        if requests.get(resource) not in (None, ""):
            try:
                out[resource] = parse_quantity(str(requests[resource]))
            except ValueError:
                raise AdmissionError(FieldError(f"spec.template.spec.containers[{main.get('name')}].resources.requests.{resource}",
                                                f"{requests[resource]!r} is not a quantity (e.g. 500m, 1, 512Mi)"),
                                     kind="Deployment") from None
    return out


# --------------------------------------------------------------------------- one Deployment's autoscaler


class RunningDeployment(Protocol):
    """What an autoscaler reads of a running Deployment (``DeploymentRunner``)."""

    replicas: int

    def replica_infos(self) -> list[ReplicaInfo]: ...


MeterLookup = Callable[[str, str], ConcurrencyMeter | None]
StatusWriter = Callable[[str, str, str, dict[str, Any]], object]


def _with_default_down_window(policy: AutoscalingPolicy, behavior_spec: Mapping[str, Any] | None, window: int) -> HPA:
    """The policy's HPA; a scale-down window the object leaves unset is the controller's flag value."""
    behavior = policy.behavior
    if ((behavior_spec or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds") is None:
        down = behavior.scale_down
        behavior = replace(behavior, scale_down=ScalingRules(window, down.select_policy, down.policies))
    targets: list[MetricTarget] = []
    for goal in policy.metrics:
        if goal.metric in ("cpu", "memory"):
            targets.append(goal.resource_target())
        else:  # KEDA's external metric: an AverageValue per replica (a Value target is the total)
            targets.append(MetricTarget(goal.metric, average_value=goal.value))
    minimum = max(1, policy.min_replicas)
    return HPA(minimum, max(policy.max_replicas, minimum), targets, behavior, policy.tolerance)


@dataclass
class DeploymentAutoscaler:
    """An HPA or a ScaledObject acting on one Deployment: ``desired`` is what the Deployment should run."""

    policy: AutoscalingPolicy
    hpa: HPA
    desired: int
    period: float
    next_sync: float
    last_active: float
    status: dict[str, Any] = field(default_factory=dict)
    last_scale_time: str | None = None

    @property
    def keda(self) -> bool:
        return self.policy.source == "ScaledObject"


class Autoscalers:
    """Every autoscaler the daemon runs, keyed by ``(namespace, Deployment name)``."""

    def __init__(self, settings: AutoscalerSettings, write_status: StatusWriter, wake: Callable[[], None],
                 meter_for: MeterLookup | None = None, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self._write_status = write_status
        self._wake = wake
        self._meter_for = meter_for
        self._clock = clock or time.monotonic
        self._meter = ProcessGroupMeter()
        self.deployments: dict[tuple[str, str], DeploymentAutoscaler] = {}
        self._requests: dict[tuple[str, str], dict[str, float]] = {}
        self.engines: dict[tuple[str, str], EnginePoolAutoscaler] = {}
        self._engine_ports: dict[tuple[str, str], list[int]] = {}

    # -- asked while reconciling -----------------------------------------------------------------

    def replicas_for(self, policy: AutoscalingPolicy, deployment: Mapping[str, Any], behavior_spec: Mapping[str, Any] | None,
                     current: int | None) -> int:
        """How many replicas ``deployment`` (owned by ``policy``) should run now. The first call starts at
        Kubernetes' count for a new Deployment without ``replicas`` (1) moved into the bounds."""
        key = (policy.namespace, policy.deployment)
        self._requests[key] = container_requests(deployment)
        scaler = self.deployments.get(key)
        now = self._clock()
        if scaler is None or scaler.policy != policy:
            hpa = _with_default_down_window(policy, behavior_spec, self.settings.downscale_stabilization)
            start = scaler.desired if scaler is not None else (current if current is not None else 1)
            if policy.source == "ScaledObject":
                period = float(policy.polling_interval_seconds or self.settings.sync_period)
                start = min(max(start, policy.min_replicas), policy.max_replicas)
            else:
                period = self.settings.sync_period
                start = min(max(start, hpa.min_replicas), hpa.max_replicas)
            scaler = self.deployments[key] = DeploymentAutoscaler(policy, hpa, start, period, now + period, now)
        return scaler.desired

    def engine_replicas(self, key: tuple[str, str], minimum: int, maximum: int, current: int | None) -> int:
        """How many engines the pool ``key`` (namespace, engine Deployment) should run, within [min, max]."""
        pool = self.engines.get(key)
        if pool is None or (pool.scaler.min_engines, pool.scaler.max_engines) != (minimum, maximum):
            thresholds = EngineThresholds(scale_down_window=self.settings.engine_scale_down_window)
            start = pool.desired if pool is not None else (current if current is not None else minimum)
            pool = self.engines[key] = EnginePoolAutoscaler(EngineScaler(minimum, maximum, thresholds),
                                                            min(max(start, minimum), maximum))
        return pool.desired

    def set_engine_ports(self, key: tuple[str, str], ports: list[int]) -> None:
        """The loopback HTTP ports of the pool's engines (ready or not: a scrape that fails skips one)."""
        self._engine_ports[key] = ports

    def retain(self, live: Iterable[tuple[str, str]]) -> None:
        """Forget the autoscalers of Deployments no longer desired (their objects went)."""
        keep = set(live)
        for table in (self.deployments, self._requests, self.engines, self._engine_ports):
            for key in [k for k in table if k not in keep]:
                pool = table.pop(key)
                if isinstance(pool, EnginePoolAutoscaler):
                    pool.cancel()

    # -- once per reconcile pass -----------------------------------------------------------------

    def sync(self, runners: Mapping[tuple[str, str], RunningDeployment]) -> None:
        """Run every autoscaler whose period has elapsed; wake the daemon when a count changed."""
        now = self._clock()
        changed = False
        for key, scaler in self.deployments.items():
            runner = runners.get(key)
            if runner is None or now < scaler.next_sync:
                continue
            scaler.next_sync = now + scaler.period
            try:
                changed |= self._sync_deployment(now, key, scaler, runner)
            except Exception:  # one Deployment's autoscaler must not stop the others
                log.exception("autoscaling Deployment %s/%s failed", *key)
        for key, pool in self.engines.items():
            runner = runners.get(key)
            if runner is None:
                continue
            changed |= pool.sync(now, runner.replicas, self._engine_ports.get(key, []), self.settings.engine_sync_period)
        leaders = [i.pid for r in runners.values() for i in r.replica_infos() if i.pid]
        self._meter.forget(leaders)
        if changed:
            self._wake()

    def _sync_deployment(self, now: float, key: tuple[str, str], scaler: DeploymentAutoscaler, runner: RunningDeployment) -> bool:
        current = runner.replicas
        if scaler.keda:
            decision = self._keda_decision(now, key, scaler, runner)
        else:
            decision = scaler.hpa.desired(now, current, self._samples(now, key, runner))
        desired = decision.desired
        if desired != current:
            scaler.last_scale_time = _timestamp()
            log.info("%s %s/%s: %d -> %d replicas (%s)", scaler.policy.source, *key, current, desired, decision.reason)
        scaler.desired = desired
        if not scaler.keda:
            status = hpa_status(scaler.policy, decision, current, scaler.last_scale_time, scaler.status)
            if status != scaler.status:
                scaler.status = status
                self._write_status("HorizontalPodAutoscaler", key[0], key[1], status)
        return desired != current

    def _samples(self, now: float, key: tuple[str, str], runner: RunningDeployment) -> list[PodSample]:
        requests = self._requests.get(key, {})
        samples = []
        for info in runner.replica_infos():
            if info.state in ("Terminating", "Stopped"):
                continue
            pending = info.pid is None or info.state in _NOT_RUNNING
            usage = {} if pending or info.pid is None else self._meter.sample(info.pid, now)
            samples.append(PodSample(info.name, usage, requests, ready=info.ready, pending=pending))
        return samples

    def _keda_decision(self, now: float, key: tuple[str, str], scaler: DeploymentAutoscaler,
                       runner: RunningDeployment) -> HPADecision:
        """KEDA: activation between 0 and 1 on its own; above that, its HPA on the gateway's numbers (and on
        cpu/memory, sampled as for an HPA; those triggers are always active, so they never reach 0)."""
        policy, current = scaler.policy, runner.replicas
        values = self._request_metrics(key, policy.request_metrics)
        resource = bool(policy.resource_metrics)
        if not values and not resource:
            return HPADecision(current, "no trigger the embedded platform can read", None, {})
        active = resource or any(v > 0 for v in values.values())
        if active:
            scaler.last_active = now
        if current == 0:
            return HPADecision(max(1, policy.min_replicas), "activated", None, values) if active else \
                HPADecision(0, "inactive", None, values)
        if policy.min_replicas == 0 and not active and now - scaler.last_active >= (policy.cooldown_period_seconds or 0):
            return HPADecision(0, "cooldown period passed without activity", None, values)
        shares: dict[str, float] = {goal.metric: _per_replica(goal, values.get(goal.metric, 0.0), current)
                                    for goal in policy.request_metrics}
        if resource:
            samples = [replace(s, usage={**s.usage, **shares}) for s in self._samples(now, key, runner)]
        else:
            samples = [PodSample(f"replica-{i}", shares) for i in range(current)]
        return scaler.hpa.desired(now, current, samples)

    def _request_metrics(self, key: tuple[str, str], goals: tuple[MetricGoal, ...]) -> dict[str, float]:
        meter = self._meter_for(*key) if self._meter_for is not None else None
        if meter is None or not goals:
            return {}
        stat = meter.report(self._clock())
        return {goal.metric: stat.rps if goal.metric == "rps" else stat.concurrency for goal in goals}


def _per_replica(goal: MetricGoal, total: float, replicas: int) -> float:
    # An AverageValue target compares the total shared among the replicas; a Value target the total itself.
    return total if goal.target_type == "Value" else total / max(replicas, 1)


# --------------------------------------------------------------------------- HPA status, as Kubernetes writes it

_LIMITED = {"ScaleUpLimit", "TooManyReplicas", "ScaleDownLimit", "TooFewReplicas"}
_LIMIT_MESSAGES = {
    "TooManyReplicas": "the desired replica count is more than the maximum replica count",
    "TooFewReplicas": "the desired replica count is less than the minimum replica count",
    "ScaleUpLimit": "the desired replica count is increasing faster than the maximum scale rate",
    "ScaleDownLimit": "the desired replica count is decreasing faster than the maximum scale rate",
}
_STABILIZED = {
    "ScaleUpStabilized": "recent recommendations were lower than current one, applying the lowest recent recommendation",
    "ScaleDownStabilized": "recent recommendations were higher than current one, applying the highest recent recommendation",
}


def hpa_status(policy: AutoscalingPolicy, decision: HPADecision, current: int, last_scale_time: str | None,
               previous: Mapping[str, Any]) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler ``status`` for ``decision`` taken at ``current`` replicas."""
    reason = decision.reason
    if reason.startswith("Current number of replicas above"):
        reason = "TooManyReplicas"
    elif reason.startswith("Current number of replicas below"):
        reason = "TooFewReplicas"
    if decision.desired != current:
        able = ("SucceededRescale", f"the HPA controller was able to update the target scale to {decision.desired}")
    elif reason in _STABILIZED:
        able = (reason, _STABILIZED[reason])
    else:
        able = ("ReadyForNewScale", "recommended size matches current size")
    if reason == "ScalingDisabled":
        active = ("False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")
    elif reason == "FailedGetResourceMetric":
        active = ("False", "FailedGetResourceMetric",
                  "the HPA was unable to compute the replica count: no ready replica reported the metric")
    else:
        names = " and ".join(f"{g.metric} resource" + (" utilization (percentage of request)" if g.target_type == "Utilization" else "")
                             for g in policy.metrics)
        active = ("True", "ValidMetricFound", f"the HPA was able to successfully calculate a replica count from {names}")
    if reason in _LIMITED:
        limited = ("True", reason, _LIMIT_MESSAGES[reason])
    else:
        limited = ("False", "DesiredWithinRange", "the desired count is within the acceptable range")
    conditions = [_condition("AbleToScale", "True", *able, previous), _condition("ScalingActive", *active, previous),
                  _condition("ScalingLimited", *limited, previous)]
    status: dict[str, Any] = {"currentReplicas": current, "desiredReplicas": decision.desired}
    metrics = [_current_metric(goal, decision.utilization[goal.metric]) for goal in policy.metrics if goal.metric in decision.utilization]
    if metrics:
        status["currentMetrics"] = metrics
    if last_scale_time:
        status["lastScaleTime"] = last_scale_time
    status["conditions"] = conditions
    return status


def _current_metric(goal: MetricGoal, value: float) -> dict[str, Any]:
    current: dict[str, Any]
    if goal.target_type == "Utilization":
        current = {"averageUtilization": int(value)}
    elif goal.metric == "cpu":
        current = {"averageValue": f"{round(value * 1000)}m"}
    else:
        current = {"averageValue": str(round(value))}
    return {"type": "Resource", "resource": {"name": goal.metric, "current": current}}


def _condition(kind: str, status: str, reason: str, message: str, previous: Mapping[str, Any]) -> dict[str, Any]:
    before = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status else _timestamp()
    return {"type": kind, "status": status, "lastTransitionTime": since, "reason": reason, "message": message}


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- LLM engines


class EnginePoolAutoscaler:
    """One LLMInferenceService's engine pool: scrapes the engines in the background, decides on the latest."""

    def __init__(self, scaler: EngineScaler, desired: int) -> None:
        self.scaler = scaler
        self.desired = desired
        self.loads: list[EngineLoad] = []
        self.last_decision = ""
        self._next_sync = 0.0
        self._scrape: asyncio.Task[list[EngineLoad]] | None = None

    def sync(self, now: float, current: int, ports: list[int], period: float) -> bool:
        """Decide on the last scrape (when one finished) and start the next; True when the count changed."""
        changed = False
        if self._scrape is not None and self._scrape.done():
            with contextlib.suppress(Exception):
                self.loads = self._scrape.result()
                decision = self.scaler.desired(now, current, self.loads)
                self.last_decision = decision.reason
                if decision.desired != self.desired:
                    log.info("engines %d -> %d (%s)", self.desired, decision.desired, decision.reason)
                    changed = True
                self.desired = decision.desired
            self._scrape = None
        if self._scrape is None and now >= self._next_sync:
            self._next_sync = now + period
            self._scrape = asyncio.create_task(scrape_engines(ports))
        return changed

    def cancel(self) -> None:
        if self._scrape is not None:
            self._scrape.cancel()


async def scrape_engines(ports: list[int]) -> list[EngineLoad]:
    """The load of each engine that answers ``/metrics`` on its loopback port (the healthy ones)."""
    from serving.llmd.monitor import parse_vllm_metrics

    async def one(client: httpx.AsyncClient, port: int) -> EngineLoad | None:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        values = parse_vllm_metrics(response.text)
        return EngineLoad(running=float(values.get("running", 0)), waiting=float(values.get("waiting", 0)),
                          kv_usage=float(values.get("kv_usage", 0.0)))

    async with httpx.AsyncClient(timeout=ENGINE_SCRAPE_TIMEOUT) as client:
        loads = await asyncio.gather(*(one(client, port) for port in ports))
    return [load for load in loads if load is not None]


def engine_bounds(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(min, max)`` engines of an LLMInferenceService's ``spec.scaling`` (None: a fixed ``spec.replicas``).

    The CRD's shape: ``scaling.minReplicas`` (default 1, at least 1), ``scaling.maxReplicas`` (required),
    and an actuator (``wva`` or ``keda``); here both mean the engine scaler on the engines' own metrics."""
    scaling = spec.get("scaling")
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise AdmissionError(FieldError("spec.scaling", "must be an object: {minReplicas, maxReplicas, wva: {...}}"),
                             kind="LLMInferenceService")
    errors = []
    minimum, maximum = scaling.get("minReplicas", 1), scaling.get("maxReplicas")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        errors.append(FieldError("spec.scaling.minReplicas", f"must be an integer >= 1 (got {minimum!r})"))
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        errors.append(FieldError("spec.scaling.maxReplicas", f"is required: an integer >= 1 (got {maximum!r})"))
    elif isinstance(minimum, int) and minimum > maximum:
        errors.append(FieldError("spec.scaling.minReplicas", f"({minimum}) cannot exceed spec.scaling.maxReplicas ({maximum})"))
    if "wva" not in scaling and "keda" not in scaling:
        errors.append(FieldError("spec.scaling", "either wva or keda must be specified when scaling is configured (e.g. wva: {hpa: {}})"))
    if errors or not isinstance(maximum, int):
        raise AdmissionError(errors, kind="LLMInferenceService")
    return int(minimum), maximum
