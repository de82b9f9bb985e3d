"""Kubernetes' HorizontalPodAutoscaler algorithm (``pkg/controller/podautoscaler``), over an injectable clock.

Per resource metric: desired = ceil(ready pods x current / target), no change within the 0.1 tolerance;
pods without a metric count as using 100 % of their request on a scale-down and 0 % on a scale-up; pending
pods (and, for cpu, unready ones) are left out, and count as 0 % when scaling up; a change of direction
caused by those assumptions is no change. The largest proposal over all metrics wins. Then the
``behavior`` field: stabilization windows (the highest recommendation of the scale-down window, the lowest
of the scale-up window), rate policies (``Pods``/``Percent`` per ``periodSeconds``, ``selectPolicy``
``Max``/``Min``/``Disabled``) and min/max replicas, with Kubernetes' defaults (scale-down window 300 s,
100 % per 15 s; scale-up window 0 s, the larger of 100 % or 4 pods per 15 s).

Use: ``HPA.from_spec(hpa_object["spec"])`` once, then every ``sync period`` (Kubernetes: 15 s) call
``desired(now, current_replicas, samples)`` with one ``PodSample`` per replica process and run the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.errors import AdmissionError, FieldError

TOLERANCE = 0.1
DEFAULT_SCALE_DOWN_WINDOW = 300
SYNC_PERIOD = 15.0

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True, slots=True)
class ScalingRules:
    stabilization_window_seconds: int
    select_policy: SelectPolicy = "Max"
    policies: tuple[ScalingPolicy, ...] = ()


def default_scale_up() -> ScalingRules:
    return ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)))


def default_scale_down() -> ScalingRules:
    return ScalingRules(DEFAULT_SCALE_DOWN_WINDOW, "Max", (ScalingPolicy("Percent", 100, 15),))


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, path: str = "spec.behavior") -> Behavior:
        """An autoscaling/v2 ``behavior`` with Kubernetes' defaulting and validation."""
        spec = spec or {}
        errors: list[FieldError] = []
        up = _rules(spec.get("scaleUp"), default_scale_up(), f"{path}.scaleUp", errors)
        down = _rules(spec.get("scaleDown"), default_scale_down(), f"{path}.scaleDown", errors)
        if errors:
            raise AdmissionError(errors, kind="HorizontalPodAutoscaler")
        return cls(up, down)


def _rules(spec: Mapping[str, Any] | None, default: ScalingRules, path: str, errors: list[FieldError]) -> ScalingRules:
    if spec is None:
        return default
    window = spec.get("stabilizationWindowSeconds", default.stabilization_window_seconds)
    if not isinstance(window, int) or not 0 <= window <= 3600:
        errors.append(FieldError(f"{path}.stabilizationWindowSeconds", f"must be an integer in [0, 3600], got {window!r}"))
        window = default.stabilization_window_seconds
    select = spec.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        errors.append(FieldError(f"{path}.selectPolicy", f"must be Max, Min or Disabled, got {select!r}"))
        select = "Max"
    policies: list[ScalingPolicy] = []
    raw_policies = spec.get("policies")
    if raw_policies is None:
        policies = list(default.policies)
    else:
        for index, policy in enumerate(raw_policies):
            where = f"{path}.policies[{index}]"
            kind, value, period = policy.get("type"), policy.get("value"), policy.get("periodSeconds")
            if kind not in ("Pods", "Percent"):
                errors.append(FieldError(f"{where}.type", f"must be Pods or Percent, got {kind!r}"))
            elif not isinstance(value, int) or value <= 0:
                errors.append(FieldError(f"{where}.value", f"must be a positive integer, got {value!r}"))
            elif not isinstance(period, int) or not 0 < period <= 1800:
                errors.append(FieldError(f"{where}.periodSeconds", f"must be an integer in (0, 1800], got {period!r}"))
            else:
                policies.append(ScalingPolicy(kind, value, period))
        if not raw_policies and select != "Disabled":
            errors.append(FieldError(f"{path}.policies", "must have at least one policy (or selectPolicy: Disabled)"))
    return ScalingRules(window, select, tuple(policies))


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """A ``Resource`` metric: ``resource`` (cpu, memory) at ``utilization`` percent of the request, or at an
    ``average_value`` per pod (cores, bytes)."""

    resource: str
    utilization: int | None = None
    average_value: float | None = None


@dataclass(frozen=True, slots=True)
class PodSample:
    """One replica: its ``usage`` and ``requests`` per resource (cpu in cores, memory in bytes; a resource
    missing from ``usage`` is a missing metric); ``ready`` as its readiness probe says; ``pending`` while
    it has not started."""

    name: str
    usage: Mapping[str, float]
    requests: Mapping[str, float] = field(default_factory=dict)
    ready: bool = True
    pending: bool = False


