"""Kubernetes ResourceQuota for InferenceServices and LLMInferenceServices: pure, no I/O.

A namespace's usage is what its workloads may run at most: for every Deployment (a predictor, a raw
canary, an LLM engine set, a router) and every Knative revision that takes traffic, the most replicas its
autoscaler may run (an HPA's ``maxReplicas``, a ScaledObject's ``maxReplicaCount``, a revision's
``autoscaling.knative.dev/max-scale``, else the platform's replica limit; a fixed ``replicas`` otherwise)
times one pod's requests and limits. A pod's requests are Kubernetes' effective ones: the larger of its
containers' sum and its largest init container, a request left unset taking its limit.

``check`` is the quota admission plugin's decision (kube-apiserver ``pkg/quota/v1/evaluator``): only
resources the object raises are checked; a breach is refused with the apiserver's own message
``exceeded quota: NAME, requested: r=q, used: r=q, limited: r=q``. A quota set below what runs is kept
(as Kubernetes keeps it) and refuses growth only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from serving.errors import FieldError

Usage = dict[str, Fraction]

PODS = "pods"
ISVC_COUNT = "count/inferenceservices.serving.kserve.io"
LLMISVC_COUNT = "count/llminferenceservices.serving.kserve.io"
GPU = "nvidia.com/gpu"
# The spec.hard keys enforced here, each as the key its usage is kept under (Kubernetes reads a bare
# ``cpu``/``memory`` as the request, and an extended resource's quota is on its request).
QUOTA_KEYS: dict[str, str] = {
    PODS: PODS,
    "count/pods": PODS,
    "requests.cpu": "requests.cpu",
    "cpu": "requests.cpu",
    "requests.memory": "requests.memory",
    "memory": "requests.memory",
    "limits.cpu": "limits.cpu",
    "limits.memory": "limits.memory",
    f"requests.{GPU}": f"requests.{GPU}",
    GPU: f"requests.{GPU}",
    ISVC_COUNT: ISVC_COUNT,
    LLMISVC_COUNT: LLMISVC_COUNT,
}
MAX_SCALE_ANNOTATION = "autoscaling.knative.dev/max-scale"
_KNATIVE_GROUP = "serving.knative.dev"

# -- quantities -------------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$")
_SUFFIX: dict[str, Fraction] = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15),
    "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_BINARY = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_DECIMAL = ("E", "P", "T", "G", "M", "k")


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity (``500m``, ``2``, ``1.5Gi``, ``1e3``) exactly; raises ValueError saying why."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity; write one such as 500m, 2, 512Mi or 1Gi")
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity; write one such as 500m, 2, 512Mi or 1Gi")
    number = Fraction(match[1])
    if match[3] is not None:
        exponent = int(match[3])
        if abs(exponent) > 30:
            raise ValueError(f"{text!r}: the exponent is out of range")
        return number * Fraction(10) ** exponent
    return number * _SUFFIX[match[2] or ""]


def format_quantity(value: Fraction) -> str:
    """``value`` as the apiserver prints it: ``4``, ``500m``, ``2Gi``, ``1500M``."""
    if value == 0:
        return "0"
    if value.denominator == 1:
        whole = value.numerator
        for suffix in _BINARY:
            size = _SUFFIX[suffix].numerator
            if abs(whole) >= size and whole % size == 0:
                return f"{whole // size}{suffix}"
        for suffix in _DECIMAL:
            size = _SUFFIX[suffix].numerator
            if abs(whole) >= size and whole % size == 0:
                return f"{whole // size}{suffix}"
        return str(whole)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return f"{-(-value.numerator * 10**9 // value.denominator)}n"  # rounded up, as the apiserver rounds


# -- ResourceQuota objects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """One ResourceQuota: its name and its hard limits, by the key ``spec.hard`` gives."""

    name: str
    hard: dict[str, Fraction]

    @staticmethod
    def from_object(obj: Mapping[str, Any]) -> Quota:
        spec = obj.get("spec") or {}
        hard = spec.get("hard") or {}
        return Quota(str((obj.get("metadata") or {}).get("name", "")), {k: parse_quantity(v) for k, v in hard.items()})

    def used(self, usage: Mapping[str, Fraction]) -> dict[str, Fraction]:
        """What ``usage`` is under each hard key."""
        return {key: usage.get(QUOTA_KEYS[key], Fraction(0)) for key in self.hard}

    def status(self, usage: Mapping[str, Fraction]) -> dict[str, Any]:
        """``status`` as the quota controller writes it: ``hard`` and ``used`` under spec.hard's keys."""
        return {"hard": {k: format_quantity(v) for k, v in sorted(self.hard.items())},
                "used": {k: format_quantity(v) for k, v in sorted(self.used(usage).items())}}


