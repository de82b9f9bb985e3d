"""Phase 2: register the uploaded model as an MLflow model version and point an alias at it.

Idempotent: the version is found by the model's content digest, so running twice registers once.
"""

from __future__ import annotations

from prefect import task

from serving.artifacts import UploadedModel
from serving.registry import RegisteredVersion
from tasks._common import RETRIES, RETRY_DELAYS, registry_for, resolve_state, retry_on_transient


@task(name="register", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def register(model_name: str, uploaded: UploadedModel, alias: str | None = "champion", state: str | None = None) -> RegisteredVersion:
    registry = registry_for(resolve_state(state))
    if uploaded.uri.startswith("models:/"):
        version = registry.resolve(uploaded.uri)  # already registered: deploy that version as it is
    else:
        version = registry.register_version(model_name, uploaded.uri, digest=uploaded.digest,
                                            tags={"odh.model_format": uploaded.model_format})
    if alias:
        registry.set_alias(version.name, alias, version.version)
    return registry.get_version(version.name, version.version)
