"""KServe's control-plane logic as pure functions: admission, runtime resolution, reconcile, status.

Spec in, desired objects and status out; no I/O besides reading runtime YAML files.
"""

from serving.kserve.admission import (
    DEPLOYMENT_MODE_ANNOTATION,
    AdmissionConfig,
    admit_inference_service,
    admit_serving_runtime,
    deployment_mode,
)
from serving.kserve.reconcile import ReconcileConfig, ReconcileError, reconcile, reconcile_serverless, reconcile_standard
from serving.kserve.render import render
from serving.kserve.runtimes import ResolvedRuntime, builtin_runtimes, load_runtimes, resolve_runtime, split_runtimes
from serving.kserve.status import PredictorObservation, ServerlessObservation, observe, observe_serverless
from serving.kserve.types import (
    ClusterServingRuntime,
    Container,
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
    ModelFormat,
    ModelSpec,
    ObjectMeta,
    PredictorSpec,
    ServingRuntime,
    ServingRuntimeSpec,
    SupportedModelFormat,
)

__all__ = [
    "DEPLOYMENT_MODE_ANNOTATION",
    "AdmissionConfig",
    "ClusterServingRuntime",
    "Container",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ModelFormat",
    "ModelSpec",
    "ObjectMeta",
    "PredictorObservation",
    "PredictorSpec",
    "ReconcileConfig",
    "ReconcileError",
    "ResolvedRuntime",
    "ServerlessObservation",
    "ServingRuntime",
    "ServingRuntimeSpec",
    "SupportedModelFormat",
    "admit_inference_service",
    "admit_serving_runtime",
    "builtin_runtimes",
    "deployment_mode",
    "load_runtimes",
    "observe",
    "observe_serverless",
    "reconcile",
    "reconcile_serverless",
    "reconcile_standard",
    "render",
    "resolve_runtime",
    "split_runtimes",
]
