"""Standard (RawDeployment) mode canaries, as KServe renders them.

KServe ignores ``canaryTrafficPercent`` in RawDeployment mode (only the Knative reconciler,
``reconcilers/knative/ksvc_reconciler.go``, reads it). Its raw-mode canary is ``spec.canary[]``
(kserve/kserve#5672), matched here from:

- ``pkg/apis/serving/v1beta1/inference_service_validation.go`` ``validateCanarySpecs``: Standard mode
  only; the stable predictor has a model; each canary has a ``predictor.name`` (unique, not the stable
  one's), ``trafficPercent`` 0..100 (sum <= 100), exactly one implementation, no workerSpec,
  maxReplicas, scaleTarget, scaleMetric or autoScaling, and ``minReplicas`` <= the stable's (default 1);
- ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``:
  ``canaryReplicaCount`` (the canary's minReplicas, else ceil(stable minReplicas (default 1) x
  percent / 100)); ``buildCanaryPredictor`` (the stable predictor with the canary's non-empty fields
  merged over it, mergo ``WithOverride``: maps merge, lists and scalars are replaced; autoscaling fields
  cleared; minReplicas = the replica count); ``reconcileCanaryDeployments`` (one Deployment + Service +
  autoscaler per canary named ``{isvc}-{name}-predictor`` (``constants.PredictorServiceName``), status
  ``canaryStatuses[]`` {name, ready = availableReplicas > 0, trafficPercent} and the condition
  ``CanaryPredictorReady`` (AllCanariesReady / CanariesNotReady)); ``adjustStableMinReplicasForCanaries``
  (once canaries are Ready, the stable minReplicas drops by their replicas, never below 1; only when the
  stable sets minReplicas);
- ``reconcilers/ingress/httproute_reconciler.go`` ``applyCanaryWeights``: each Ready canary's backend
  gets its ``trafficPercent``, the stable backend the rest; a canary that is not Ready gets nothing.

Promotion is KServe's: set ``spec.predictor.name`` to the canary's name (and its model), remove the
canary entry; the canary's Deployment becomes the stable one unchanged and the old stable one goes.

The embedded gateway has no HTTPRoute: each variant's Service carries its weight in
``TRAFFIC_WEIGHT_ANNOTATION`` (and ``traffic_weights`` computes the same split).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from serving.kserve.reconcile import ReconcileError
from serving.kserve.types import FRAMEWORK_SHORTCUTS

CANARY_READY_CONDITION = "CanaryPredictorReady"
TRAFFIC_WEIGHT_ANNOTATION = "serving.odh.io/traffic-weight"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IMPLEMENTATIONS = ("model", *FRAMEWORK_SHORTCUTS)
# Cleared on every canary (buildCanaryPredictor): a canary runs a fixed number of replicas.
_AUTOSCALING_FIELDS = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


def predictor_object_name(isvc_name: str, predictor_name: str | None = None) -> str:
    """KServe's PredictorServiceName: ``{isvc}-predictor``, or ``{isvc}-{name}-predictor`` for a named variant."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def canaries(isvc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((isvc.get("spec") or {}).get("canary") or [])


def validate_canaries(isvc: Mapping[str, Any], mode: str = "Standard") -> None:
    """KServe's validateCanarySpecs; raises ReconcileError("InvalidCanarySpec") naming the field."""
    entries = (isvc.get("spec") or {}).get("canary")
    if not entries:
        return
    fail = lambda message: ReconcileError("InvalidCanarySpec", message)  # noqa: E731
    if not isinstance(entries, list):
        raise fail("spec.canary must be a list of {predictor, trafficPercent}")
    if mode != "Standard":
        raise fail("spec.canary is only supported in Standard deployment mode; use canaryTrafficPercent in Serverless mode")
    stable = isvc["spec"]["predictor"]
    if not any(isinstance(stable.get(key), dict) for key in _IMPLEMENTATIONS):
        raise fail("spec.canary requires a stable predictor with a model (spec.predictor.model or a framework)")
    stable_min = stable.get("minReplicas")
    stable_min = 1 if stable_min is None else stable_min
    names: set[str] = set()
    total = 0
    for index, canary in enumerate(entries):
        path = f"spec.canary[{index}]"
        predictor = canary.get("predictor") if isinstance(canary, dict) else None
        if not isinstance(predictor, dict):
            raise fail(f"{path}.predictor is required: the canary's predictor spec with a name")
        name = predictor.get("name")
        if not name:
            raise fail(f"{path}.predictor.name is required: it names the Deployment {{isvc}}-{{name}}-predictor")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise fail(f"{path}.predictor.name {name!r} must match {_NAME_RE.pattern}")
        if name in names:
            raise fail(f"{path}.predictor.name {name!r} is duplicated; give each canary its own name")
        if name == stable.get("name"):
            raise fail(f"{path}.predictor.name {name!r} conflicts with the stable predictor's name")
        names.add(name)
        percent = canary.get("trafficPercent")
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise fail(f"{path}.trafficPercent is {percent!r}; use an integer from 0 to 100 (0: deployed, no traffic)")
        total += percent
        present = [key for key in _IMPLEMENTATIONS if predictor.get(key) is not None]
        if predictor.get("containers"):
            present.append("containers")
        if len(present) != 1:
            raise fail(f"{path}.predictor must set exactly one implementation (found {', '.join(present) or 'none'})")
        if predictor.get("workerSpec") is not None:
            raise fail(f"{path}.predictor.workerSpec is not supported for a canary (multi-node); remove it")
        for key in _AUTOSCALING_FIELDS:
            value = predictor.get(key)
            if value is not None and not (key == "maxReplicas" and value == 0):
                raise fail(f"{path}.predictor.{key} must not be set: a canary runs fixed replicas (set minReplicas)")
        minimum = predictor.get("minReplicas")
        if minimum is not None and minimum > stable_min:
            raise fail(f"{path}.predictor.minReplicas ({minimum}) must not exceed the stable predictor's minReplicas ({stable_min})")
    if total > 100:
        raise fail(f"spec.canary trafficPercent values sum to {total}; keep the sum at 100 or less")


