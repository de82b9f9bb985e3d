"""``http(s)://`` URLs: one file, named after the last segment of the URL path."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from serving.errors import StorageError


class HttpSource:
    def __init__(self, uri: str, timeout: float) -> None:
        self.uri = uri
        self.timeout = timeout
        name = PurePosixPath(unquote(urlparse(uri).path)).name
        if name in ("", ".", ".."):
            raise StorageError(f"{uri}: the URL path must end in a file name")
        self.name = name

    def fingerprint(self) -> Any:
        """The server's validators, when it sends any; without them every fetch downloads again."""
        try:
            response = httpx.head(self.uri, follow_redirects=True, timeout=self.timeout)
        except httpx.HTTPError:
            return None  # the GET will report a real error
        if response.status_code != 200:
            return None
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
        if not etag and not modified:
            return None
        return [etag, modified, response.headers.get("content-length")]

    def download(self, into: Path) -> None:
        try:
            with httpx.stream("GET", self.uri, follow_redirects=True, timeout=self.timeout) as response:
                if response.status_code == 404:
                    raise StorageError(f"{self.uri}: not found (HTTP 404)")
                if response.status_code >= 400:
                    raise StorageError(f"{self.uri}: HTTP {response.status_code} {response.reason_phrase}")
                with open(into / self.name, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise StorageError(f"cannot download {self.uri}: {exc}") from exc
