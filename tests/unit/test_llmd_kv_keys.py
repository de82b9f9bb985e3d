"""Our block keys: full blocks only, chained, stable, salted per model and LoRA."""

from __future__ import annotations

import pytest

from serving.llmd.kvcache.keys import ROOT, block_keys, root_key


def test_only_full_blocks_get_keys() -> None:
    assert block_keys(list(range(31)), 32) == []
    assert len(block_keys(list(range(95)), 32)) == 2
    assert block_keys(list(range(64)), 32) == block_keys(list(range(64)) + [1, 2, 3], 32)


def test_keys_are_chained_prefix_keys() -> None:
    tokens = list(range(1000, 1128))
    keys = block_keys(tokens, 32)
    assert len(keys) == len(set(keys)) == 4
    assert block_keys(tokens[:64], 32) == keys[:2]
    # same block content after a different prefix gets a different key
    other = block_keys([7] * 32 + tokens[32:64], 32)
    assert other[1] != keys[1]
    # continuing from a parent key equals computing the whole chain
    assert block_keys(tokens[64:], 32, parent=keys[1]) == keys[2:]


def test_keys_are_stable_64_bit_values() -> None:
    keys = block_keys(list(range(64)), 32)
    assert all(0 <= k < 2**64 for k in keys)
    assert keys == block_keys(list(range(64)), 32)  # deterministic (no per-process hash seed)
    assert block_keys(list(range(64)), 32, ROOT) == keys


def test_roots_salt_by_model_and_lora() -> None:
    roots = {root_key(), root_key("a"), root_key("b"), root_key("a", 1), root_key("a", 2)}
    assert len(roots) == 5
    assert block_keys([1] * 32, 32, root_key("a")) != block_keys([1] * 32, 32, root_key("b"))


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        block_keys([1, 2], 0)
    with pytest.raises(OverflowError):
        block_keys([-1] * 32, 32)
