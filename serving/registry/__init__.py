"""Model registry (MLflow): versions, aliases, and tags linking versions to live deployments."""

from serving.registry.mlflow_registry import (
    DIGEST_TAG,
    RETIRED,
    ModelRegistry,
    RegisteredVersion,
    parse_models_uri,
)

__all__ = ["DIGEST_TAG", "RETIRED", "ModelRegistry", "RegisteredVersion", "parse_models_uri"]
