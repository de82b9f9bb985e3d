"""Model servers: KServe V1 and V2 (Open Inference Protocol) for sklearn and MLflow pyfunc models.

The process is ``python -m serving.runtimes.server``; this package re-exports the pieces a caller
composes in Python. Framework modules (``sklearn_model``, ``mlflow_model``) are imported on demand
so that importing the package stays cheap.
"""

from serving.runtimes.errors import (
    InferenceError,
    InferenceServerError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    RequestTooLarge,
    ServerBusy,
)
from serving.runtimes.model import Model, ModelRepository
from serving.runtimes.v2 import InferenceRequest, RequestedOutput, Tensor

__all__ = [
    "InferenceError",
    "InferenceRequest",
    "InferenceServerError",
    "InvalidInput",
    "Model",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRepository",
    "RequestTooLarge",
    "RequestedOutput",
    "ServerBusy",
    "Tensor",
]
