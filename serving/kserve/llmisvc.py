"""LLMInferenceService (serving.kserve.io/v1alpha2), first cut: admission with defaults and validation,
and status from what a platform observed.

The object stays a plain dict (the CRD is large and mostly pod templates); admission fills the defaults
the reconciler relies on and names every bad field, as ``admit_inference_service`` does. Status follows
KServe's controller: ``MainWorkloadReady`` (decode/both engines), ``PrefillWorkloadReady`` (with
``spec.prefill``), ``RouterReady`` (router-scheduler and route), and the aggregate ``Ready``; ``url`` and
``addresses``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serving.errors import AdmissionError, FieldError
from serving.kserve.admission import (
    _check_header,
    _validate_name,
    _validate_storage_uri,
    check_metadata,
    name_of,
    replica_limit_errors,
)
from serving.kserve.status import _aggregate, _condition, _timestamp, stamp_transitions

API_VERSIONS = ("serving.kserve.io/v1alpha2", "serving.kserve.io/v1alpha1")
KIND = "LLMInferenceService"


def admit_llm_inference_service(obj: dict[str, Any], *, max_replicas: int | None = None) -> dict[str, Any]:
    """Defaults then validation; returns the admitted copy or raises AdmissionError listing every field.

    ``max_replicas`` is the platform's limit on engine replicas (None: no limit, as KServe).
    """
    name = name_of(obj)
    if not isinstance(obj, dict):
        raise AdmissionError([FieldError("(root)", "must be a mapping (a Kubernetes object)")], KIND, name)
    data = copy.deepcopy(obj)
    errors: list[FieldError] = []
    version = data.get("apiVersion")
    errors += _check_header(data, version if version in API_VERSIONS else API_VERSIONS[0], (KIND,))
    shape = check_metadata(data)
    if shape:
        raise AdmissionError([*errors, *shape], KIND, name)
    meta = data["metadata"]
    if not meta.get("namespace"):
        meta["namespace"] = "default"
    errors += _validate_name(meta.get("name"))
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise AdmissionError([*errors, FieldError("spec", "is required: give at least spec.model.uri")], KIND, name)
    model = spec.get("model")
    if not isinstance(model, dict):
        errors.append(FieldError("spec.model", "is required: give spec.model.uri (hf://, s3://, pvc://, file:// or a path)"))
    else:
        errors += _validate_storage_uri("spec.model.uri", model.get("uri"))
        model.setdefault("name", meta.get("name"))
    spec.setdefault("replicas", 1)
    errors += _replicas("spec.replicas", spec["replicas"], minimum=0)
    errors += replica_limit_errors("spec.replicas", spec["replicas"], max_replicas)
    prefill = spec.get("prefill")
    if prefill is not None:
        if not isinstance(prefill, dict):
            errors.append(FieldError("spec.prefill", "must be an object (e.g. {replicas: 1})"))
        else:
            prefill.setdefault("replicas", 1)
            errors += _replicas("spec.prefill.replicas", prefill["replicas"], minimum=1)
            errors += replica_limit_errors("spec.prefill.replicas", prefill["replicas"], max_replicas)
    if errors:
        raise AdmissionError(errors, KIND, name)
    return data


def _replicas(field: str, value: Any, minimum: int) -> list[FieldError]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [FieldError(field, f"must be an integer >= {minimum} (got {value!r})")]
    return []


@dataclass(frozen=True)
class WorkloadObservation:
    """One set of pods (engines or the router): how many should run, how many are ready, and why not."""

    desired: int
    ready: int
    failure: str | None = None  # the last failure message of a pod that is not ready

    def condition(self, kind: str, what: str) -> dict[str, Any]:
        if self.desired == 0 or self.ready >= self.desired:
            return _condition(kind, "True")
        if self.failure:
            return _condition(kind, "False", "PodFailed", f"{self.ready} of {self.desired} {what} ready: {self.failure}")
        return _condition(kind, "Unknown", "MinimumReplicasUnavailable", f"{self.ready} of {self.desired} {what} ready")


def observe_llm(
    llmisvc: dict[str, Any],
    engines: WorkloadObservation,
    router: WorkloadObservation,
    url: str | None,
    prefill: WorkloadObservation | None = None,
    previous: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``status`` of an LLMInferenceService. Ready needs every engine and the router ready: a partly
    started pool serves, but is not what was asked for."""
    previous = previous or {}
    stamp = _timestamp(now or datetime.now(UTC))
    parts = [engines.condition("MainWorkloadReady", "engines")]
    if prefill is not None:
        parts.append(prefill.condition("PrefillWorkloadReady", "prefill engines"))
    route = router.condition("RouterReady", "router replicas")
    if route["status"] == "True" and not url:
        route = _condition("RouterReady", "Unknown", "URLNotAssigned", "the router has no URL yet")
    parts.append(route)
    conditions = [*parts, _aggregate(parts)]
    stamp_transitions(conditions, previous, stamp)
    status: dict[str, Any] = {"conditions": sorted(conditions, key=lambda c: c["type"])}
    generation = llmisvc.get("metadata", {}).get("generation")
    if generation is not None:
        status["observedGeneration"] = generation
    if url:
        status["url"] = url
        status["addresses"] = [{"name": "gateway", "url": url}]
    return status