def canary_replicas(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> int:
    """KServe's canaryReplicaCount."""
    minimum = canary["predictor"].get("minReplicas")
    if minimum is not None:
        return int(minimum)
    stable_min = stable.get("minReplicas")
    stable_min = 1 if stable_min is None else int(stable_min)
    return math.ceil(stable_min * canary["trafficPercent"] / 100)


def canary_predictor(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> dict[str, Any]:
    """KServe's buildCanaryPredictor over the admitted (``model``-form) stable predictor."""
    merged = _merge_override(copy.deepcopy(dict(stable)), _as_model_form(canary["predictor"]))
    for key in _AUTOSCALING_FIELDS:
        merged.pop(key, None)
    merged["minReplicas"] = canary_replicas(stable, canary)
    return merged


def ready_canaries(isvc: Mapping[str, Any]) -> set[str]:
    """Names of canaries ``status.canaryStatuses`` reports Ready."""
    statuses = (isvc.get("status") or {}).get("canaryStatuses") or []
    return {s["name"] for s in statuses if isinstance(s, dict) and s.get("ready")}


def stable_min_replicas(isvc: Mapping[str, Any]) -> int | None:
    """KServe's adjustStableMinReplicasForCanaries: the stable minReplicas to render (None: unset)."""
    stable = isvc["spec"]["predictor"]
    minimum = stable.get("minReplicas")
    entries = canaries(isvc)
    if not entries or minimum is None:
        return minimum
    ready = ready_canaries(isvc)
    taken = sum(canary_replicas(stable, c) for c in entries if c["predictor"]["name"] in ready)
    return max(int(minimum) - taken, 1) if taken > 0 else int(minimum)


def traffic_weights(isvc: Mapping[str, Any]) -> dict[str, int]:
    """KServe's applyCanaryWeights as {Deployment/Service name: percent}; empty without canaries."""
    entries = canaries(isvc)
    if not entries:
        return {}
    name = isvc["metadata"]["name"]
    ready = ready_canaries(isvc)
    weights = {predictor_object_name(name, isvc["spec"]["predictor"].get("name")): 100}
    for canary in entries:
        canary_name = canary["predictor"]["name"]
        percent = canary["trafficPercent"] if canary_name in ready else 0
        weights[predictor_object_name(name, canary_name)] = percent
        weights[predictor_object_name(name, isvc["spec"]["predictor"].get("name"))] -= percent
    return weights


def canary_statuses(isvc: Mapping[str, Any], available_replicas: Mapping[str, int]) -> list[dict[str, Any]]:
    """``status.canaryStatuses`` from each canary Deployment's availableReplicas (by Deployment name)."""
    name = isvc["metadata"]["name"]
    return [
        {
            "name": c["predictor"]["name"],
            "ready": available_replicas.get(predictor_object_name(name, c["predictor"]["name"]), 0) > 0,
            "trafficPercent": c["trafficPercent"],
        }
        for c in canaries(isvc)
    ]


def canary_condition(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``CanaryPredictorReady`` condition (None: no canaries, KServe clears it)."""
    if not statuses:
        return None
    ready = all(s["ready"] for s in statuses)
    return {"type": CANARY_READY_CONDITION, "status": "True" if ready else "False",
            "reason": "AllCanariesReady" if ready else "CanariesNotReady"}


def _as_model_form(predictor: Mapping[str, Any]) -> dict[str, Any]:
    """A framework shortcut (``sklearn: {...}``) as admission writes the stable one (``model`` with
    ``modelFormat.name``), so that the merge lands on the same field."""
    out = copy.deepcopy(dict(predictor))
    for key in FRAMEWORK_SHORTCUTS:
        if isinstance(out.get(key), dict):
            shortcut = out.pop(key)
            out["model"] = {"modelFormat": {"name": key}, **shortcut}
    return out


def _merge_override(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    """mergo.Merge(dst, src, WithOverride) on the JSON form: an empty source value (absent, None, "",
    0, False, [], {}) leaves the destination alone; maps merge key by key; anything else replaces."""
    for key, value in src.items():
        if value is None or value == "" or value == [] or value == {} or value is False or (
            isinstance(value, int) and not isinstance(value, bool) and value == 0
        ):
            continue
        current = dst.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            dst[key] = _merge_override(current, value)
        else:
            dst[key] = copy.deepcopy(value)
    return dst
