"""Local paths, ``file://`` URIs and ``pvc://`` claims (mapped into a local PVC root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from serving.errors import StorageError


class LocalSource:
    """A file or directory on this machine. Copied (never hardlinked) into the cache, so later edits
    to the source cannot change a cached entry behind its digest."""

    def __init__(self, uri: str, path: Path) -> None:
        self.uri = uri
        self.path = path

    def _check(self) -> None:
        if not self.path.exists():
            raise StorageError(f"{self.uri}: no such file or directory {self.path}")

    def fingerprint(self) -> list[list[object]]:
        self._check()
        if self.path.is_file():
            st = self.path.stat()
            return [[self.path.name, st.st_size, st.st_mtime_ns]]
        out: list[list[object]] = []
        for dirpath, _, filenames in os.walk(self.path, followlinks=True):
            for name in filenames:
                full = Path(dirpath) / name
                st = full.stat()
                out.append([full.relative_to(self.path).as_posix(), st.st_size, st.st_mtime_ns])
        return sorted(out)

    def download(self, into: Path) -> None:
        self._check()
        if self.path.is_file():
            shutil.copy2(self.path, into / self.path.name)
        else:
            # Follow symlinks (e.g. a Hugging Face snapshot's links into its blob store).
            shutil.copytree(self.path, into, symlinks=False, dirs_exist_ok=True)


def file_source(uri: str) -> LocalSource:
    """A plain path (absolute or relative to the working directory) or a ``file://`` URI."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs must name a local path (file:///abs/path)")
        path = Path(unquote(parsed.path))
    else:
        path = Path(uri).expanduser()
    return LocalSource(uri, path.absolute())


def pvc_source(uri: str, pvc_root: Path | None) -> LocalSource:
    """``pvc://claim/sub/path`` -> ``pvc_root/claim/sub/path``; the path may not climb out of the claim."""
    if pvc_root is None:
        raise StorageError(f"{uri}: pvc:// needs a PVC root directory (StorageSettings.pvc_root)")
    rest = uri.removeprefix("pvc://")
    claim, _, sub = rest.partition("/")
    if not claim:
        raise StorageError(f"{uri}: pvc:// URIs have the form pvc://claim[/path]")
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if ".." in parts or claim == "..":
        raise StorageError(f"{uri}: the path may not contain '..'")
    return LocalSource(uri, Path(pvc_root).absolute().joinpath(claim, *parts))
