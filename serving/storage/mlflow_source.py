"""``models:/name@alias`` and ``models:/name/version``: resolved in the MLflow registry, then fetched
from the version's ``source`` (KServe's initializer cannot do this: kserve#4251).

A source our own schemes handle (file, pvc, s3, http) is fetched by them; MLflow's own schemes
(``runs:/``, ``mlflow-artifacts:``, ``models:/m-<id>`` logged models, ...) by
``mlflow.artifacts.download_artifacts``. MLflow is imported only here and only when used: it is slow to import.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.errors import StorageError
from serving.storage.base import Source
from serving.storage.settings import StorageSettings

# Returns the Source our own schemes use for a URI, or None when only MLflow can fetch it.
NativeResolver = Callable[[str], Source | None]


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, None, alias); ``models:/name/version`` -> (name, version, None)."""
    rest = uri.removeprefix("models:/").lstrip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in alias:
            return name, None, alias
    elif "/" in rest:
        name, _, version = rest.rpartition("/")
        if name and version:
            if version.isdigit():
                return name, version, None
            if version.lower() == "latest":
                return name, None, "latest"
            raise StorageError(f"{uri}: {version!r} is not a version number; use models:/{name}@ALIAS (stages are deprecated in MLflow)")
    raise StorageError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


class MlflowModelSource:
    """A registered model version, found by alias or number."""

    def __init__(self, uri: str, settings: StorageSettings, native: NativeResolver) -> None:
        self.uri = uri
        self.settings = settings
        self.name, self.version, self.alias = parse_model_uri(uri)
        self._native = native
        self._resolved: tuple[str, str, Source] | None = None  # version, source, the Source fetching it

    def _resolve(self) -> tuple[str, str, Source]:
        if self._resolved is None:
            from mlflow.exceptions import MlflowException

            try:
                if self.alias is not None:
                    mv = _client(self.settings).get_model_version_by_alias(self.name, self.alias)
                else:
                    mv = _client(self.settings).get_model_version(self.name, self.version)
            except MlflowException as exc:
                what = f"alias {self.alias!r}" if self.alias is not None else f"version {self.version}"
                raise StorageError(
                    f"{self.uri}: {what} of registered model {self.name!r} not found in the MLflow registry at "
                    f"{self.settings.resolved_registry_uri()} ({exc.message})"
                ) from exc
            if not mv.source:
                raise StorageError(f"{self.uri}: model version {mv.version} has no source")
            inner = self._native(mv.source) or MlflowArtifactSource(mv.source, self.settings, self._native)
            self._resolved = (str(mv.version), mv.source, inner)
        return self._resolved

    def fingerprint(self) -> Any:
        version, source, inner = self._resolve()
        # The alias may move and a file/s3 source may change: both invalidate the cached entry. A version's
        # MLflow-held artifacts (runs:/...) have no fingerprint but do not change under a version.
        return {"name": self.name, "version": version, "source": source, "inner": inner.fingerprint()}

    def download(self, into: Path) -> None:
        self._resolve()[2].download(into)


class MlflowArtifactSource:
    """An artifact URI only MLflow can read (``runs:/``, ``mlflow-artifacts:``, ``models:/m-<id>``)."""

    def __init__(self, uri: str, settings: StorageSettings, native: NativeResolver) -> None:
        self.uri = uri
        self.settings = settings
        self._native = native
        self._location: tuple[str, Source | None] | None = None

    def _resolve(self) -> tuple[str, Source | None]:
        """Where the artifacts are. A logged model (``models:/m-<id>``) is looked up here because MLflow's
        own resolver for it consults the process-global registry URI, ignoring the one passed to it."""
        if self._location is None:
            model_id = _logged_model_id(self.uri)
            location = self.uri
            if model_id is not None:
                from mlflow.exceptions import MlflowException

                try:
                    location = _client(self.settings).get_logged_model(model_id).artifact_location
                except MlflowException as exc:
                    raise StorageError(
                        f"{self.uri}: logged model {model_id!r} not found at {self.settings.resolved_tracking_uri()} ({exc.message})"
                    ) from exc
            self._location = (location, self._native(location))
        return self._location

    def fingerprint(self) -> Any:
        location, native = self._resolve()
        if native is not None:
            return {"location": location, "inner": native.fingerprint()}
        # Logged models are immutable once finalized; run artifacts can be overwritten, so always re-download.
        return [location] if _logged_model_id(self.uri) else None

    def download(self, into: Path) -> None:
        location, native = self._resolve()
        if native is not None:
            native.download(into)
        else:
            download_mlflow_artifacts(location, into, self.settings)


def _logged_model_id(uri: str) -> str | None:
    """``models:/m-<id>`` (an MLflow 3 logged model) -> ``m-<id>``; None for anything else."""
    rest = uri.removeprefix("models:/").lstrip("/") if uri.startswith("models:/") else ""
    return rest if rest.startswith("m-") and "/" not in rest and "@" not in rest else None


def is_logged_model_uri(uri: str) -> bool:
    return _logged_model_id(uri) is not None


def _client(settings: StorageSettings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.resolved_tracking_uri(), registry_uri=settings.resolved_registry_uri())


def download_mlflow_artifacts(artifact_uri: str, into: Path, settings: StorageSettings) -> None:
    """Download through MLflow, then move what it returns (a file or a directory's contents) into ``into``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(dir=into.parent) as scratch:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact_uri,
                    dst_path=scratch,
                    tracking_uri=settings.resolved_tracking_uri(),
                    registry_uri=settings.resolved_registry_uri(),
                )
            )
        except MlflowException as exc:
            raise StorageError(f"cannot download MLflow artifacts {artifact_uri}: {exc.message}") from exc
        except OSError as exc:
            raise StorageError(f"cannot download MLflow artifacts {artifact_uri}: {exc}") from exc
        if local.is_dir():
            for child in local.iterdir():
                shutil.move(str(child), into / child.name)
        else:
            shutil.move(str(local), into / local.name)
