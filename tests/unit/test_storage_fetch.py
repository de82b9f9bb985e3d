"""fetch/initialize over local sources: paths, file://, pvc://, the cache and its index, errors, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import IRIS_DIR, REPO_ROOT

from serving.errors import StorageError
from serving.storage import SUPPORTED_SCHEMES, StorageSettings, digest_tree, fetch, initialize
from serving.storage.local_source import LocalSource


@pytest.fixture()
def cfg(tmp_path: Path) -> StorageSettings:
    return StorageSettings(cache_dir=tmp_path / "cache", pvc_root=tmp_path / "pvc")


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "model"
    (root / "sub").mkdir(parents=True)
    (root / "model.joblib").write_bytes((IRIS_DIR / "model.joblib").read_bytes())
    (root / "sub" / "meta.json").write_text('{"a": 1}')
    return root


@pytest.fixture()
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every LocalSource.download call, by URI: proves when the cache copies and when it does not."""
    calls: list[str] = []
    original = LocalSource.download

    def counting(self: LocalSource, into: Path) -> None:
        calls.append(self.uri)
        original(self, into)

    monkeypatch.setattr(LocalSource, "download", counting)
    return calls


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def index_record(cfg: StorageSettings, uri: str) -> dict:
    return json.loads((cfg.cache_dir / "uris" / f"{hashlib.sha256(uri.encode()).hexdigest()}.json").read_text())


def test_directory_path_is_fetched_into_the_content_addressed_cache(cfg: StorageSettings, model: Path) -> None:
    local = fetch(str(model), cfg)
    assert local == cfg.cache_dir / "sha256" / digest_tree(model)
    assert files(local) == files(model)
    assert index_record(cfg, str(model))["digest"] == local.name


def test_single_file_and_file_uri(cfg: StorageSettings, model: Path) -> None:
    local = fetch((model / "model.joblib").as_uri(), cfg)
    assert files(local) == {"model.joblib": (IRIS_DIR / "model.joblib").read_bytes()}
    assert fetch(model.as_uri(), cfg) == fetch(str(model), cfg)


def test_pvc_uri_maps_into_the_pvc_root(cfg: StorageSettings, model: Path) -> None:
    claim = cfg.pvc_root / "my-claim" / "models" / "iris"
    claim.mkdir(parents=True)
    (claim / "model.joblib").write_bytes(b"pvc model")
    local = fetch("pvc://my-claim/models/iris", cfg)
    assert files(local) == {"model.joblib": b"pvc model"}
    assert files(fetch("pvc://my-claim/models/iris/model.joblib", cfg)) == {"model.joblib": b"pvc model"}


def test_pvc_errors(cfg: StorageSettings, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"\.\."):
        fetch("pvc://claim/../../etc", cfg)
    with pytest.raises(StorageError, match="pvc_root"):
        fetch("pvc://claim/x", StorageSettings(cache_dir=tmp_path / "c"))
    with pytest.raises(StorageError, match=r"pvc://missing/model.*no such file or directory .*pvc/missing/model"):
        fetch("pvc://missing/model", cfg)


def test_missing_path_names_what_and_where(cfg: StorageSettings, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"no such file or directory {tmp_path}/nope"):
        fetch(str(tmp_path / "nope"), cfg)


def test_second_fetch_of_an_unchanged_source_copies_nothing(cfg: StorageSettings, model: Path, downloads: list[str]) -> None:
    first = fetch(str(model), cfg)
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    record = index_record(cfg, str(model))
    second = fetch(str(model), cfg)
    assert second == first
    assert downloads == [str(model)]
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == mtimes
    assert index_record(cfg, str(model)) == record


def test_changed_source_is_fetched_again_into_a_new_entry(cfg: StorageSettings, model: Path, downloads: list[str]) -> None:
    first = fetch(str(model), cfg)
    (model / "model.joblib").write_bytes(b"retrained")
    second = fetch(str(model), cfg)
    assert second != first and files(second)["model.joblib"] == b"retrained"
    assert files(first)["model.joblib"] == (IRIS_DIR / "model.joblib").read_bytes()  # old entry untouched
    assert len(downloads) == 2
    assert index_record(cfg, str(model))["digest"] == second.name


def test_a_deleted_cache_entry_is_fetched_again(cfg: StorageSettings, model: Path, downloads: list[str]) -> None:
    import shutil

    shutil.rmtree(fetch(str(model), cfg))
    assert files(fetch(str(model), cfg)) == files(model)
    assert len(downloads) == 2


