"""models:/name@alias and models:/name/version, resolved in a real MLflow registry on SQLite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import IRIS_DIR

from serving.errors import StorageError
from serving.storage import StorageSettings, digest_tree, fetch, initialize

pytestmark = pytest.mark.integration

IRIS = (IRIS_DIR / "model.joblib").read_bytes()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A SQLite registry with iris v1 (source: a local directory holding the KServe iris model), alias champion."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    source = root / "models" / "iris-v1"
    source.mkdir(parents=True)
    shutil.copy(IRIS_DIR / "model.joblib", source / "model.joblib")
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.create_registered_model("iris")
    # A local directory is accepted as a version's source by the SQLite store (the REST server would
    # require a run or an artifact location it can reach, but no such check exists for a local store).
    version = client.create_model_version("iris", str(source), description="KServe sklearn iris sample")
    assert str(version.version) == "1"
    client.set_registered_model_alias("iris", "champion", "1")
    return tracking, root


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_alias_and_version_fetch_the_registered_files(registry: tuple[str, Path], tmp_path: Path) -> None:
    tracking, root = registry
    cfg = StorageSettings.from_env(tmp_path / "cache", mlflow_tracking_uri=tracking)
    by_alias = fetch("models:/iris@champion", cfg)
    by_version = fetch("models:/iris/1", cfg)
    assert files(by_alias) == files(by_version) == {"model.joblib": IRIS}
    assert by_alias == by_version == cfg.cache_dir / "sha256" / digest_tree(root / "models" / "iris-v1")


def test_tracking_uri_from_the_environment(registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracking, _ = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    dest = tmp_path / "mnt" / "models"
    initialize("models:/iris@champion", dest, StorageSettings(cache_dir=tmp_path / "cache"))
    assert (dest / "model.joblib").read_bytes() == IRIS


def test_moving_the_alias_fetches_the_new_version(registry: tuple[str, Path], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    tracking, root = registry
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    source = root / "models" / "iris-v2"
    source.mkdir()
    (source / "model.joblib").write_bytes(IRIS + b"\0retrained")
    v2 = client.create_model_version("iris", source.as_uri())
    client.set_registered_model_alias("iris", "challenger", "1")
    cfg = StorageSettings.from_env(tmp_path / "cache", mlflow_tracking_uri=tracking)
    try:
        assert files(fetch("models:/iris@challenger", cfg)) == {"model.joblib": IRIS}
        client.set_registered_model_alias("iris", "challenger", v2.version)
        assert files(fetch("models:/iris@challenger", cfg)) == {"model.joblib": IRIS + b"\0retrained"}
        assert files(fetch(f"models:/iris/{v2.version}", cfg)) == {"model.joblib": IRIS + b"\0retrained"}
    finally:
        client.delete_registered_model_alias("iris", "challenger")


def test_version_logged_to_a_run_downloads_through_mlflow(registry: tuple[str, Path], tmp_path: Path) -> None:
    """A ``runs:/`` source is MLflow's own scheme: it is fetched with mlflow.artifacts.download_artifacts."""
    import mlflow
    from mlflow import MlflowClient

    tracking, root = registry
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.create_experiment("storage-test", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(IRIS_DIR / "model.joblib"), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("iris-run")
    mv = client.create_model_version("iris-run", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    cfg = StorageSettings.from_env(tmp_path / "cache", mlflow_tracking_uri=tracking)
    assert files(fetch(f"models:/iris-run/{mv.version}", cfg)) == {"model.joblib": IRIS}
    assert mlflow.get_tracking_uri()  # untouched global state is fine; we passed the URI explicitly


def test_version_of_an_mlflow3_logged_model(registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow 3's log_model registers ``models:/m-<id>`` as the source; we find its artifact location
    ourselves, because MLflow's resolver for that form reads the process-global registry URI."""
    from mlflow import MlflowClient

    tracking, root = registry
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.create_experiment("logged-models", artifact_location=(root / "logged").as_uri())
    logged = client.create_logged_model(experiment, name="iris")
    client.log_model_artifacts(logged.model_id, str(IRIS_DIR))
    client.finalize_logged_model(logged.model_id, "READY")
    client.create_registered_model("iris-logged")
    with monkeypatch.context() as m:
        # MLflow's own create_model_version resolves the source through the global URI too.
        m.setenv("MLFLOW_TRACKING_URI", tracking)
        mv = client.create_model_version("iris-logged", f"models:/{logged.model_id}", model_id=logged.model_id)
    client.set_registered_model_alias("iris-logged", "champion", mv.version)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = StorageSettings.from_env(tmp_path / "cache", mlflow_tracking_uri=tracking)
    local = fetch("models:/iris-logged@champion", cfg)
    assert files(local)["model.joblib"] == IRIS
    assert fetch(f"models:/{logged.model_id}", cfg) == local


def test_unknown_alias_version_and_model_are_storage_errors(registry: tuple[str, Path], tmp_path: Path) -> None:
    tracking, _ = registry
    cfg = StorageSettings.from_env(tmp_path / "cache", mlflow_tracking_uri=tracking)
    with pytest.raises(StorageError, match=r"alias 'nosuch' of registered model 'iris' not found"):
        fetch("models:/iris@nosuch", cfg)
    with pytest.raises(StorageError, match=r"version 99 of registered model 'iris' not found"):
        fetch("models:/iris/99", cfg)
    with pytest.raises(StorageError, match=r"registered model 'ghost' not found"):
        fetch("models:/ghost@champion", cfg)
