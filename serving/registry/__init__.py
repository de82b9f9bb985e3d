"""Model registry (MLflow): versions, aliases, and tags linking versions to live deployments."""

from serving.registry.mlflow_registry import (
    DIGEST_TAG,
    RETIRED,
    ROLLOUT_REASON_TAG,
    ROLLOUT_STATUS_TAG,
    SUPERSEDED,
    ModelRegistry,
    RegisteredVersion,
    parse_models_uri,
)

__all__ = ["DIGEST_TAG", "RETIRED", "ROLLOUT_REASON_TAG", "ROLLOUT_STATUS_TAG", "SUPERSEDED", "ModelRegistry",
           "RegisteredVersion", "parse_models_uri"]
