"""Retire's cache prune: URIs nothing references are forgotten, entries no remaining URI holds are deleted (with
the bytes they took), an entry shared with a kept URI stays, and a pruned URI fetches again."""

from __future__ import annotations

import threading
from pathlib import Path

from serving.storage.cache import ModelCache
from serving.storage.local_source import LocalSource


def model(root: Path, name: str, content: bytes) -> LocalSource:
    directory = root / name
    directory.mkdir()
    (directory / "model.joblib").write_bytes(content)
    return LocalSource(directory.as_uri(), directory)


def test_prune_keeps_what_is_referenced_and_frees_the_rest(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    kept, retired, twin = (model(tmp_path, "kept", b"k" * 100), model(tmp_path, "retired", b"r" * 5000),
                           model(tmp_path, "twin", b"k" * 100))
    kept_entry, retired_entry, twin_entry = cache.get(kept), cache.get(retired), cache.get(twin)
    assert twin_entry == kept_entry  # same content, one entry

    result = cache.prune({kept.uri})
    assert set(result.uris) == {retired.uri, twin.uri}
    assert result.entries == (retired_entry.name,)  # the twin's entry is the kept URI's too
    assert result.bytes_freed == 5000
    assert kept_entry.is_dir() and not retired_entry.exists()
    assert not list((tmp_path / "cache" / "tmp").iterdir())

    again = cache.prune({kept.uri})  # nothing left to do
    assert (again.uris, again.entries, again.bytes_freed) == ((), (), 0)
    assert cache.get(retired) == retired_entry and retired_entry.is_dir()  # a pruned URI simply fetches again


def test_prune_of_an_empty_cache_is_a_no_op(tmp_path: Path) -> None:
    result = ModelCache(tmp_path / "never-used").prune(set())
    assert (result.uris, result.entries, result.bytes_freed) == ((), (), 0)


def test_a_fetch_in_progress_finishes_before_prune_decides(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    slow = model(tmp_path, "slow", b"s" * 10)
    cache.get(model(tmp_path, "warm", b"w"))  # the cache's directories exist
    downloading, release = threading.Event(), threading.Event()
    original = slow.download

    def held_download(into: Path) -> None:
        downloading.set()
        release.wait(30)
        original(into)

    slow.download = held_download  # type: ignore[method-assign]
    fetched: list[Path] = []
    fetch = threading.Thread(target=lambda: fetched.append(cache.get(slow)))
    fetch.start()
    assert downloading.wait(30)
    pruned: list[object] = []
    prune = threading.Thread(target=lambda: pruned.append(cache.prune({slow.uri})))
    prune.start()
    prune.join(0.3)
    assert prune.is_alive() and not pruned  # waits for the fetch (shared lock held)
    release.set()
    fetch.join(30)
    prune.join(30)
    assert fetched and fetched[0].is_dir()  # the kept URI's fresh entry survived the prune
