"""Admission for KServe objects: defaulting, then validation, as KServe's mutating and validating webhooks.

Everything works on a deep copy of the plain dict first (so a type error in one field does not hide a
range error in another), then parses the result into the typed model. Every problem found is collected
and raised together as one ``AdmissionError`` whose entries name the field by dotted path and the fix.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ValidationError

from serving.errors import AdmissionError, FieldError
from serving.kserve.types import (
    FRAMEWORK_SHORTCUTS,
    ISVC_API_VERSION,
    RUNTIME_API_VERSION,
    ClusterServingRuntime,
    InferenceService,
    ServingRuntime,
)

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KNATIVE_AUTOSCALER_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
# The container name that makes ``predictor.containers`` a custom predictor (KServe's
# InferenceServiceContainerName); other containers there are sidecars (e.g. a collocated transformer).
PREDICTOR_CONTAINER_NAME = "kserve-container"

DeploymentMode = Literal["Standard", "Knative", "ModelMesh"]
# KServe's ParseDeploymentMode: the current names and the legacy aliases they replaced.
_DEPLOYMENT_MODES: dict[str, DeploymentMode] = {
    "Standard": "Standard",
    "RawDeployment": "Standard",
    "Knative": "Knative",
    "Serverless": "Knative",
    "ModelMesh": "ModelMesh",
}

# KServe's IsvcNameFmt (a DNS-1035 label). KServe's webhook checks only the pattern; we also cap it at
# 63 characters, the DNS label limit every child Service name is held to.
ISVC_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ISVC_NAME_MAX = 63
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Storage URI prefixes KServe's storage initializer accepts (SupportedStorageURIPrefixList, plus the
# oci+<mode> forms), and MLflow's ``models:/`` which our storage initializer resolves.
STORAGE_URI_PREFIXES: tuple[str, ...] = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "http://",
    "https://",
    "hdfs://",
    "webhdfs://",
    "hf://",
    "oci://",
    "oci+fetch://",
    "oci+native://",
    "oci+modelcar://",
    "models:/",
)

# KServe's allowed scale metrics per autoscaler: HPA (Standard, or Knative with the HPA class) scales on
# resource usage, Knative's KPA on request load.
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
_HPA_METRICS = ("cpu", "memory")
_KPA_METRICS = ("concurrency", "rps")


@dataclass(frozen=True)
class AdmissionConfig:
    """Cluster-wide admission defaults (KServe's ``deploy`` ConfigMap entry)."""

    default_deployment_mode: str = "Standard"


def deployment_mode(isvc: InferenceService | dict[str, Any], default: str = "Standard") -> DeploymentMode:
    """The normalised deployment mode: RawDeployment -> Standard, Serverless -> Knative.

    Raises ``ValueError`` for a name KServe does not know (admission reports it as a field error first).
    """
    if isinstance(isvc, InferenceService):
        annotations = isvc.annotations
    else:
        annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(DEPLOYMENT_MODE_ANNOTATION, default)
    try:
        return _DEPLOYMENT_MODES[value]
    except KeyError:
        raise ValueError(f"unknown deployment mode {value!r}; accepted: {', '.join(_DEPLOYMENT_MODES)}") from None


# --------------------------------------------------------------------------- InferenceService


def admit_inference_service(obj: dict[str, Any], *, config: AdmissionConfig | None = None,
                            max_replicas: int | None = None) -> InferenceService:
    """Default then validate an InferenceService manifest; return the typed, defaulted object.

    ``max_replicas`` is the platform's limit on any component's minReplicas / maxReplicas (None: no
    limit, as KServe). Raises ``AdmissionError`` listing every rejected field.
    """
    config = config or AdmissionConfig()
    name = name_of(obj)
    fail = lambda errors: AdmissionError(errors, kind="InferenceService", name=name)  # noqa: E731

    if not isinstance(obj, dict):
        raise fail([FieldError("(root)", "must be a mapping (a Kubernetes object)")])
    header = _check_header(obj, ISVC_API_VERSION, ("InferenceService",)) + check_metadata(obj)
    if header:
        raise fail(header)

    data = copy.deepcopy(obj)
    origin = _default(data, config)
    errors = _validate(data, origin, max_replicas)
    isvc: InferenceService | None = None
    try:
        isvc = InferenceService.model_validate(data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, origin))
    if errors:
        raise fail(_dedupe(errors))
    assert isvc is not None
    return isvc


