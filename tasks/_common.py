"""What every phase task shares: where state lives, cached clients, and which errors are worth a retry."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from serving.config import mlflow_tracking_uri, state_dir
from serving.errors import DaemonNotRunningError
from serving.platform import Platform
from serving.registry import ModelRegistry
from serving.storage import StorageSettings

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas import TaskRun
    from prefect.states import State

RETRIES = 3
RETRY_DELAYS: list[float] = [1, 2, 4]


def resolve_state(state: str | None) -> Path:
    return state_dir(state)


@functools.cache
def registry_for(state: Path) -> ModelRegistry:
    return ModelRegistry(mlflow_tracking_uri(state))


def gateway_url(platform: Platform) -> str | None:
    """Where the embedded platform's gateway (and its ``/metrics``) listens; None for a platform without one
    (``info`` is the embedded platform's, not part of the Platform protocol)."""
    info = getattr(platform, "info", None)
    return None if info is None else str(info()["gateway"])


def storage_settings(state: Path) -> StorageSettings:
    return StorageSettings.for_state(state)


def is_transient(exc: BaseException) -> bool:
    """Network hiccups and timeouts are retried; bad input and missing daemons are not."""
    if isinstance(exc, DaemonNotRunningError):
        return False
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    return isinstance(exc, BotoConnectionError)


def retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Prefect's ``retry_condition_fn``: retry only what ``is_transient`` says a retry can fix."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
