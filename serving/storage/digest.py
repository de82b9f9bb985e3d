"""The content digest of a model tree: the cache's address and the registry's identity for a model."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def digest_tree(path: Path | str) -> str:
    """sha256 over the tree's sorted relative paths and their contents (hex).

    Only names and bytes count (not mtimes, modes or empty directories), so the same files fetched
    from two places get one digest. A symlink counts as its target text, never followed, so the
    digest cannot depend on anything outside the tree. A single file hashes as a tree holding it
    under its own name, which is what fetching that file produces.
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_dir():
        entries = _walk(root)
    else:
        entries = [(root.name, root)]
    outer = hashlib.sha256()
    for rel, full in sorted(entries, key=lambda e: e[0]):
        if full.is_symlink():
            kind, inner = "l", hashlib.sha256(os.readlink(full).encode()).hexdigest()
        else:
            kind, inner = "f", _file_sha256(full)
        # One line per entry; NUL separators keep names and kinds unambiguous.
        outer.update(f"{rel}\0{kind}\0{inner}\n".encode())
    return outer.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        # os.walk lists symlinks to directories among dirnames but does not descend: count them here.
        names = filenames + [d for d in dirnames if (base / d).is_symlink()]
        for name in names:
            full = base / name
            out.append((full.relative_to(root).as_posix(), full))
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
