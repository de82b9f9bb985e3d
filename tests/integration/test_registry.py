"""The MLflow registry on a real SQLite database."""

from __future__ import annotations

import pytest

from serving.errors import RegistryError
from serving.registry import ModelRegistry, parse_models_uri

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def test_registering_the_same_digest_twice_returns_the_first_version(registry: ModelRegistry) -> None:
    first = registry.register_version("iris", "file:///models/a", digest="aaa")
    again = registry.register_version("iris", "file:///models/a-copy", digest="aaa")
    other = registry.register_version("iris", "file:///models/b", digest="bbb")
    assert first.version == again.version == "1"
    assert again.source == "file:///models/a"
    assert other.version == "2"
    assert [v.version for v in registry.list_versions("iris")] == ["1", "2"]


def test_aliases_resolve_and_unknown_ones_say_so(registry: ModelRegistry) -> None:
    registry.register_version("wine", "file:///models/w", digest="www")
    registry.set_alias("wine", "champion", "1")
    assert registry.resolve("models:/wine@champion").version == "1"
    assert registry.resolve("models:/wine/1").source == "file:///models/w"
    with pytest.raises(RegistryError, match="no alias 'challenger'"):
        registry.resolve("models:/wine@challenger")
    with pytest.raises(RegistryError, match="no version 9"):
        registry.resolve("models:/wine/9")


def test_deployment_tags_and_retirement(registry: ModelRegistry) -> None:
    version = registry.register_version("tagged", "file:///models/t", digest="ttt")
    registry.tag_deployment("tagged", version.version, deployment="svc", namespace="team", url="http://x", status="ready")
    (deployed,) = registry.deployed_versions("svc", "team")
    assert deployed.tags["odh.deployment.url"] == "http://x"
    registry.mark_retired("tagged", version.version)
    assert registry.deployed_versions("svc", "team") == []
    assert registry.get_version("tagged", version.version).tags["odh.deployment.status"] == "retired"


def test_parse_models_uri() -> None:
    assert parse_models_uri("models:/iris@champion") == ("iris", "champion", None)
    assert parse_models_uri("models:/iris/3") == ("iris", None, "3")
    with pytest.raises(RegistryError, match="models:/NAME@ALIAS"):
        parse_models_uri("models:/iris")


def test_alias_lookup_removal_and_version_tags(registry: ModelRegistry) -> None:
    first = registry.register_version("rolled", "file:///models/r1", digest="r1")
    second = registry.register_version("rolled", "file:///models/r2", digest="r2")
    assert registry.alias_version("rolled", "champion") is None
    assert registry.alias_version("no-such-model", "champion") is None
    registry.set_alias("rolled", "champion", first.version)
    assert registry.alias_version("rolled", "champion") == first.version
    registry.set_version_tags("rolled", second.version, {"odh.rollout.status": "rolled-back",
                                                         "odh.rollout.reason": "canary 5xx 40 % > 5 %"})
    tags = registry.get_version("rolled", second.version).tags
    assert tags["odh.rollout.status"] == "rolled-back" and tags["odh.rollout.reason"] == "canary 5xx 40 % > 5 %"
    with pytest.raises(RegistryError, match="no version 7"):
        registry.set_version_tags("rolled", "7", {"odh.rollout.status": "promoted"})
    assert registry.delete_alias("rolled", "champion") is True
    assert registry.alias_version("rolled", "champion") is None
    assert registry.get_version("rolled", first.version).aliases == ()
    assert registry.delete_alias("rolled", "champion") is False  # a second removal is a no-op