def name_of(obj: Any) -> str:
    """``metadata.name`` for error messages, whatever shape the object has."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def check_metadata(obj: dict[str, Any]) -> list[FieldError]:
    """The shape of ``metadata`` every kind relies on before its own checks: an object, with an object
    of string annotations and labels."""
    metadata = obj.get("metadata")
    if metadata is None:
        return [FieldError("metadata", "is required: give at least metadata.name")]
    if not isinstance(metadata, dict):
        return [FieldError("metadata", f"must be an object with at least a name (got {type(metadata).__name__})")]
    errors = []
    for key in ("annotations", "labels"):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            errors.append(FieldError(f"metadata.{key}", "must be an object of string values"))
    return errors


def replica_limit_errors(field: str, value: Any, limit: int | None) -> list[FieldError]:
    """A replica count beyond the platform's limit, named with the limit and how to raise it."""
    if limit is None or not _is_int(value) or value <= limit:
        return []
    return [FieldError(field, f"is {value}, above this platform's limit of {limit} replicas per workload; "
                              "lower it, or raise the limit (`odh up --max-replicas N`, or ODH_MAX_REPLICAS)")]


def _check_header(obj: dict[str, Any], api_version: str, kinds: tuple[str, ...]) -> list[FieldError]:
    errors = []
    if obj.get("apiVersion") != api_version:
        errors.append(
            FieldError("apiVersion", f"apiVersion must be {api_version} (got {obj.get('apiVersion')!r})")
        )
    if obj.get("kind") not in kinds:
        errors.append(FieldError("kind", f"kind must be {' or '.join(kinds)} (got {obj.get('kind')!r})"))
    return errors


def _default(data: dict[str, Any], config: AdmissionConfig) -> str | None:
    """Apply KServe's defaults in place; return the implementation key the user wrote, if any.

    The origin key lets errors name the field the user wrote (``spec.predictor.sklearn.storageUri``)
    even though defaulting has moved it under ``model``.
    """
    metadata = data.setdefault("metadata", {}) or {}
    data["metadata"] = metadata
    if not metadata.get("namespace"):
        metadata["namespace"] = "default"
    annotations = metadata.get("annotations") or {}
    if DEPLOYMENT_MODE_ANNOTATION not in annotations:
        metadata["annotations"] = {**annotations, DEPLOYMENT_MODE_ANNOTATION: config.default_deployment_mode}

    spec = data.get("spec")
    predictor = spec.get("predictor") if isinstance(spec, dict) else None
    if not isinstance(predictor, dict):
        return None
    present = _implementations(predictor)
    origin = present[0] if len(present) == 1 else None
    # KServe skips runtime assignment for ModelMesh predictors; so do we.
    if annotations.get(DEPLOYMENT_MODE_ANNOTATION) == "ModelMesh" or origin not in FRAMEWORK_SHORTCUTS:
        _default_model_protocol(predictor)
        return origin
    shortcut = predictor.pop(origin)
    if not isinstance(shortcut, dict):
        predictor[origin] = shortcut  # leave it for validation to report
        return origin
    # triton, onnx and huggingface shortcuts default to the V2 protocol "for backward compatibility".
    if origin in ("triton", "onnx", "huggingface") and shortcut.get("protocolVersion") is None:
        shortcut["protocolVersion"] = "v2"
    predictor["model"] = {"modelFormat": {"name": origin}, **shortcut}
    _default_model_protocol(predictor)
    return origin


def _default_model_protocol(predictor: dict[str, Any]) -> None:
    """Triton speaks only V2, so a triton model with no protocol gets v2; everything else stays unset (= v1)."""
    model = predictor.get("model")
    is_triton = isinstance(model, dict) and (model.get("modelFormat") or {}).get("name") == "triton"
    if is_triton and isinstance(model, dict) and model.get("protocolVersion") is None:
        model["protocolVersion"] = "v2"


def _implementations(predictor: dict[str, Any]) -> list[str]:
    """KServe's PredictorSpec.GetImplementations: the framework keys that are set, plus ``containers``
    when it holds a container named kserve-container, or when nothing else is set (then its first
    container is the predictor); otherwise those containers are sidecars of a framework predictor."""
    found = [key for key in ("model", *FRAMEWORK_SHORTCUTS) if predictor.get(key) is not None]
    containers = predictor.get("containers")
    if isinstance(containers, list) and containers:
        named = any(isinstance(c, dict) and c.get("name") == PREDICTOR_CONTAINER_NAME for c in containers)
        if named or not found:
            found.append("containers")
    return found


