"""InferenceService status from what a platform observed of its predictor, in KServe's shape.

Conditions ``PredictorReady``, ``IngressReady`` and the aggregate ``Ready``; ``url``, ``address.url``,
``components.predictor.url``; ``modelStatus`` following KServe's UpdateModelRevisionStates /
UpdateModelTransitionStatus; ``observedGeneration``. A condition keeps its previous
``lastTransitionTime`` while its status is unchanged, as Knative's condition manager does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from serving.kserve import naming
from serving.kserve.admission import deployment_mode
from serving.kserve.types import InferenceService

PREDICTOR_READY = "PredictorReady"
INGRESS_READY = "IngressReady"
READY = "Ready"

# Failures that mean the spec cannot be served as written (KServe marks these InvalidSpec); anything else
# is a load/runtime failure (BlockedByFailedLoad).
SPEC_FAILURES = frozenset({"NoSupportingRuntime", "RuntimeNotRecognized", "RuntimeDisabled", "InvalidPredictorSpec"})
# The reasons the CRD's lastFailureInfo.reason enum accepts.
FAILURE_REASONS = SPEC_FAILURES | {"ModelLoadFailed", "RuntimeUnhealthy"}


@dataclass(frozen=True)
class PredictorObservation:
    desired_replicas: int
    ready_replicas: int
    url: str | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    runtime: str | None = None
    # Which kind ``runtime`` names, to fill servingRuntimeName or clusterServingRuntimeName.
    runtime_kind: str = "ClusterServingRuntime"
    # The failure is in a new revision while the previous one keeps serving (a failed rollout): the
    # service stays Ready, as a Deployment stays Available, and modelStatus says the update is blocked.
    previous_revision_serving: bool = False


def observe(
    isvc: InferenceService,
    observation: PredictorObservation,
    previous: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``status`` for ``isvc`` given ``observation``; ``previous`` is the status it had before."""
    previous = previous or {}
    stamp = _timestamp(now or datetime.now(timezone.utc))
    failed = observation.failure_reason is not None
    ready = observation.ready_replicas >= 1 and (not failed or observation.previous_revision_serving)

    if ready:
        predictor = _condition(PREDICTOR_READY, "True")
    elif failed:
        predictor = _condition(PREDICTOR_READY, "False", observation.failure_reason, observation.failure_message)
    else:
        predictor = _condition(
            PREDICTOR_READY,
            "Unknown",
            "MinimumReplicasUnavailable",
            f"{observation.ready_replicas} of {max(observation.desired_replicas, 1)} replicas ready",
        )
    if observation.url:
        ingress = _condition(INGRESS_READY, "True")
    else:
        ingress = _condition(INGRESS_READY, "Unknown", "URLNotAssigned", "the predictor has no URL yet")
    conditions = [predictor, ingress, _aggregate([predictor, ingress])]
    stamp_transitions(conditions, previous, stamp)

    status: dict[str, Any] = {
        "conditions": sorted(conditions, key=lambda c: c["type"]),
        "modelStatus": _model_status(observation, previous.get("modelStatus") or {}, ready, stamp),
    }
    try:
        status["deploymentMode"] = deployment_mode(isvc)
    except ValueError:
        pass
    if isvc.metadata.generation is not None:
        status["observedGeneration"] = isvc.metadata.generation
    if observation.url:
        status["url"] = observation.url
        status["address"] = {"url": naming.internal_url(isvc)}
        status["components"] = {"predictor": {"url": observation.url}}
    if observation.runtime:
        key = "servingRuntimeName" if observation.runtime_kind == "ServingRuntime" else "clusterServingRuntimeName"
        status[key] = observation.runtime
    return status


def stamp_transitions(conditions: list[dict[str, Any]], previous: dict[str, Any], stamp: str) -> None:
    """Give each condition a ``lastTransitionTime``: the previous one while its status is unchanged."""
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    for condition in conditions:
        before = old.get(condition["type"])
        kept = before is not None and before.get("status") == condition["status"] and before.get("lastTransitionTime")
        condition["lastTransitionTime"] = before["lastTransitionTime"] if kept else stamp


def _condition(kind: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "status": status}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _aggregate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Ready is True when every part is; else False if any part is False, else Unknown; the first
    not-True part lends its reason and message."""
    blocking = [c for c in parts if c["status"] != "True"]
    if not blocking:
        return _condition(READY, "True")
    status = "False" if any(c["status"] == "False" for c in blocking) else "Unknown"
    first = next(c for c in blocking if c["status"] == status)
    return _condition(READY, status, first.get("reason"), first.get("message"))


def _model_status(observation: PredictorObservation, previous: dict[str, Any], ready: bool, stamp: str) -> dict[str, Any]:
    old_states = previous.get("states") or {}
    # The model a previous revision loaded stays active (and serving) while a new one loads or fails.
    active = old_states.get("activeModelState") or "Pending"
    reason = observation.failure_reason
    if reason in SPEC_FAILURES:
        target, transition = old_states.get("targetModelState") or "Pending", "InvalidSpec"
    elif reason is not None:
        target, transition = "FailedToLoad", "BlockedByFailedLoad"
    elif ready:
        target, transition, active = "Loaded", "UpToDate", "Loaded"
    elif observation.desired_replicas > 0:
        target, transition = "Loading", "InProgress"
    else:
        target, transition = "Pending", "InProgress"

    status: dict[str, Any] = {
        "states": {"activeModelState": active, "targetModelState": target},
        "transitionStatus": transition,
    }
    if ready:
        status["copies"] = {"failedCopies": 0, "totalCopies": observation.ready_replicas}
    if reason is not None:
        info: dict[str, Any] = {"message": observation.failure_message or reason, "time": stamp}
        if reason in FAILURE_REASONS:
            info["reason"] = reason
        status["lastFailureInfo"] = info
    elif previous.get("lastFailureInfo"):
        status["lastFailureInfo"] = previous["lastFailureInfo"]
    return status


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
