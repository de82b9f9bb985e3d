"""S3 through moto's real server over HTTP: boto3 talks to it exactly as to any S3-compatible store."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from support import IRIS_DIR, free_port

from serving.errors import StorageError
from serving.storage import StorageSettings, digest_tree, fetch, initialize

pytestmark = pytest.mark.integration

BUCKET = "models"
IRIS = (IRIS_DIR / "model.joblib").read_bytes()


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on a free loopback port, fake credentials, and the endpoint set in the env."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="single/model.joblib", Body=IRIS)
        client.put_object(Bucket=BUCKET, Key="iris/v1/model.joblib", Body=IRIS)
        client.put_object(Bucket=BUCKET, Key="iris/v1/conf/settings.json", Body=b'{"name": "iris"}')
        client.put_object(Bucket=BUCKET, Key="iris/v1-other/decoy.bin", Body=b"not part of iris/v1")
        yield endpoint
    finally:
        server.stop()


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_single_object_and_prefix(s3: str, tmp_path: Path) -> None:
    cfg = StorageSettings.from_env(tmp_path / "cache")
    assert cfg.s3_endpoint_url == s3
    assert files(fetch(f"s3://{BUCKET}/single/model.joblib", cfg)) == {"model.joblib": IRIS}
    assert files(fetch(f"s3://{BUCKET}/iris/v1", cfg)) == {"model.joblib": IRIS, "conf/settings.json": b'{"name": "iris"}'}
    assert fetch(f"s3://{BUCKET}/iris/v1/", cfg) == fetch(f"s3://{BUCKET}/iris/v1", cfg)
    # The single object and the same bytes under another prefix share one cache entry.
    client = boto3.client("s3", endpoint_url=s3)
    client.put_object(Bucket=BUCKET, Key="copy/model.joblib", Body=IRIS)
    assert fetch(f"s3://{BUCKET}/copy", cfg) == fetch(f"s3://{BUCKET}/single/model.joblib", cfg)


def test_explicit_endpoint_overrides_the_environment(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    cfg = StorageSettings.from_env(tmp_path / "cache", s3_endpoint_url=s3)
    assert files(fetch(f"s3://{BUCKET}/single/model.joblib", cfg)) == {"model.joblib": IRIS}


def test_kserve_s3_endpoint_variables(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT", s3.removeprefix("http://"))
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    cfg = StorageSettings.from_env(tmp_path / "cache")
    assert files(fetch(f"s3://{BUCKET}/iris/v1/model.joblib", cfg)) == {"model.joblib": IRIS}


def test_unchanged_objects_are_not_downloaded_again_changed_ones_are(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = StorageSettings.from_env(tmp_path / "cache")
    uri = f"s3://{BUCKET}/iris/v1"
    first = fetch(uri, cfg)
    index = tmp_path / "cache" / "uris" / f"{hashlib.sha256(uri.encode()).hexdigest()}.json"
    etags = {rel: etag for rel, etag, _ in json.loads(index.read_text())["fingerprint"]}
    assert set(etags) == {"model.joblib", "conf/settings.json"}

    downloads: list[str] = []
    import boto3.s3.transfer

    original = boto3.s3.transfer.S3Transfer.download_file

    def counting(self, bucket, key, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
        downloads.append(key)
        return original(self, bucket, key, filename, *args, **kwargs)

    monkeypatch.setattr(boto3.s3.transfer.S3Transfer, "download_file", counting)
    assert fetch(uri, cfg) == first
    assert downloads == []

    boto3.client("s3", endpoint_url=s3).put_object(Bucket=BUCKET, Key="iris/v1/conf/settings.json", Body=b'{"name": "iris", "v": 2}')
    second = fetch(uri, cfg)
    assert second != first
    assert files(second)["conf/settings.json"] == b'{"name": "iris", "v": 2}'
    assert sorted(downloads) == ["iris/v1/conf/settings.json", "iris/v1/model.joblib"]
    new_etags = {rel: etag for rel, etag, _ in json.loads(index.read_text())["fingerprint"]}
    assert new_etags["conf/settings.json"] != etags["conf/settings.json"]
    assert new_etags["model.joblib"] == etags["model.joblib"]


def test_tarball_object_is_extracted(s3: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(IRIS_DIR / "model.joblib", arcname="model.joblib")
    boto3.client("s3", endpoint_url=s3).put_object(Bucket=BUCKET, Key="archives/iris.tar.gz", Body=buf.getvalue())
    cfg = StorageSettings.from_env(tmp_path / "cache")
    local = fetch(f"s3://{BUCKET}/archives/iris.tar.gz", cfg)
    assert files(local) == {"model.joblib": IRIS}
    assert local.name == digest_tree(local)


def test_initialize_from_s3(s3: str, tmp_path: Path) -> None:
    dest = tmp_path / "mnt" / "models"
    initialize(f"s3://{BUCKET}/iris/v1", dest, StorageSettings.from_env(tmp_path / "cache"))
    assert (dest / "model.joblib").read_bytes() == IRIS


def test_missing_objects_and_buckets(s3: str, tmp_path: Path) -> None:
    cfg = StorageSettings.from_env(tmp_path / "cache")
    with pytest.raises(StorageError, match=f"no objects found at s3://{BUCKET}/nope .*endpoint {s3}"):
        fetch(f"s3://{BUCKET}/nope", cfg)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' not found"):
        fetch("s3://no-such-bucket/iris", cfg)
    assert list((tmp_path / "cache" / "sha256").iterdir()) == []
