"""API keys read from a file the router re-reads when it changes (``--api-key-file``).

The embedded platform writes an LLMInferenceService's Secret here (0600, replaced atomically), as a
kubelet keeps a Secret volume current: a changed Secret reaches the running router, and no key is on a
command line. The file is JSON, ``{"keys": [{"key": "...", "tenant": "...", "tier": "batch"}]}`` (tenant
and tier optional). A file that is missing, unreadable or holds no key refuses every request: a router
told to use a key file never falls open.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from serving.llmd.auth import ApiKey, KeyRing, parse_key
from serving.llmd.scheduler import Priority

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 0.2  # how stale a key may be: the file is stat'ed at most this often


def read_key_file(path: Path) -> list[ApiKey]:
    """The keys in ``path``; raises ValueError (or OSError) saying what is wrong with it."""
    data = json.loads(path.read_text())
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected {{\"keys\": [{{\"key\": ...}}]}}")
    keys = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise ValueError(f"{path}: keys[{index}] needs a non-empty \"key\"")
        tier = Priority.parse(entry["tier"]) if entry.get("tier") else None
        keys.append(ApiKey(entry["key"], tier, str(entry.get("tenant") or f"key-{entry['key'][:6]}")))
    return keys


class FileKeyRing(KeyRing):
    """``KeyRing`` over a key file, plus any keys given on the command line; re-read when the file changes."""

    def __init__(self, path: str | Path, specs: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self._fixed = [parse_key(s) for s in specs]
        self._seen: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        super().__init__(self._fixed)
        self.reload()

    @property
    def enabled(self) -> bool:
        return True

    def reload(self) -> None:
        """Read the file again when its inode, size or modification time changed."""
        try:
            stat = os.stat(self.path)
            seen: tuple[int, int, int] | None = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            seen = None
        if seen == self._seen:
            return
        self._seen = seen
        try:
            loaded = read_key_file(self.path) if seen is not None else []
        except (OSError, ValueError) as exc:
            log.warning("API key file unusable, refusing every request until it is fixed: %s", exc)
            loaded = []
        self.keys = [*self._fixed, *loaded]
        log.info("API keys loaded from %s: %d", self.path, len(self.keys))

    def check(self, authorization: str | None) -> ApiKey | None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_INTERVAL_S:
            self._checked = now
            self.reload()
        if not self.keys:
            return None  # no key configured in the file: nobody gets in
        return super().check(authorization)
