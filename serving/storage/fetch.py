"""The storage initializer's two entry points: fetch into the cache, and initialize a model directory."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from serving.storage.cache import ModelCache
from serving.storage.settings import StorageSettings
from serving.storage.uris import source_for


def fetch(uri: str, settings: StorageSettings) -> Path:
    """A local directory holding the model files at ``uri``, from the shared content-addressed cache.

    Treat the returned directory as read-only: other replicas share it.
    """
    return ModelCache(settings.cache_dir).get(source_for(uri, settings))


def initialize(uri: str, dest: Path, settings: StorageSettings) -> Path:
    """KServe's storage-initializer contract: make ``dest`` hold the model files; return ``dest``.

    ``dest`` becomes a symlink to the cache entry (replaced atomically if it already is one, and in
    place of an empty directory). A directory that cannot be replaced (non-empty, or a mount point) is
    filled with one symlink per top-level entry instead.
    """
    entry = fetch(uri, settings)
    dest = Path(dest)
    if dest.is_dir() and not dest.is_symlink():
        try:
            dest.rmdir()
        except OSError:
            for child in entry.iterdir():
                _replace_with_link(dest / child.name, child)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _replace_with_link(dest, entry)
    return dest


def _replace_with_link(path: Path, target: Path) -> None:
    if path.exists() and not path.is_symlink():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    os.symlink(target.resolve(), tmp)
    os.replace(tmp, path)  # atomic, also over an existing symlink
