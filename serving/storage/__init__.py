"""The storage initializer: fetch a model from its storage URI into a content-addressed local cache.

What KServe's storage-initializer init container does, plus MLflow registry URIs (kserve#4251)::

    settings = StorageSettings.from_env(cache_dir)
    path = fetch("s3://bucket/models/iris", settings)     # cache_dir/sha256/<digest>/
    initialize("models:/iris@champion", Path("/mnt/models"), settings)

Schemes: absolute paths, ``file://``, ``pvc://``, ``s3://``, ``http(s)://``, ``models:/name@alias``,
``models:/name/version`` (and MLflow's ``runs:/``, ``mlflow-artifacts:``). A lone ``.tar``/``.tar.gz``/
``.tgz``/``.zip`` is extracted safely. Errors are ``serving.errors.StorageError`` (``UnsafeArchiveError``
for archives that would write outside their directory).
"""

from __future__ import annotations

from serving.errors import StorageError, UnsafeArchiveError
from serving.storage.digest import digest_tree
from serving.storage.fetch import fetch, initialize
from serving.storage.settings import StorageSettings
from serving.storage.uris import SUPPORTED_SCHEMES

__all__ = [
    "SUPPORTED_SCHEMES",
    "StorageError",
    "StorageSettings",
    "UnsafeArchiveError",
    "digest_tree",
    "fetch",
    "initialize",
]
