"""Phase 1: upload the model's files to storage (content-addressed, so re-running stores nothing new)."""

from __future__ import annotations

from prefect import task

from serving.artifacts import UploadedModel, upload_model
from tasks._common import RETRIES, RETRY_DELAYS, resolve_state, retry_on_transient, storage_settings


@task(name="upload", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def upload(source: str, model_format: str | None = None, state: str | None = None) -> UploadedModel:
    root = resolve_state(state)
    return upload_model(source, root / "artifacts", storage_settings(root), model_format)