def _validate(data: dict[str, Any], origin: str | None, max_replicas: int | None = None) -> list[FieldError]:
    errors: list[FieldError] = []
    metadata = data["metadata"]
    errors += _validate_name(metadata.get("name"))
    namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not _DNS1123_LABEL_RE.match(namespace) or len(namespace) > 63:
        errors.append(
            FieldError("metadata.namespace", "must be a DNS-1123 label: lower-case letters, digits and '-', at most 63")
        )

    annotations = metadata.get("annotations") or {}
    mode_value = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    mode = _DEPLOYMENT_MODES.get(mode_value) if isinstance(mode_value, str) else None
    if mode is None:
        errors.append(
            FieldError(
                f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]",
                f"unknown deployment mode {mode_value!r}; use one of {', '.join(_DEPLOYMENT_MODES)}",
            )
        )

    spec = data.get("spec")
    if isinstance(spec, dict):
        # Transformer and explainer are not reconciled yet, but their replicas count against the limit too.
        for component in ("predictor", "transformer", "explainer"):
            if isinstance(spec.get(component), dict):
                for key in ("minReplicas", "maxReplicas"):
                    errors += replica_limit_errors(f"spec.{component}.{key}", spec[component].get(key), max_replicas)
    predictor = spec.get("predictor") if isinstance(spec, dict) else None
    if not isinstance(predictor, dict):
        errors.append(FieldError("spec.predictor", "is required: describe the model to serve under spec.predictor"))
        return errors

    present = _implementations(predictor)
    if len(present) != 1:
        choices = ", ".join(("model", *FRAMEWORK_SHORTCUTS)) + " or containers (a custom predictor)"
        found = f"found {', '.join(present)}" if present else "found none"
        hint = (
            f"; containers next to a framework must not include {PREDICTOR_CONTAINER_NAME!r}"
            if "containers" in present and len(present) > 1
            else ""
        )
        errors.append(
            FieldError("spec.predictor", f"set exactly one predictor implementation ({found}); choose one of {choices}{hint}")
        )

    impl_path = f"spec.predictor.{origin}" if origin else "spec.predictor.model"
    model = predictor.get("model")
    if not isinstance(model, dict) and origin in FRAMEWORK_SHORTCUTS:
        model = predictor.get(origin)  # ModelMesh keeps the shortcut as written
    if isinstance(model, dict):
        if model.get("name"):
            errors.append(FieldError(f"{impl_path}.name", "the 'name' field is not allowed in a standard predictor; remove it"))
        storage_uri = model.get("storageUri")
        if storage_uri is not None:
            errors += _validate_storage_uri(f"{impl_path}.storageUri", storage_uri)

    errors += _validate_scaling(predictor, mode, annotations)
    return errors


def _validate_name(name: Any) -> list[FieldError]:
    if not name:
        return [FieldError("metadata.name", "is required")]
    if not isinstance(name, str) or not ISVC_NAME_RE.match(name):
        return [
            FieldError(
                "metadata.name",
                f"{name!r} is not a DNS-1035 label: use lower-case letters, digits and '-', start with a letter "
                f"and end with a letter or digit (regex {ISVC_NAME_RE.pattern})",
            )
        ]
    if len(name) > ISVC_NAME_MAX:
        return [FieldError("metadata.name", f"is {len(name)} characters long; use at most {ISVC_NAME_MAX}")]
    return []


