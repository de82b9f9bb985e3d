"""Archive extraction: the normal cases, and every way an entry could escape the target directory."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from serving.errors import UnsafeArchiveError
from serving.storage import StorageSettings, digest_tree, fetch
from serving.storage.archive import extract_archive

# Tar member kinds a test can ask for: (name, kind, payload-or-link-target)
Member = tuple[str, str, str]


def make_tar(path: Path, members: list[Member], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                payload = data.encode()
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
    return path


def make_zip(path: Path, members: list[Member]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, data in members:
            if kind == "file":
                zf.writestr(name, data)
            elif kind == "symlink":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data)
    return path


def settings(tmp_path: Path) -> StorageSettings:
    return StorageSettings(cache_dir=tmp_path / "cache")


MODEL = [("model/model.joblib", "file", "weights"), ("model/config.json", "file", "{}")]


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_fetched_tarball_is_extracted(tmp_path: Path, suffix: str, mode: str) -> None:
    archive = make_tar(tmp_path / f"model{suffix}", MODEL, mode)
    local = fetch(str(archive), settings(tmp_path))
    assert (local / "model" / "model.joblib").read_text() == "weights"
    assert not any(p.name.endswith(suffix) for p in local.rglob("*"))


def test_fetched_zip_is_extracted(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "model.zip", [("model.joblib", "file", "weights"), ("sub/a.txt", "file", "a")])
    local = fetch(archive.as_uri(), settings(tmp_path))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == ["model.joblib", "sub/a.txt"]


def test_internal_links_are_kept(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "m.tar", [
        ("data/weights.bin", "file", "w"),
        ("current", "symlink", "data"),
        ("data/alias.bin", "hardlink", "data/weights.bin"),
    ])
    dest = tmp_path / "out"
    dest.mkdir()
    extract_archive(archive, dest)
    assert (dest / "current" / "weights.bin").read_text() == "w"
    assert (dest / "data" / "alias.bin").read_text() == "w"


def test_same_content_archived_or_not_has_one_digest(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "model").mkdir(parents=True)
    (plain / "model" / "model.joblib").write_text("weights")
    (plain / "model" / "config.json").write_text("{}")
    archive = make_tar(tmp_path / "m.tar.gz", MODEL, "w:gz")
    assert fetch(str(archive), settings(tmp_path)) == fetch(str(plain), settings(tmp_path))
    assert digest_tree(fetch(str(plain), settings(tmp_path))) == digest_tree(plain)


ESCAPES: list[tuple[str, list[Member], str]] = [
    ("dotdot", [("ok.txt", "file", "x"), ("../evil.txt", "file", "x")], "../evil.txt"),
    ("nested-dotdot", [("a/../../evil.txt", "file", "x")], "a/../../evil.txt"),
    ("absolute", [("/tmp/evil.txt", "file", "x")], "/tmp/evil.txt"),
    ("symlink-outside", [("link", "symlink", "../outside")], "link"),
    ("symlink-absolute", [("link", "symlink", "/etc/passwd")], "link"),
]
TAR_ONLY_ESCAPES: list[tuple[str, list[Member], str]] = [
    ("hardlink-outside", [("link", "hardlink", "../outside.txt")], "link"),
    ("hardlink-absolute", [("link", "hardlink", "/etc/passwd")], "link"),
    # Each link stays inside by itself; followed through the first, the second climbs out.
    ("symlink-chain", [("deep/s", "symlink", ".."), ("deep/s/t", "symlink", ".."), ("deep/s/t/u", "symlink", "x")], "deep/s/t"),
    ("symlink-chain-resolves-out", [("deep/s", "symlink", ".."), ("deep/s/t", "symlink", "..")], "symlink resolving outside"),
    ("fifo", [("pipe", "fifo", "")], "pipe"),
]


@pytest.mark.parametrize("case,members,entry", ESCAPES + TAR_ONLY_ESCAPES, ids=[c[0] for c in ESCAPES + TAR_ONLY_ESCAPES])
def test_unsafe_tar_entries_are_refused_and_nothing_is_cached(tmp_path: Path, case: str, members: list[Member], entry: str) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    archive = make_tar(tmp_path / "evil.tar.gz", members, "w:gz")
    cfg = settings(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        fetch(str(archive), cfg)
    assert entry in str(err.value)
    assert_nothing_cached(cfg)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("case,members,entry", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_unsafe_zip_entries_are_refused_and_nothing_is_cached(tmp_path: Path, case: str, members: list[Member], entry: str) -> None:
    archive = make_zip(tmp_path / "evil.zip", members)
    cfg = settings(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        fetch(str(archive), cfg)
    assert entry in str(err.value)
    assert_nothing_cached(cfg)
    assert not (tmp_path / "evil.txt").exists()


def assert_nothing_cached(cfg: StorageSettings) -> None:
    assert list((cfg.cache_dir / "sha256").iterdir()) == []
    assert list((cfg.cache_dir / "uris").iterdir()) == []
    assert list((cfg.cache_dir / "tmp").iterdir()) == []
