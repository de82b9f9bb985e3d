from pathlib import Path

import pytest
from support import IRIS_DIR

from serving.artifacts import is_local, upload_model
from serving.storage import StorageSettings


def settings(tmp_path: Path) -> StorageSettings:
    return StorageSettings(cache_dir=tmp_path / "cache")


def test_uploading_the_same_file_twice_stores_it_once(tmp_path: Path) -> None:
    first = upload_model(str(IRIS_DIR / "model.joblib"), tmp_path / "artifacts", settings(tmp_path))
    again = upload_model((IRIS_DIR / "model.joblib").as_uri(), tmp_path / "artifacts", settings(tmp_path))
    assert first == again
    assert first.model_format == "sklearn" and first.files == ("model.joblib",)
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == [first.digest]
    assert first.uri == (tmp_path / "artifacts" / first.digest).as_uri()


def test_different_bytes_get_a_different_digest(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.joblib").write_bytes((IRIS_DIR / "model.joblib").read_bytes() + b"\0")
    a = upload_model(str(IRIS_DIR / "model.joblib"), tmp_path / "artifacts", settings(tmp_path))
    b = upload_model(str(other), tmp_path / "artifacts", settings(tmp_path))
    assert a.digest != b.digest


def test_a_missing_path_says_which(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        upload_model(str(tmp_path / "nope"), tmp_path / "artifacts", settings(tmp_path))


def test_remote_uris_are_not_local() -> None:
    assert is_local("/abs/model.joblib") and is_local("relative/dir") and is_local("file:///m")
    assert not any(is_local(u) for u in ("s3://b/k", "https://h/m.joblib", "pvc://claim/m", "models:/iris@champion"))