def _validate_storage_uri(field: str, uri: Any) -> list[FieldError]:
    supported = ", ".join(STORAGE_URI_PREFIXES) + " or an absolute path"
    if not isinstance(uri, str) or not uri:
        return [FieldError(field, f"must be a non-empty string; supported: {supported}")]
    if uri.startswith("/") or uri.startswith(STORAGE_URI_PREFIXES):
        return []
    return [FieldError(field, f"{uri!r} has an unsupported scheme; supported: {supported}")]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_scaling(predictor: dict[str, Any], mode: DeploymentMode | None, annotations: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    path = "spec.predictor"
    minimum, maximum = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if _is_int(minimum) and minimum < 0:
        errors.append(FieldError(f"{path}.minReplicas", f"is {minimum}; set 0 or more"))
    if _is_int(maximum) and maximum < 0:
        errors.append(FieldError(f"{path}.maxReplicas", f"is {maximum}; set 0 or more"))
    if _is_int(minimum) and _is_int(maximum) and 0 < maximum < minimum:
        # maxReplicas 0 means "no upper bound given" (KServe defaults it to minReplicas).
        errors.append(
            FieldError(f"{path}.maxReplicas", f"is {maximum}, below minReplicas {minimum}; raise maxReplicas or lower minReplicas")
        )
    concurrency = predictor.get("containerConcurrency")
    if _is_int(concurrency) and concurrency < 0:
        errors.append(FieldError(f"{path}.containerConcurrency", f"is {concurrency}; set 0 (unlimited) or more"))
    canary = predictor.get("canaryTrafficPercent")
    if _is_int(canary) and not 0 <= canary <= 100:
        errors.append(FieldError(f"{path}.canaryTrafficPercent", f"is {canary}; use a percentage from 0 to 100"))

    metric = predictor.get("scaleMetric")
    if metric is not None and metric not in SCALE_METRICS:
        errors.append(FieldError(f"{path}.scaleMetric", f"{metric!r} is not a supported metric; use one of {', '.join(SCALE_METRICS)}"))
    elif mode in ("Standard", "Knative"):
        hpa = mode == "Standard" or annotations.get(KNATIVE_AUTOSCALER_CLASS_ANNOTATION) == KNATIVE_HPA_CLASS
        allowed = _HPA_METRICS if hpa else _KPA_METRICS
        effective = metric or allowed[0]
        if effective not in allowed:
            autoscaler = "the HPA" if hpa else "Knative's KPA"
            errors.append(
                FieldError(
                    f"{path}.scaleMetric",
                    f"{metric!r} is not supported by {autoscaler} in {mode} mode; use one of {', '.join(allowed)}",
                )
            )
        target = predictor.get("scaleTarget")
        if _is_int(target):
            if target < 1:
                errors.append(FieldError(f"{path}.scaleTarget", f"is {target}; set 1 or more"))
            elif effective == "cpu" and target > 100:
                errors.append(FieldError(f"{path}.scaleTarget", f"is {target}; a cpu target is a utilization percentage from 1 to 100"))
    return errors


def _pydantic_errors(exc: ValidationError, origin: str | None) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        loc = list(error["loc"])
        # Report the key the user wrote, not the one defaulting moved it to.
        if origin and origin != "model" and loc[:3] == ["spec", "predictor", "model"]:
            loc[2] = origin
        field = ""
        for part in loc:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        reason = error["msg"]
        if error["type"] == "missing":
            reason = "is required"
        elif error["type"] == "extra_forbidden":
            reason = "is not a known field; remove it"
        else:
            reason = f"{reason[0].lower()}{reason[1:]} (got {error.get('input')!r})"
        errors.append(FieldError(field or "(root)", reason))
    return errors


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))


# --------------------------------------------------------------------------- ServingRuntime


def admit_serving_runtime(obj: dict[str, Any]) -> ServingRuntime | ClusterServingRuntime:
    """Validate a ServingRuntime or ClusterServingRuntime; return the typed object."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    name = name_of(obj)
    label = kind if kind in ("ServingRuntime", "ClusterServingRuntime") else "ServingRuntime"
    if not isinstance(obj, dict):
        raise AdmissionError([FieldError("(root)", "must be a mapping (a Kubernetes object)")], kind=label, name=name)
    header = _check_header(obj, RUNTIME_API_VERSION, ("ServingRuntime", "ClusterServingRuntime")) + check_metadata(obj)
    if header:
        raise AdmissionError(header, kind=label, name=name)

    errors: list[FieldError] = []
    if not name:
        errors.append(FieldError("metadata.name", "is required"))
    raw_spec = obj.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    formats = spec.get("supportedModelFormats")
    if not formats:
        errors.append(FieldError("spec.supportedModelFormats", "is required: list the model formats this runtime serves"))
    for i, fmt in enumerate(formats if isinstance(formats, list) else []):
        if not isinstance(fmt, dict):
            continue
        priority = fmt.get("priority")
        if _is_int(priority) and priority < 0:
            errors.append(FieldError(f"spec.supportedModelFormats[{i}].priority", f"is {priority}; set 0 or more"))
    containers = spec.get("containers")
    if not containers:
        errors.append(FieldError("spec.containers", "is required: give the model server container"))
    for i, container in enumerate(containers if isinstance(containers, list) else []):
        if isinstance(container, dict) and not container.get("image"):
            errors.append(FieldError(f"spec.containers[{i}].image", "is required"))

    model: type[BaseModel] = ClusterServingRuntime if kind == "ClusterServingRuntime" else ServingRuntime
    runtime = None
    try:
        runtime = model.model_validate(obj)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, None))
    if errors:
        raise AdmissionError(_dedupe(errors), kind=label, name=name)
    return runtime  # type: ignore[return-value]
