"""The model registry: MLflow registered models, versions, aliases and deployment tags.

Registering is idempotent on the model's content digest: registering the same bytes twice returns the
version that already holds them instead of creating a second one. Aliases (not stages) name the version
a deployment follows, and tags on the version record where it is deployed and in what state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from serving.errors import RegistryError

if TYPE_CHECKING:  # mlflow is imported lazily: it is slow to import
    from mlflow.entities.model_registry import ModelVersion

DIGEST_TAG = "odh.digest"
DEPLOYMENT_TAGS = ("odh.deployment.name", "odh.deployment.namespace", "odh.deployment.url", "odh.deployment.status")
RETIRED = "retired"
SUPERSEDED = "superseded"
ROLLOUT_STATUS_TAG = "odh.rollout.status"
ROLLOUT_REASON_TAG = "odh.rollout.reason"

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    source: str
    digest: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The registry URI of exactly this version (``models:/name/version``)."""
        return f"models:/{self.name}/{self.version}"


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name@alias`` or ``models:/name/version`` into (name, alias, version)."""
    match = _MODELS_URI.match(uri)
    if not match:
        raise RegistryError(f"{uri!r} is not a registry URI: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


class ModelRegistry:
    """MLflow's model registry behind the few operations the lifecycle needs."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        # Imported here: MLflow takes seconds to import and most callers of serving never need it.
        import mlflow

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.tracking_uri = tracking_uri
        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)

    def register_version(
        self, name: str, source: str, *, digest: str, description: str | None = None, tags: dict[str, str] | None = None
    ) -> RegisteredVersion:
        """The version of ``name`` holding ``digest``, created from ``source`` only if none exists yet."""
        existing = self.find_by_digest(name, digest)
        if existing is not None:
            return existing
        self._ensure_registered_model(name)
        version = self._client.create_model_version(
            name, source=source, description=description, tags={**(tags or {}), DIGEST_TAG: digest}
        )
        return self.get_version(name, str(version.version))

    def find_by_digest(self, name: str, digest: str) -> RegisteredVersion | None:
        found = self._client.search_model_versions(f"name = '{name}' and tag.`{DIGEST_TAG}` = '{digest}'")
        if not found:
            return None
        oldest = min(found, key=lambda v: int(v.version))
        return self.get_version(name, str(oldest.version))

    def get_version(self, name: str, version: str) -> RegisteredVersion:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_model_version(name, version)
        except MlflowException as exc:
            raise RegistryError(f"model {name!r} has no version {version}: {exc.message}") from exc
        return _to_version(found)

    def resolve(self, uri: str) -> RegisteredVersion:
        """The version a ``models:/`` URI names today."""
        from mlflow.exceptions import MlflowException

        name, alias, version = parse_models_uri(uri)
        if version is not None:
            return self.get_version(name, version)
        if alias is None:  # cannot happen: the URI pattern gives exactly one of the two
            raise RegistryError(f"{uri!r} names neither an alias nor a version")
        try:
            found = self._client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            raise RegistryError(f"model {name!r} has no alias {alias!r}: set it with `odh` or MLflow first") from exc
        return _to_version(found)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def delete_alias(self, name: str, alias: str) -> bool:
        """Remove ``alias``; False when it was not set (so that running twice is harmless)."""
        from mlflow.exceptions import MlflowException

        if self.alias_version(name, alias) is None:
            return False
        try:
            self._client.delete_registered_model_alias(name, alias)
        except MlflowException:  # removed concurrently meanwhile: the outcome wanted
            return self.alias_version(name, alias) is not None
        return True

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set (overwrite) tags on one version, e.g. ``odh.rollout.status`` and ``odh.rollout.reason``."""
        self.get_version(name, version)  # a clear RegistryError for a missing version, before any write
        for key, value in tags.items():
            self._client.set_model_version_tag(name, version, key, value)

    def set_deployment_status(self, name: str, version: str, status: str) -> None:
        """Only the ``odh.deployment.status`` tag (e.g. ``superseded`` once another version took over)."""
        self._client.set_model_version_tag(name, version, "odh.deployment.status", status)

    def tag_deployment(self, name: str, version: str, *, deployment: str, namespace: str, url: str, status: str) -> None:
        values = (deployment, namespace, url, status)
        for key, value in zip(DEPLOYMENT_TAGS, values, strict=True):
            self._client.set_model_version_tag(name, version, key, value)

    def mark_retired(self, name: str, version: str) -> None:
        self._client.set_model_version_tag(name, version, "odh.deployment.status", RETIRED)
        self._client.set_model_version_tag(name, version, "odh.deployment.url", "")

    def deployed_versions(self, deployment: str, namespace: str) -> list[RegisteredVersion]:
        """Versions whose tags say they serve this deployment and are not retired yet."""
        found = self._client.search_model_versions(
            f"tag.`odh.deployment.name` = '{deployment}' and tag.`odh.deployment.namespace` = '{namespace}'"
        )
        versions = (_to_version(v) for v in found)
        return [v for v in versions if v.tags.get("odh.deployment.status") != RETIRED]

    def list_versions(self, name: str) -> list[RegisteredVersion]:
        # Searches do not return aliases: read each version to get them.
        numbers = sorted(int(v.version) for v in self._client.search_model_versions(f"name = '{name}'"))
        return [self.get_version(name, str(n)) for n in numbers]

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(name)
        except MlflowException:
            try:
                self._client.create_registered_model(name)
            except MlflowException as exc:  # created concurrently by another run: fine
                if "already exists" not in str(exc).lower():
                    raise


def _to_version(found: ModelVersion) -> RegisteredVersion:
    tags = dict(found.tags or {})
    return RegisteredVersion(
        name=found.name,
        version=str(found.version),
        source=found.source or "",  # MLflow types it optional; a version registered without one has nothing to serve
        digest=tags.get(DIGEST_TAG),
        aliases=tuple(found.aliases or ()),
        tags=tags,
    )
