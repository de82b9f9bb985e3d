"""KServe API types: InferenceService (serving.kserve.io/v1beta1), ServingRuntime and ClusterServingRuntime.

Pydantic models that read the Kubernetes (camelCase) shape, name the fields our logic uses, and keep
everything else (``extra="allow"``): a manifest written for KServe survives a load/dump round trip
unchanged. ``to_dict()`` gives back the Kubernetes dict. The field list follows the CRDs in
``tests/fixtures/kserve/crds/`` (kserve/kserve ``config/crd/full``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

GROUP = "serving.kserve.io"
ISVC_API_VERSION = f"{GROUP}/v1beta1"
RUNTIME_API_VERSION = f"{GROUP}/v1alpha1"

# Predictor implementations the v1beta1 CRD knows besides ``model`` and ``containers``. Each one is
# rewritten to ``model`` with ``modelFormat.name`` equal to its key by admission, as KServe's webhook does.
FRAMEWORK_SHORTCUTS: tuple[str, ...] = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "onnx",
    "triton",
    "pmml",
    "paddle",
    "huggingface",
)


class KubeModel(BaseModel):
    """Base: camelCase aliases, accepts either spelling, keeps unknown upstream fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(KubeModel):
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None


class ResourceRequirements(KubeModel):
    # Quantities stay as written (``1``, ``"500m"``, ``2Gi``): the schemas say int or string. A YAML
    # float (``cpu: 0.1``, common in KServe's samples) becomes its string form, a valid quantity.
    requests: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None

    @field_validator("requests", "limits")
    @classmethod
    def _float_quantities_as_strings(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {k: (repr(v) if isinstance(v, float) else v) for k, v in value.items()}


class EnvVar(KubeModel):
    name: str
    value: str | None = None


class Container(KubeModel):
    """The fields of a core/v1 Container that serving logic reads; the rest pass through."""

    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    ports: list[dict[str, Any]] | None = None
    volume_mounts: list[dict[str, Any]] | None = None


class ModelFormat(KubeModel):
    name: str
    version: str | None = None


class PredictorExtension(Container):
    """KServe's PredictorExtensionSpec: a container plus where the model is and how it is spoken to."""

    storage_uri: str | None = None
    runtime_version: str | None = None
    protocol_version: str | None = None
    storage: dict[str, Any] | None = None


class ModelSpec(PredictorExtension):
    model_format: ModelFormat
    runtime: str | None = None


class PredictorSpec(KubeModel):
    model: ModelSpec | None = None
    sklearn: PredictorExtension | None = None
    xgboost: PredictorExtension | None = None
    lightgbm: PredictorExtension | None = None
    tensorflow: PredictorExtension | None = None
    pytorch: PredictorExtension | None = None
    onnx: PredictorExtension | None = None
    triton: PredictorExtension | None = None
    pmml: PredictorExtension | None = None
    paddle: PredictorExtension | None = None
    huggingface: PredictorExtension | None = None
    # Custom predictor: the PodSpec is inlined into the predictor.
    containers: list[Container] | None = None
    volumes: list[dict[str, Any]] | None = None
    # ComponentExtensionSpec
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: str | None = None
    container_concurrency: int | None = None
    timeout: int | None = None
    canary_traffic_percent: int | None = None
    service_account_name: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deployment_strategy: dict[str, Any] | None = None
    worker_spec: dict[str, Any] | None = None


class InferenceServiceSpec(KubeModel):
    predictor: PredictorSpec
    # Transformer and explainer pass through untouched: we do not reconcile them yet.
    transformer: dict[str, Any] | None = None
    explainer: dict[str, Any] | None = None


class Condition(KubeModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    severity: str | None = None


class InferenceServiceStatus(KubeModel):
    conditions: list[Condition] | None = None
    url: str | None = None
    address: dict[str, Any] | None = None
    components: dict[str, Any] | None = None
    model_status: dict[str, Any] | None = None
    observed_generation: int | None = None
    deployment_mode: str | None = None
    serving_runtime_name: str | None = None
    cluster_serving_runtime_name: str | None = None


class InferenceService(KubeModel):
    api_version: str = ISVC_API_VERSION
    kind: str = "InferenceService"
    metadata: ObjectMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}


class SupportedModelFormat(KubeModel):
    name: str
    version: str | None = None
    auto_select: bool | None = None
    priority: int | None = None


class ServingRuntimeSpec(KubeModel):
    supported_model_formats: list[SupportedModelFormat] | None = None
    protocol_versions: list[str] | None = None
    multi_model: bool | None = None
    disabled: bool | None = None
    containers: list[Container] | None = None
    volumes: list[dict[str, Any]] | None = None
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    worker_spec: dict[str, Any] | None = None

    def priority_for(self, format_name: str) -> int | None:
        """KServe's GetPriority: the priority of the first supported format with this name."""
        for fmt in self.supported_model_formats or []:
            if fmt.name == format_name:
                return fmt.priority
        return None


class ServingRuntime(KubeModel):
    api_version: str = RUNTIME_API_VERSION
    kind: str = "ServingRuntime"
    metadata: ObjectMeta
    spec: ServingRuntimeSpec

    @property
    def name(self) -> str:
        return self.metadata.name or ""


class ClusterServingRuntime(ServingRuntime):
    kind: str = "ClusterServingRuntime"


__all__ = [
    "FRAMEWORK_SHORTCUTS",
    "ISVC_API_VERSION",
    "RUNTIME_API_VERSION",
    "ClusterServingRuntime",
    "Condition",
    "Container",
    "EnvVar",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ModelFormat",
    "ModelSpec",
    "ObjectMeta",
    "PredictorExtension",
    "PredictorSpec",
    "ResourceRequirements",
    "ServingRuntime",
    "ServingRuntimeSpec",
    "SupportedModelFormat",
]
