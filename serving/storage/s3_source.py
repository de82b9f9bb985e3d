"""``s3://bucket/key-or-prefix`` through boto3, against AWS or any S3-compatible endpoint."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from serving.errors import StorageError
from serving.storage.settings import StorageSettings

_PARALLEL_DOWNLOADS = 8


@dataclass(frozen=True)
class _Object:
    key: str
    rel: str  # path under the download directory
    etag: str
    size: int


class S3Source:
    """An object (saved under its base name) or every object under a prefix (saved relative to it).

    ``s3://b/models/iris`` is the object ``models/iris`` if it exists, else the "directory"
    ``models/iris/`` (never ``models/iris2/...``, which a bare prefix match would also take).
    """

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        self.uri = uri
        rest = uri.removeprefix("s3://")
        self.bucket, _, self.prefix = rest.partition("/")
        if not self.bucket:
            raise StorageError(f"{uri}: s3:// URIs have the form s3://bucket[/key-or-prefix]")
        self.endpoint = settings.resolved_s3_endpoint()
        verify = settings.resolved_s3_verify()
        self._client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=settings.s3_region,
            verify=verify,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=_PARALLEL_DOWNLOADS * 2),
        )
        self._listing: list[_Object] | None = None

    def _where(self) -> str:
        return f"{self.uri} (endpoint {self.endpoint or 'AWS default'})"

    def _list(self) -> list[_Object]:
        if self._listing is not None:
            return self._listing
        try:
            objects = self._single_object() or self._under_prefix()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise StorageError(f"bucket {self.bucket!r} not found at {self._where()}") from exc
            raise StorageError(f"cannot list {self._where()}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach {self._where()}: {exc}") from exc
        if not objects:
            raise StorageError(f"no objects found at {self._where()}")
        self._listing = objects
        return objects

    def _single_object(self) -> list[_Object]:
        if not self.prefix or self.prefix.endswith("/"):
            return []
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return []
            raise
        name = PurePosixPath(self.prefix).name
        return [_Object(self.prefix, name, head.get("ETag", ""), int(head.get("ContentLength", 0)))]

    def _under_prefix(self) -> list[_Object]:
        directory = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        out = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=directory):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker some tools create
                out.append(_Object(key, _safe_rel(key[len(directory):], self.uri), obj.get("ETag", ""), int(obj.get("Size", 0))))
        return out

    def fingerprint(self) -> Any:
        return [[o.rel, o.etag, o.size] for o in self._list()]

    def download(self, into: Path) -> None:
        objects = self._list()

        def one(obj: _Object) -> None:
            target = into / obj.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self._client.download_file(self.bucket, obj.key, str(target))

        try:
            with ThreadPoolExecutor(max_workers=_PARALLEL_DOWNLOADS) as pool:
                list(pool.map(one, objects))
        except ClientError as exc:
            raise StorageError(f"cannot download from {self._where()}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach {self._where()}: {exc}") from exc


def _safe_rel(rel: str, uri: str) -> str:
    """An object key made relative to the prefix; keys with ``..`` could write outside the download dir."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise StorageError(f"{uri}: refusing object key with an unsafe path {rel!r}")
    return "/".join(parts)
