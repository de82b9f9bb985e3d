"""The content-addressed model cache shared by every replica on a machine.

Layout under ``cache_dir``::

    sha256/<digest>/      one immutable entry per distinct model tree
    uris/<sha256(uri)>.json   {"uri", "fingerprint", "digest"}: what the URI held when last fetched
    locks/<sha256(uri)>.lock  flock'd while a URI is checked or fetched
    tmp/                  downloads in progress; renamed into sha256/ when complete

Fetches of one URI are serialized by the lock; fetches of different URIs with the same content race
only on the final rename, which is atomic: the loser finds the entry present and drops its copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving.errors import StorageError
from serving.storage.archive import extract_archive, is_archive
from serving.storage.base import Source
from serving.storage.digest import digest_tree


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries = self.root / "sha256"
        self.index = self.root / "uris"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"

    def entry(self, digest: str) -> Path:
        return self.entries / digest

    def get(self, source: Source) -> Path:
        """The cache entry holding ``source``'s files, downloading only when its fingerprint changed."""
        for d in (self.entries, self.index, self.locks, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(source.uri.encode()).hexdigest()
        with self._lock(key):
            fingerprint = source.fingerprint()
            record = self._read_index(key)
            if (
                fingerprint is not None
                and record is not None
                and record.get("uri") == source.uri
                and record.get("fingerprint") == _jsonable(fingerprint)
                and record.get("digest")
                and self.entry(record["digest"]).is_dir()
            ):
                return self.entry(record["digest"])
            digest = self._download(source)
            self._write_index(key, {"uri": source.uri, "fingerprint": fingerprint, "digest": digest})
            return self.entry(digest)

    def _download(self, source: Source) -> str:
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=self.tmp))
        try:
            raw = work / "raw"
            raw.mkdir()
            source.download(raw)
            tree = self._unpack(raw, work)
            if not any(tree.iterdir()):
                raise StorageError(f"{source.uri}: nothing was downloaded")
            digest = digest_tree(tree)
            target = self.entry(digest)
            if not target.is_dir():
                try:
                    os.rename(tree, target)  # atomic: readers see the whole entry or none
                except OSError:
                    if not target.is_dir():  # lost the race to an equal tree from another URI: fine
                        raise
            return digest
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _unpack(raw: Path, work: Path) -> Path:
        """A lone archive is extracted (as KServe does); anything else is kept as downloaded."""
        children = list(raw.iterdir())
        if len(children) == 1 and children[0].is_file() and is_archive(children[0]):
            tree = work / "tree"
            tree.mkdir()
            extract_archive(children[0], tree)
            return tree
        return raw

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with open(self.locks / f"{key}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.index / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None  # missing or torn: treat as a miss

    def _write_index(self, key: str, record: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.index)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, sort_keys=True)
        os.replace(tmp, self.index / f"{key}.json")


def _jsonable(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), for comparing with the index."""
    return json.loads(json.dumps(value))
