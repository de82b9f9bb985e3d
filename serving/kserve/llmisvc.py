"""LLMInferenceService (serving.kserve.io/v1alpha2), first cut: admission with defaults and validation.

The object stays a plain dict (the CRD is large and mostly pod templates); admission fills the defaults
the reconciler relies on and names every bad field, as ``admit_inference_service`` does.
"""

from __future__ import annotations

import copy
from typing import Any

from serving.errors import AdmissionError, FieldError
from serving.kserve.admission import _check_header, _validate_name, _validate_storage_uri

API_VERSIONS = ("serving.kserve.io/v1alpha2", "serving.kserve.io/v1alpha1")
KIND = "LLMInferenceService"


def admit_llm_inference_service(obj: dict[str, Any]) -> dict[str, Any]:
    """Defaults then validation; returns the admitted copy or raises AdmissionError listing every field."""
    data = copy.deepcopy(obj)
    errors: list[FieldError] = []
    version = data.get("apiVersion")
    errors += _check_header(data, version if version in API_VERSIONS else API_VERSIONS[0], (KIND,))
    meta = data.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    errors += _validate_name(meta.get("name"))
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise AdmissionError([*errors, FieldError("spec", "is required: give at least spec.model.uri")], KIND, str(meta.get("name", "")))
    model = spec.get("model")
    if not isinstance(model, dict):
        errors.append(FieldError("spec.model", "is required: give spec.model.uri (hf://, s3://, pvc://, file:// or a path)"))
    else:
        errors += _validate_storage_uri("spec.model.uri", model.get("uri"))
        model.setdefault("name", meta.get("name"))
    spec.setdefault("replicas", 1)
    errors += _replicas("spec.replicas", spec["replicas"], minimum=0)
    prefill = spec.get("prefill")
    if prefill is not None:
        if not isinstance(prefill, dict):
            errors.append(FieldError("spec.prefill", "must be an object (e.g. {replicas: 1})"))
        else:
            prefill.setdefault("replicas", 1)
            errors += _replicas("spec.prefill.replicas", prefill["replicas"], minimum=1)
    if errors:
        raise AdmissionError(errors, KIND, str(meta.get("name", "")))
    return data


def _replicas(field: str, value: Any, minimum: int) -> list[FieldError]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [FieldError(field, f"must be an integer >= {minimum} (got {value!r})")]
    return []