def validate_quota(obj: Mapping[str, Any]) -> list[FieldError]:
    """What a ResourceQuota's ``spec`` gets wrong for this platform (the Kubernetes schema is checked apart):
    every ``spec.hard`` key one this platform enforces, every value a quantity of at least 0."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec", "must be an object with hard: {requests.cpu: '4', pods: '10', ...}")]
    errors: list[FieldError] = []
    for key in spec:
        if key != "hard":
            errors.append(FieldError(f"spec.{key}", "is not enforced by this platform (scopes and scopeSelector "
                                                    "are not supported); remove it"))
    hard = spec.get("hard")
    if not isinstance(hard, dict) or not hard:
        return [*errors, FieldError("spec.hard", "must map at least one resource to a quantity, e.g. {requests.cpu: '4'}")]
    for key, value in hard.items():
        where = f"spec.hard[{key}]"
        if key not in QUOTA_KEYS:
            errors.append(FieldError(where, f"is not a resource this platform counts; use one of {', '.join(QUOTA_KEYS)}"))
            continue
        try:
            quantity = parse_quantity(value)
        except ValueError as exc:
            errors.append(FieldError(where, str(exc)))
            continue
        if quantity < 0:
            errors.append(FieldError(where, f"is {value}; a quota is 0 or more"))
        elif (key in (PODS, "count/pods", ISVC_COUNT, LLMISVC_COUNT) or GPU in key) and quantity.denominator != 1:
            errors.append(FieldError(where, f"is {value}; {key} counts whole units"))
    return errors


# -- usage ------------------------------------------------------------------------------------------------


def add(total: Usage, more: Mapping[str, Fraction], times: int | Fraction = 1) -> Usage:
    """``total`` plus ``times`` x ``more`` (a new mapping)."""
    out = dict(total)
    for key, value in more.items():
        out[key] = out.get(key, Fraction(0)) + value * times
    return out


def subtract(total: Mapping[str, Fraction], less: Mapping[str, Fraction]) -> Usage:
    return add(dict(total), less, -1)


def pod_usage(pod_spec: Mapping[str, Any]) -> Usage:
    """One pod's requests and limits (``requests.cpu``, ``limits.memory``, ``requests.nvidia.com/gpu``...)."""
    containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]
    inits = [c for c in pod_spec.get("initContainers") or [] if isinstance(c, dict)]
    total: Usage = {}
    for container in containers:
        total = add(total, container_usage(container))
    for init in inits:  # init containers run one at a time, before the others
        for key, value in container_usage(init).items():
            total[key] = max(total.get(key, Fraction(0)), value)
    return total


def container_usage(container: Mapping[str, Any]) -> Usage:
    resources = container.get("resources") or {}
    limits = {k: parse_quantity(v) for k, v in (resources.get("limits") or {}).items()}
    # An unset request defaults to its limit (the apiserver's defaulting); extended resources' requests
    # always equal their limits.
    requests = {**limits, **{k: parse_quantity(v) for k, v in (resources.get("requests") or {}).items()}}
    usage: Usage = {}
    for name, value in requests.items():
        usage[f"requests.{name}"] = value
    for name, value in limits.items():
        usage[f"limits.{name}"] = value
    return usage


