"""``hf://`` through the real huggingface_hub, against a Hugging Face cache laid out on disk as the Hub's
client writes it (refs -> snapshots/<commit> -> symlinks into blobs), offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import constants

from serving.errors import StorageError
from serving.storage import StorageSettings, initialize
from serving.storage.hf_source import HfSource, parse_hf_uri

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_cached_repo(hub: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, (name, content) in enumerate(sorted(files.items())):
        blob = repo / "blobs" / f"blob{index}"
        blob.write_bytes(content)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


def test_uri_forms() -> None:
    assert parse_hf_uri("hf://org/tiny-llama") == ("org/tiny-llama", None)
    assert parse_hf_uri("hf://org/tiny-llama:v1.0") == ("org/tiny-llama", "v1.0")
    assert parse_hf_uri("hf://gpt2") == ("gpt2", None)
    for bad in ("hf://", "hf://org/a/b", "hf://org/../x", "hf://a--b/c"):
        with pytest.raises(StorageError, match="hf://ORG/NAME"):
            parse_hf_uri(bad)


def test_a_cached_model_is_copied_with_real_files_and_fingerprinted_by_commit(hub: Path, tmp_path: Path) -> None:
    write_cached_repo(hub, "org/tiny", {"config.json": b"{}", "tokenizer.json": b'{"v": 1}'})
    assert HfSource("hf://org/tiny").fingerprint() == ["org/tiny", COMMIT]
    model = initialize("hf://org/tiny", tmp_path / "mnt" / "models", StorageSettings(cache_dir=tmp_path / "cache"))
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "tokenizer.json"]
    assert (model / "tokenizer.json").read_bytes() == b'{"v": 1}'
    assert not any(p.is_symlink() for p in (tmp_path / "cache").rglob("tokenizer.json"))


def test_a_model_missing_offline_names_the_cache_and_the_fix(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        initialize("hf://org/absent", tmp_path / "m", StorageSettings(cache_dir=tmp_path / "cache"))
    assert "org/absent" in str(info.value) and str(hub) in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