@dataclass(frozen=True, slots=True)
class HPADecision:
    """``desired`` replicas to run; ``reason`` (Kubernetes' condition reason, e.g. ``ScaleDownStabilized``,
    ``ScaleUpLimit``, ``TooManyReplicas``); ``metric_desired`` the unstabilized proposal (None when no
    metric could be computed); ``utilization`` per resource (percent, or the average value)."""

    desired: int
    reason: str
    metric_desired: int | None
    utilization: Mapping[str, float]


class MetricsUnavailable(Exception):
    """No ready pod reported the metric (the HPA keeps the current scale)."""


class HPA:
    def __init__(self, min_replicas: int = 1, max_replicas: int = 1, metrics: Sequence[MetricTarget] = (),
                 behavior: Behavior | None = None, tolerance: float = TOLERANCE) -> None:
        if max_replicas < 1 or min_replicas < 0 or min_replicas > max_replicas:
            raise AdmissionError(FieldError("spec.maxReplicas", f"must be >= minReplicas ({min_replicas}) and >= 1, "
                                            f"got {max_replicas}"), kind="HorizontalPodAutoscaler")
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.metrics = tuple(metrics) or (MetricTarget("cpu", utilization=80),)
        self.behavior = behavior or Behavior()
        self.tolerance = tolerance
        self.recommendations: list[tuple[float, int]] = []  # (time, unstabilized recommendation)
        self.scale_up_events: list[tuple[float, int]] = []  # (time, replicas added)
        self.scale_down_events: list[tuple[float, int]] = []  # (time, replicas removed)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> HPA:
        """From an autoscaling/v2 HorizontalPodAutoscaler ``spec`` (Resource metrics only)."""
        errors: list[FieldError] = []
        targets: list[MetricTarget] = []
        for index, metric in enumerate(spec.get("metrics") or ()):
            where = f"spec.metrics[{index}]"
            resource = metric.get("resource") or {}
            target = resource.get("target") or {}
            if metric.get("type") != "Resource" or resource.get("name") not in ("cpu", "memory"):
                errors.append(FieldError(f"{where}.type", "only Resource metrics for cpu or memory run on the embedded platform"))
            elif target.get("type") == "Utilization" and isinstance(target.get("averageUtilization"), int) \
                    and target["averageUtilization"] > 0:
                targets.append(MetricTarget(resource["name"], utilization=target["averageUtilization"]))
            elif target.get("type") == "AverageValue" and target.get("averageValue") is not None:
                targets.append(MetricTarget(resource["name"], average_value=parse_quantity(str(target["averageValue"]))))
            else:
                errors.append(FieldError(f"{where}.resource.target", "expected type Utilization with a positive "
                                         "averageUtilization, or AverageValue with averageValue"))
        if errors:
            raise AdmissionError(errors, kind="HorizontalPodAutoscaler")
        return cls(min_replicas=int(spec.get("minReplicas", 1)), max_replicas=int(spec.get("maxReplicas", 1)),
                   metrics=targets, behavior=Behavior.from_spec(spec.get("behavior")))

    def desired(self, now: float, current_replicas: int, samples: Sequence[PodSample]) -> HPADecision:
        if not self.recommendations:
            self.recommendations.append((now, current_replicas))
        utilization: dict[str, float] = {}
        metric_desired: int | None = None
        if current_replicas == 0 and self.min_replicas != 0:
            return HPADecision(0, "ScalingDisabled", None, utilization)
        if current_replicas > self.max_replicas:
            desired, reason = self.max_replicas, "Current number of replicas above Spec.MaxReplicas"
        elif current_replicas < self.min_replicas:
            desired, reason = self.min_replicas, "Current number of replicas below Spec.MinReplicas"
        else:
            proposals = []
            for target in self.metrics:
                try:
                    proposal, used = self._replicas_for(target, current_replicas, samples)
                except MetricsUnavailable:
                    continue
                utilization[target.resource] = used
                proposals.append(proposal)
            if not proposals:
                return HPADecision(current_replicas, "FailedGetResourceMetric", None, utilization)
            metric_desired = max(proposals)
            desired, reason = self._normalize(now, current_replicas, metric_desired)
        if desired != current_replicas:
            self._store_event(now, current_replicas, desired)
        return HPADecision(desired, reason, metric_desired, utilization)

    # replica_calculator.go
    def _replicas_for(self, target: MetricTarget, current: int, samples: Sequence[PodSample]) -> tuple[int, float]:
        resource = target.resource
        ready_count = 0
        ignored: list[PodSample] = []
        missing: list[PodSample] = []
        measured: list[PodSample] = []
        for pod in samples:
            if pod.pending:
                ignored.append(pod)
            elif resource not in pod.usage:
                missing.append(pod)
            elif resource == "cpu" and not pod.ready:
                ignored.append(pod)  # an unready pod's cpu (start-up) says nothing about load
            else:
                ready_count += 1
                measured.append(pod)
        if not measured:
            raise MetricsUnavailable(resource)
        values = {pod.name: pod.usage[resource] for pod in measured}
        ratio, used = self._ratio(target, values, samples)
        rebalance_ignored = bool(ignored) and ratio > 1.0
        if not rebalance_ignored and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return current, used
            return math.ceil(ratio * ready_count), used
        if missing:
            for pod in missing:
                if ratio < 1.0:  # scale-down: assume the missing ones are at the target
                    values[pod.name] = self._at_target(target, pod)
                else:
                    values[pod.name] = 0.0
        if rebalance_ignored:
            for pod in ignored:
                values[pod.name] = 0.0
        new_ratio, _ = self._ratio(target, values, samples)
        if abs(1.0 - new_ratio) <= self.tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
            return current, used  # too small a change, or the assumptions flipped the direction
        new_replicas = math.ceil(new_ratio * len(values))
        if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
            return current, used
        return new_replicas, used

    def _at_target(self, target: MetricTarget, pod: PodSample) -> float:
        if target.utilization is not None:
            return pod.requests.get(target.resource, 0.0)  # 100 % of its request
        return target.average_value or 0.0

    def _ratio(self, target: MetricTarget, values: Mapping[str, float], samples: Sequence[PodSample]) -> tuple[float, float]:
        if target.utilization is not None:
            requests = {pod.name: pod.requests.get(target.resource) for pod in samples}
            total_request = 0.0
            for name in values:
                request = requests.get(name)
                if not request:
                    raise AdmissionError(FieldError(f"resources.requests.{target.resource}",
                                                    f"pod {name} has no {target.resource} request: a Utilization target needs one"),
                                         kind="HorizontalPodAutoscaler")
                total_request += request
            utilization = math.floor(sum(values.values()) * 100 / total_request)  # whole percent, as Kubernetes
            return utilization / target.utilization, float(utilization)
        average = sum(values.values()) / len(values)
        return average / (target.average_value or 1.0), average

    # horizontal.go: normalizeDesiredReplicasWithBehaviors
    def _normalize(self, now: float, current: int, proposed: int) -> tuple[int, str]:
        up, down = self.behavior.scale_up, self.behavior.scale_down
        up_cutoff = now - up.stabilization_window_seconds
        down_cutoff = now - down.stabilization_window_seconds
        up_recommendation = down_recommendation = proposed
        for stamp, recommendation in self.recommendations:
            if stamp > up_cutoff:
                up_recommendation = min(recommendation, up_recommendation)
            if stamp > down_cutoff:
                down_recommendation = max(recommendation, down_recommendation)
        # keep only what a window can still see, then remember this proposal unstabilized
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= up_cutoff or t >= down_cutoff]
        self.recommendations.append((now, proposed))
        stabilized = min(max(current, up_recommendation), down_recommendation)
        reason = "ReadyForNewScale"
        if stabilized != proposed:
            reason = "ScaleUpStabilized" if proposed >= current else "ScaleDownStabilized"
        if stabilized > current:
            limit = max(self._scale_up_limit(now, current), current)
            ceiling, why = (limit, "ScaleUpLimit") if self.max_replicas > limit else (self.max_replicas, "TooManyReplicas")
            if stabilized > ceiling:
                return ceiling, why
        elif stabilized < current:
            limit = min(self._scale_down_limit(now, current), current)
            floor, why = (limit, "ScaleDownLimit") if self.min_replicas < limit else (self.min_replicas, "TooFewReplicas")
            if stabilized < floor:
                return floor, why
        return stabilized, reason if stabilized != proposed else "DesiredWithinRange"

    def _changes(self, now: float, period: int) -> tuple[int, int]:
        cutoff = now - period
        added = sum(change for stamp, change in self.scale_up_events if stamp > cutoff)
        removed = sum(change for stamp, change in self.scale_down_events if stamp > cutoff)
        return added, removed

    def _scale_up_limit(self, now: float, current: int) -> int:
        rules = self.behavior.scale_up
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            added, removed = self._changes(now, policy.period_seconds)
            start = current - added + removed
            if policy.type == "Pods":
                proposals.append(start + policy.value)
            else:  # rounded up, or a small percentage of few pods would never add one
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
        return (min if rules.select_policy == "Min" else max)(proposals)

    def _scale_down_limit(self, now: float, current: int) -> int:
        rules = self.behavior.scale_down
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            added, removed = self._changes(now, policy.period_seconds)
            start = current - added + removed
            if policy.type == "Pods":
                proposals.append(start - policy.value)
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        # the Min policy is the smallest change: for a scale-down that is the highest floor
        return (max if rules.select_policy == "Min" else min)(proposals)

    def _store_event(self, now: float, previous: int, new: int) -> None:
        longest = max((p.period_seconds for p in (*self.behavior.scale_up.policies, *self.behavior.scale_down.policies)), default=0)
        cutoff = now - longest
        self.scale_up_events = [e for e in self.scale_up_events if e[0] >= cutoff]
        self.scale_down_events = [e for e in self.scale_down_events if e[0] >= cutoff]
        if new > previous:
            self.scale_up_events.append((now, new - previous))
        else:
            self.scale_down_events.append((now, previous - new))


_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``512Mi``, ``1G``) as a float (cores, bytes)."""
    text = text.strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)