@dataclass(frozen=True)
class Workload:
    """Pods of one template: at most ``replicas`` of them."""

    name: str
    replicas: int
    pod_spec: Mapping[str, Any]


def workloads(children: Iterable[Mapping[str, Any]], unbounded: int,
              replicas: Mapping[str, int] | None = None) -> list[Workload]:
    """The workloads a reconciler's ``children`` run, each at its most: ``replicas`` overrides a Deployment's
    count by name (an LLM engine set the engine scaler sizes); ``unbounded`` is what a revision without
    ``max-scale`` may reach (the platform's replica limit)."""
    children = list(children)
    bounds: dict[str, int] = {}
    for child in children:
        spec = child.get("spec") or {}
        if child.get("kind") == "HorizontalPodAutoscaler":
            bounds[spec["scaleTargetRef"]["name"]] = int(spec.get("maxReplicas", 1))
        elif child.get("kind") == "ScaledObject":
            bounds[spec["scaleTargetRef"]["name"]] = int(spec.get("maxReplicaCount", 100))  # KEDA's default
    found: list[Workload] = []
    for child in children:
        kind, spec = child.get("kind"), child.get("spec") or {}
        name = str((child.get("metadata") or {}).get("name", ""))
        if kind == "Deployment":
            count = (replicas or {}).get(name, bounds.get(name, spec.get("replicas", 1)))
            found.append(Workload(name, int(count), spec["template"].get("spec") or {}))
        elif kind == "Service" and str(child.get("apiVersion", "")).startswith(f"{_KNATIVE_GROUP}/"):
            template = spec.get("template") or {}
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            most = int(annotations.get(MAX_SCALE_ANNOTATION, 0) or 0) or unbounded
            # Each revision with a share of the traffic runs (a canary and the one it is tried against).
            serving = [t for t in spec.get("traffic") or [] if int(t.get("percent") or 0) > 0]
            for index in range(max(1, len(serving))):
                found.append(Workload(f"{name}#{index}", most, template.get("spec") or {}))
    return found


def usage_of(workload_list: Iterable[Workload], counted: str | None = None) -> Usage:
    """What ``workload_list`` may use at most, plus one of ``counted`` (an object count key) when given."""
    total: Usage = {PODS: Fraction(0)}
    for workload in workload_list:
        total = add(total, pod_usage(workload.pod_spec), workload.replicas)
        total[PODS] += workload.replicas
    if counted:
        total[counted] = total.get(counted, Fraction(0)) + 1
    return total


# -- admission --------------------------------------------------------------------------------------------


def check(quotas: Iterable[Quota], used: Mapping[str, Fraction], old: Mapping[str, Fraction],
          new: Mapping[str, Fraction]) -> list[str]:
    """Why applying an object whose usage goes from ``old`` to ``new`` breaches a quota of the namespace,
    whose total usage is ``used`` (``old`` included): one apiserver message per breached quota, none
    when it fits. Only resources the change raises are checked, so shrinking is always allowed."""
    delta = subtract(new, old)
    messages = []
    for quota in quotas:
        exceeded = []
        for key, hard in sorted(quota.hard.items()):
            counted = QUOTA_KEYS[key]
            raise_by = delta.get(counted, Fraction(0))
            if raise_by > 0 and used.get(counted, Fraction(0)) + raise_by > hard:
                exceeded.append((key, raise_by, used.get(counted, Fraction(0)), hard))
        if exceeded:
            messages.append(
                f"exceeded quota: {quota.name}, "
                f"requested: {','.join(f'{k}={format_quantity(r)}' for k, r, _, _ in exceeded)}, "
                f"used: {','.join(f'{k}={format_quantity(u)}' for k, _, u, _ in exceeded)}, "
                f"limited: {','.join(f'{k}={format_quantity(h)}' for k, _, _, h in exceeded)}")
    return messages