def test_same_content_from_two_uris_is_one_cache_entry(cfg: StorageSettings, model: Path, tmp_path: Path) -> None:
    copy = cfg.pvc_root / "claim" / "iris"
    import shutil

    shutil.copytree(model, copy)
    a = fetch(str(model), cfg)
    b = fetch("pvc://claim/iris", cfg)
    assert a == b
    assert len(list((cfg.cache_dir / "sha256").iterdir())) == 1
    assert len(list((cfg.cache_dir / "uris").iterdir())) == 2


def test_concurrent_fetches_of_one_uri_download_once(cfg: StorageSettings, model: Path, downloads: list[str]) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(str(model), cfg))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and files(results[0]) == files(model)
    assert downloads == [str(model)]  # the per-URI lock made the other seven wait, then hit the index
    assert list((cfg.cache_dir / "tmp").iterdir()) == []


def test_concurrent_processes_share_the_cache(cfg: StorageSettings, model: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from serving.storage import StorageSettings, fetch; "
        "print(fetch(sys.argv[1], StorageSettings(cache_dir=Path(sys.argv[2]))))"
    )
    args = [sys.executable, "-c", code, str(model), str(cfg.cache_dir)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT) for _ in range(4)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outs == {str(cfg.cache_dir / "sha256" / digest_tree(model))}


@pytest.mark.parametrize("uri", ["gs://bucket/model", "hdfs://nn/model", "foo:bar"])
def test_unknown_scheme_names_the_uri_and_the_supported_schemes(cfg: StorageSettings, uri: str) -> None:
    with pytest.raises(StorageError) as err:
        fetch(uri, cfg)
    message = str(err.value)
    assert uri in message
    assert all(s in message for s in SUPPORTED_SCHEMES)


@pytest.mark.parametrize("uri", ["models:/iris", "models:/iris/Production", "models:/"])
def test_malformed_models_uri(cfg: StorageSettings, uri: str) -> None:
    with pytest.raises(StorageError, match="models:/"):
        fetch(uri, cfg)


def test_empty_uri(cfg: StorageSettings) -> None:
    with pytest.raises(StorageError, match="empty"):
        fetch("  ", cfg)


def test_initialize_links_dest_to_the_cache_entry(cfg: StorageSettings, model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "pod" / "mnt" / "models"
    assert initialize(str(model), dest, cfg) == dest
    assert dest.is_symlink() and dest.resolve() == fetch(str(model), cfg).resolve()
    assert files(dest) == files(model)
    # Re-initializing (a restarted replica) replaces the link, also with another model.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.bst").write_bytes(b"xgb")
    initialize(str(other), dest, cfg)
    assert files(dest) == {"model.bst": b"xgb"}


def test_initialize_into_an_existing_directory(cfg: StorageSettings, model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    initialize(str(model), empty, cfg)
    assert files(empty) == files(model)
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / ".keep").write_text("")
    initialize(str(model), mount, cfg)
    assert (mount / "model.joblib").is_symlink() and (mount / "model.joblib").read_bytes() == (model / "model.joblib").read_bytes()
    assert (mount / "sub" / "meta.json").read_text() == '{"a": 1}'


def test_from_env_reads_kserve_and_boto_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI", "S3_VERIFY_SSL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("S3_ENDPOINT", "minio.local:9000")
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("S3_VERIFY_SSL", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    s = StorageSettings.from_env(tmp_path)
    assert (s.cache_dir, s.s3_endpoint_url, s.s3_verify, s.mlflow_tracking_uri) == (tmp_path, "http://minio.local:9000", False, "sqlite:///x.db")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert StorageSettings.from_env(tmp_path).s3_endpoint_url == "http://127.0.0.1:1"
    over = StorageSettings.from_env(str(tmp_path), s3_endpoint_url="http://x", pvc_root=str(tmp_path / "p"), http_timeout=5)
    assert (over.s3_endpoint_url, over.pvc_root, over.http_timeout) == ("http://x", tmp_path / "p", 5)
    monkeypatch.delenv("S3_USE_HTTPS")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert StorageSettings.from_env(tmp_path).s3_endpoint_url == "https://minio.local:9000"
    with pytest.raises(TypeError, match="bogus"):
        StorageSettings.from_env(tmp_path, bogus=1)


def test_cli_prints_the_local_path_and_fails_with_the_message(model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    dest = tmp_path / "mnt" / "models"
    ok = subprocess.run([sys.executable, "-m", "serving.storage", str(model), str(dest), "--cache-dir", str(tmp_path / "c")],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(dest)
    assert files(dest) == files(model)
    bad = subprocess.run([sys.executable, "-m", "serving.storage", "gs://b/m", str(dest), "--cache-dir", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert bad.returncode == 1
    assert "gs://b/m" in bad.stderr and "s3://" in bad.stderr
