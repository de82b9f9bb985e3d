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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import StorageError
from serving.storage.archive import extract_archive, is_archive
from serving.storage.base import Source
from serving.storage.digest import digest_tree


@dataclass(frozen=True)
class PruneResult:
    """What ``ModelCache.prune`` removed: the URIs forgotten, the entries deleted and their size on disk."""

    uris: tuple[str, ...]
    entries: tuple[str, ...]
    bytes_freed: int


_PRUNE_LOCK = "prune"  # not a sha256: no URI's lock has this name


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
        # Shared: fetches run side by side, but never while ``prune`` (exclusive) decides what is unused.
        with self._lock(_PRUNE_LOCK, shared=True), self._lock(key):
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

    def prune(self, keep_uris: Iterable[str]) -> PruneResult:
        """Forget every URI not in ``keep_uris`` and delete the entries no remaining URI holds.

        It holds the cache's prune lock exclusively: fetches in progress (which hold it shared) finish first,
        and those that start meanwhile wait, then download again what was pruned. An entry is deleted only
        when no remaining index record names it (two URIs with equal content share one entry).
        """
        if not self.entries.is_dir():
            return PruneResult((), (), 0)
        self.locks.mkdir(parents=True, exist_ok=True)
        with self._lock(_PRUNE_LOCK):
            return self._prune({uri.strip() for uri in keep_uris})

    def _prune(self, keep: set[str]) -> PruneResult:
        forgotten: list[str] = []
        for record_path in sorted(self.index.glob("*.json")):
            record = self._read_index(record_path.stem)
            if record is not None and record.get("uri") in keep:
                continue
            record_path.unlink(missing_ok=True)
            forgotten.append(str((record or {}).get("uri", record_path.stem)))
        held = {r.get("digest") for r in (self._read_index(p.stem) for p in self.index.glob("*.json")) if r}
        removed: list[str] = []
        freed = 0
        for entry in sorted(self.entries.iterdir()) if self.entries.is_dir() else []:
            if entry.name in held:
                continue
            size = _tree_size(entry)
            # Renamed away first (atomic): a reader sees the whole entry or none, never a half-deleted one.
            doomed = self.tmp / f"prune-{entry.name}"
            self.tmp.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(entry, doomed)
            except OSError:
                continue  # gone meanwhile
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(entry.name)
            freed += size
        return PruneResult(tuple(forgotten), tuple(removed), freed)

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
    def _lock(self, key: str, *, shared: bool = False) -> Iterator[None]:
        with open(self.locks / f"{key}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
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


def _tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed: an entry holds its own files)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _jsonable(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), for comparing with the index."""
    return json.loads(json.dumps(value))
