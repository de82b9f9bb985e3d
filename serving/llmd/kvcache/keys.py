"""Our own block keys: chained 64-bit hashes of full token blocks.

We never rely on the engine's hash algorithm (it changes between vLLM versions, may be salted per
process, and can be sha256 or builtin ``hash``); instead both sides of the index, the events (via their
``token_ids``) and the prompts to score, are keyed by the same function here:

    key_0 = H(root, tokens[0:B]),  key_i = H(key_{i-1}, tokens[i*B:(i+1)*B])

so a key names a whole prefix, like vLLM's own block hashes. Partial trailing blocks never get a key:
vLLM only caches (and reports) full blocks.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from hashlib import blake2b

_LITTLE = sys.byteorder == "little"


def root_key(model: str = "", lora_id: int | None = None) -> int:
    """The parent of the first block: salts keys per model and LoRA so they never collide across them."""
    salt = f"odh-kv|{model}|{'' if lora_id is None else lora_id}".encode()
    return int.from_bytes(blake2b(salt, digest_size=8).digest(), "little")


ROOT = root_key()


def token_bytes(token_ids: Sequence[int]) -> bytes:
    """Token ids as fixed little-endian uint32s: the bytes keys are hashed from, stable across machines.

    Raises ``TypeError``/``OverflowError`` for anything that is not a token id (non-int, negative, >= 2**32).
    """
    buf = array("I", token_ids)
    if not _LITTLE:
        buf.byteswap()
    return buf.tobytes()


def block_keys(token_ids: Sequence[int], block_size: int, parent: int = ROOT) -> list[int]:
    """Keys of the full blocks of ``token_ids``, chained from ``parent`` (the previous block's key)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n = len(token_ids) // block_size
    if n == 0:
        return []
    if len(token_ids) != n * block_size:
        token_ids = token_ids[: n * block_size]
    return block_keys_from_bytes(token_bytes(token_ids), block_size, parent)


def block_keys_from_bytes(data: bytes, block_size: int, parent: int = ROOT) -> list[int]:
    """``block_keys`` over ``token_bytes(...)`` already computed (the event decoder keeps them)."""
    step = block_size * 4
    end = len(data) - len(data) % step
    prev = parent.to_bytes(8, "little")
    digests = []
    append = digests.append
    # One blake2b call per block over (previous digest + block bytes): the hot loop of ingest and score.
    for i in range(0, end, step):
        prev = blake2b(prev + data[i : i + step], digest_size=8).digest()
        append(prev)
    return [int.from_bytes(d, "little") for d in digests]
