"""Safe extraction of model archives (.tar, .tar.gz/.tgz, .zip), as KServe's initializer unpacks them.

Every entry is checked before anything is written: absolute names, ``..`` components, special files,
and links whose target would land outside the directory raise ``UnsafeArchiveError`` naming the entry.
Regular files and directories are written first and links last, so no file is ever written through a
link; a final pass checks that every symlink (followed through the links created before it) still
resolves inside the directory. The caller extracts into a scratch directory and discards it on error.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from serving.errors import StorageError, UnsafeArchiveError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(TAR_SUFFIXES + ZIP_SUFFIXES)


@dataclass(frozen=True)
class _Entry:
    name: str  # normalized, relative, POSIX
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    link: str = ""  # symlink target text, or hardlink's archive-relative target
    mode: int = 0o644
    open: Callable[[], IO[bytes]] | None = None


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the existing directory ``dest``; raise before writing on unsafe entries."""
    name = archive.name.lower()
    try:
        if name.endswith(ZIP_SUFFIXES):
            with zipfile.ZipFile(archive) as zf:
                _extract(_zip_entries(zf), dest)
        elif name.endswith(TAR_SUFFIXES):
            with tarfile.open(archive, "r:*") as tf:
                _extract(_tar_entries(tf), dest)
        else:
            raise StorageError(f"{archive.name} is not a supported archive ({', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)})")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise StorageError(f"cannot read archive {archive.name}: {exc}") from exc


def _normalize(raw: str) -> str:
    """The entry's path relative to the root; UnsafeArchiveError when it is absolute or climbs out."""
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafeArchiveError(f"archive entry {raw!r} has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive entry {raw!r} contains '..'")
    return "/".join(parts)


def _check_symlink(name: str, target: str) -> None:
    if target.startswith("/"):
        raise UnsafeArchiveError(f"archive entry {name!r} is a symlink to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"archive entry {name!r} is a symlink pointing outside the archive ({target!r})")


def _tar_entries(tf: tarfile.TarFile) -> list[_Entry]:
    entries = []
    for m in tf.getmembers():
        name = _normalize(m.name)
        if m.isdir():
            entries.append(_Entry(name, "dir"))
        elif m.isfile():
            entries.append(_Entry(name, "file", mode=m.mode, open=functools.partial(_tar_member, tf, m)))
        elif m.issym():
            _check_symlink(m.name, m.linkname)
            entries.append(_Entry(name, "symlink", link=m.linkname))
        elif m.islnk():
            try:
                target = _normalize(m.linkname)
            except UnsafeArchiveError:
                raise UnsafeArchiveError(f"archive entry {m.name!r} is a hardlink pointing outside the archive ({m.linkname!r})") from None
            entries.append(_Entry(name, "hardlink", link=target))
        else:
            raise UnsafeArchiveError(f"archive entry {m.name!r} is a special file (device or fifo)")
    return entries


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    reader = tf.extractfile(member)
    if reader is None:  # tarfile gives no reader for anything but a regular file, and only those come here
        raise StorageError(f"archive entry {member.name!r} cannot be read as a file")
    return reader


def _zip_entries(zf: zipfile.ZipFile) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        name = _normalize(info.filename)
        mode = info.external_attr >> 16
        if info.is_dir():
            entries.append(_Entry(name, "dir"))
        elif stat.S_ISLNK(mode):
            target = zf.read(info).decode()
            _check_symlink(info.filename, target)
            entries.append(_Entry(name, "symlink", link=target))
        else:
            entries.append(_Entry(name, "file", mode=stat.S_IMODE(mode) or 0o644, open=functools.partial(zf.open, info)))
    return entries


def _extract(entries: list[_Entry], dest: Path) -> None:
    root = dest.resolve()
    for e in entries:
        if not e.name:
            continue
        target = root / e.name
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif e.kind == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            assert e.open is not None
            with e.open() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            # Keep the executable bits, never setuid/setgid/sticky or a file its owner cannot read.
            target.chmod((e.mode & 0o777) | 0o600)
    for e in entries:
        if e.kind not in ("symlink", "hardlink") or not e.name:
            continue
        target = root / e.name
        # Links created earlier may redirect this entry's directory: resolve it before writing there.
        if not _inside(target.parent.resolve(), root):
            raise UnsafeArchiveError(f"archive entry {e.name!r} would be written outside the archive through a symlink")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            raise UnsafeArchiveError(f"archive entry {e.name!r} is a link over an existing entry")
        if e.kind == "symlink":
            os.symlink(e.link, target)
        else:
            # A copy rather than a hardlink: the source must be a regular file inside the tree.
            source = (root / e.link).resolve()
            if not _inside(source, root) or not source.is_file():
                raise UnsafeArchiveError(f"archive entry {e.name!r} is a hardlink to {e.link!r}, not a file in the archive")
            shutil.copy2(source, target)
    for path in _symlinks(root):
        if not _inside(path.resolve(), root):
            raise UnsafeArchiveError(f"archive entry {path.relative_to(root).as_posix()!r} is a symlink resolving outside the archive")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _symlinks(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out.append(p)
    return out
