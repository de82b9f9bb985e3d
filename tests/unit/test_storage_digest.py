"""digest_tree: names and bytes only, so equal trees match wherever they came from."""

from __future__ import annotations

import os
from pathlib import Path

from serving.storage import digest_tree


def tree(root: Path, entries: dict[str, bytes]) -> Path:
    for rel, data in entries.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_same_files_same_digest_regardless_of_mtimes_and_creation_order(tmp_path: Path) -> None:
    a = tree(tmp_path / "a", {"x/1": b"one", "y": b"two"})
    b = tree(tmp_path / "b", {"y": b"two", "x/1": b"one"})
    os.utime(b / "y", (0, 0))
    (b / "empty-dir").mkdir()
    assert digest_tree(a) == digest_tree(b)
    assert len(digest_tree(a)) == 64


def test_names_and_contents_both_count(tmp_path: Path) -> None:
    base = digest_tree(tree(tmp_path / "a", {"f": b"1"}))
    assert digest_tree(tree(tmp_path / "b", {"g": b"1"})) != base
    assert digest_tree(tree(tmp_path / "c", {"f": b"2"})) != base
    # Moving bytes between names must change the digest (no ambiguous concatenation).
    assert digest_tree(tree(tmp_path / "d", {"a": b"bc"})) != digest_tree(tree(tmp_path / "e", {"ab": b"c"}))


def test_a_single_file_digests_as_the_tree_holding_it(tmp_path: Path) -> None:
    tree(tmp_path / "t", {"model.joblib": b"m"})
    assert digest_tree(tmp_path / "t" / "model.joblib") == digest_tree(tmp_path / "t")


def test_symlinks_count_as_their_target_text_not_followed(tmp_path: Path) -> None:
    a = tree(tmp_path / "a", {"f": b"1"})
    (a / "link").symlink_to("/somewhere/outside")
    before = digest_tree(a)
    assert before != digest_tree(tree(tmp_path / "b", {"f": b"1"}))
    assert digest_tree(a) == before
