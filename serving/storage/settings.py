"""Where the storage initializer caches models and how it reaches each store."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class StorageSettings:
    """Settings for :func:`serving.storage.fetch`.

    ``None`` means "ask the environment at use time" (boto3's and MLflow's usual variables), so a
    settings object built in one process still honours the environment a replica is started with.
    """

    cache_dir: Path
    # Local directory standing in for PVCs: pvc://claim/sub/path -> pvc_root/claim/sub/path.
    pvc_root: Path | None = None
    s3_endpoint_url: str | None = None
    # KServe's S3_VERIFY_SSL: False, True, or a CA bundle path.
    s3_verify: bool | str | None = None
    s3_region: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    http_timeout: float = DEFAULT_HTTP_TIMEOUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.pvc_root is not None:
            object.__setattr__(self, "pvc_root", Path(self.pvc_root).expanduser())

    @classmethod
    def from_env(cls, cache_dir: Path | str, **overrides: Any) -> StorageSettings:
        """Settings from the environment; keyword ``overrides`` win (unknown names are a TypeError)."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown storage settings: {', '.join(sorted(unknown))}")
        timeout = os.environ.get("ODH_STORAGE_HTTP_TIMEOUT")
        values: dict[str, Any] = {
            "pvc_root": os.environ.get("ODH_PVC_ROOT") or None,
            "s3_endpoint_url": s3_endpoint_from_env(),
            "s3_verify": s3_verify_from_env(),
            "s3_region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI") or None,
            "mlflow_registry_uri": os.environ.get("MLFLOW_REGISTRY_URI") or None,
            "http_timeout": float(timeout) if timeout else DEFAULT_HTTP_TIMEOUT,
        }
        values.update(overrides)
        return cls(cache_dir=Path(cache_dir), **values)

    @classmethod
    def for_state(cls, state: Path) -> StorageSettings:
        """The embedded platform's settings: cache, PVC root and MLflow database in the state directory
        (``ODH_PVC_ROOT`` and ``MLFLOW_TRACKING_URI`` still win)."""
        from serving.config import mlflow_tracking_uri, model_cache_dir

        return cls.from_env(
            model_cache_dir(state),
            pvc_root=Path(os.environ.get("ODH_PVC_ROOT") or state / "pvc"),
            mlflow_tracking_uri=mlflow_tracking_uri(state),
        )

    def resolved_s3_endpoint(self) -> str | None:
        return self.s3_endpoint_url or s3_endpoint_from_env()

    def resolved_s3_verify(self) -> bool | str | None:
        return self.s3_verify if self.s3_verify is not None else s3_verify_from_env()

    def resolved_tracking_uri(self) -> str | None:
        return self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None

    def resolved_registry_uri(self) -> str | None:
        return self.mlflow_registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or self.resolved_tracking_uri()


def s3_endpoint_from_env() -> str | None:
    """boto3's own variables first, then KServe's ``S3_ENDPOINT`` (host[:port], no scheme) + ``S3_USE_HTTPS``."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name]
    endpoint = os.environ.get("S3_ENDPOINT")
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    # KServe treats anything but "0" as HTTPS (the default).
    scheme = "http" if os.environ.get("S3_USE_HTTPS", "1") == "0" else "https"
    return f"{scheme}://{endpoint}"


def s3_verify_from_env() -> bool | str | None:
    value = os.environ.get("S3_VERIFY_SSL")
    if value is None or value == "":
        return None
    if value.lower() in ("0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    return value  # a CA bundle path
