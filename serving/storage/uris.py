"""From a storage URI to the Source that fetches it."""

from __future__ import annotations

import re

from serving.errors import StorageError
from serving.storage.base import Source
from serving.storage.settings import StorageSettings

SUPPORTED_SCHEMES = (
    "/absolute/path",
    "file://",
    "pvc://",
    "s3://",
    "http://",
    "https://",
    "hf://ORG/NAME[:REVISION]",
    "models:/NAME@ALIAS",
    "models:/NAME/VERSION",
    "runs:/",
    "mlflow-artifacts:",
)
_MLFLOW_ARTIFACT_PREFIXES = ("runs:/", "mlflow-artifacts:")
# A scheme as RFC 3986 spells it; a single letter is a Windows drive, not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def native_source(uri: str, settings: StorageSettings) -> Source | None:
    """The Source for our own schemes (paths, file, pvc, s3, http(s)); None for anything else."""
    if uri.startswith("pvc://"):
        from serving.storage.local_source import pvc_source

        return pvc_source(uri, settings.pvc_root)
    if uri.startswith("s3://"):
        from serving.storage.s3_source import S3Source

        return S3Source(uri, settings)
    if uri.startswith("hf://"):
        from serving.storage.hf_source import HfSource

        return HfSource(uri)
    if uri.startswith(("http://", "https://")):
        from serving.storage.http_source import HttpSource

        return HttpSource(uri, settings.http_timeout)
    if uri.startswith("file://") or not _SCHEME.match(uri):
        from serving.storage.local_source import file_source

        return file_source(uri)
    return None


def source_for(uri: str, settings: StorageSettings) -> Source:
    """The Source for ``uri``; StorageError naming the supported schemes when none fits."""
    uri = uri.strip()
    if not uri:
        raise StorageError("empty storage URI")
    native = native_source(uri, settings)
    if native is not None:
        return native
    if uri.startswith(("models:/",) + _MLFLOW_ARTIFACT_PREFIXES):
        from serving.storage.mlflow_source import MlflowArtifactSource, MlflowModelSource, is_logged_model_uri

        def resolve_native(source: str) -> Source | None:
            return native_source(source, settings)

        if uri.startswith("models:/") and not is_logged_model_uri(uri):
            return MlflowModelSource(uri, settings, resolve_native)
        return MlflowArtifactSource(uri, settings, resolve_native)
    scheme = _SCHEME.match(uri)
    raise StorageError(
        f"unsupported storage URI {uri!r}"
        + (f" (scheme {scheme.group(1)!r})" if scheme else "")
        + f"; supported: {', '.join(SUPPORTED_SCHEMES)}"
    )
