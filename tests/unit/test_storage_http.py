"""http(s):// sources, against a throwaway loopback server (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving.errors import StorageError
from serving.storage import StorageSettings, fetch


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Files:
    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.gets: list[str] = []


@pytest.fixture()
def server() -> Iterator[tuple[str, Files]]:
    store = Files()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bool) -> None:
            data = store.content.get(self.path.split("?")[0])
            if data is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()[:16]}"')
            self.end_headers()
            if body:
                store.gets.append(self.path)
                self.wfile.write(data)

        def do_GET(self) -> None:  # http.server's naming
            self._send(True)

        def do_HEAD(self) -> None:
            self._send(False)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", store
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_single_file_named_from_the_url_and_cached_by_etag(server: tuple[str, Files], tmp_path: Path) -> None:
    base, store = server
    store.content["/models/iris/model.joblib"] = b"weights"
    cfg = StorageSettings(cache_dir=tmp_path)
    local = fetch(f"{base}/models/iris/model.joblib?sig=abc", cfg)
    assert [p.name for p in local.iterdir()] == ["model.joblib"]
    assert fetch(f"{base}/models/iris/model.joblib?sig=abc", cfg) == local
    assert store.gets == ["/models/iris/model.joblib?sig=abc"]  # the second fetch only sent a HEAD
    store.content["/models/iris/model.joblib"] = b"retrained"
    assert (fetch(f"{base}/models/iris/model.joblib?sig=abc", cfg) / "model.joblib").read_bytes() == b"retrained"


def test_tarball_over_http_is_extracted(server: tuple[str, Files], tmp_path: Path) -> None:
    base, store = server
    store.content["/m.tar.gz"] = tarball({"model.joblib": b"w", "conf/a.json": b"{}"})
    local = fetch(f"{base}/m.tar.gz", StorageSettings(cache_dir=tmp_path))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == ["conf/a.json", "model.joblib"]


def test_missing_url_is_a_storage_error(server: tuple[str, Files], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(StorageError, match=r"/nope/model.joblib: not found \(HTTP 404\)"):
        fetch(f"{base}/nope/model.joblib", StorageSettings(cache_dir=tmp_path))
    assert list((tmp_path / "sha256").iterdir()) == []


def test_url_without_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="file name"):
        fetch("http://127.0.0.1:9/", StorageSettings(cache_dir=tmp_path))
