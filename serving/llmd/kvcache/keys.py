"""Our own block keys: chained 64-bit hashes of full token blocks.

We never rely on the engine's hash algorithm (it changes between vLLM versions, may be salted per
process, and can be sha256 over pickle or CBOR); instead both sides of the index, the events (via their
``token_ids``) and the prompts to score, are keyed by the same function here:

    key_0 = H(root, tokens[0:B]),  key_i = H(key_{i-1}, tokens[i*B:(i+1)*B])

so a key names a whole prefix, like vLLM's own block hashes. Partial trailing blocks never get a key:
vLLM only caches (and reports) full blocks.

H is CPython's tuple hash of ``(parent, tuple(block_tokens))`` as an unsigned 64-bit value. It is
deterministic (int and tuple hashes are not salted by PYTHONHASHSEED) and the same on every 64-bit
CPython >= 3.8, so keys are stable across processes and machines; it is not cryptographic, which a
routing hint does not need. Why not blake2b: on the ingest hot path (one event per block) it cost
~1.6 us per block with the buffer and int conversions, against ~0.4 us for the tuple hash.
``root_key`` (once per model/LoRA) still uses blake2b over the salt.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from hashlib import blake2b

LITTLE_ENDIAN = sys.byteorder == "little"
MASK64 = (1 << 64) - 1


def root_key(model: str = "", lora_id: int | None = None) -> int:
    """The parent of the first block: salts keys per model and LoRA so they never collide across them."""
    salt = f"odh-kv|{model}|{'' if lora_id is None else lora_id}".encode()
    return int.from_bytes(blake2b(salt, digest_size=8).digest(), "little")


ROOT = root_key()


def check_token_ids(token_ids: Sequence[int]) -> None:
    """Raise ``TypeError``/``OverflowError`` unless every id is an int in [0, 2**32) (checked in C)."""
    array("I", token_ids)


def token_bytes(token_ids: Sequence[int]) -> bytes:
    """Token ids as fixed little-endian uint32s (validated as ``check_token_ids``)."""
    buf = array("I", token_ids)
    if not LITTLE_ENDIAN:
        buf.byteswap()
    return buf.tobytes()


def block_key(parent: int, block: tuple[int, ...]) -> int:
    """The key of one block (``block``: its ``block_size`` token ids) after ``parent``."""
    return hash((parent, block)) & MASK64


def block_keys(token_ids: Sequence[int], block_size: int, parent: int = ROOT) -> list[int]:
    """Keys of the full blocks of ``token_ids``, chained from ``parent`` (the previous block's key)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n = len(token_ids) // block_size
    if n == 0:
        return []
    end = n * block_size
    tokens = tuple(token_ids) if len(token_ids) == end else tuple(token_ids[:end])
    check_token_ids(tokens)
    return block_keys_from_tuple(tokens, block_size, parent)


def block_keys_from_tuple(tokens: tuple[int, ...], block_size: int, parent: int = ROOT) -> list[int]:
    """``block_keys`` over token ids already validated and made a tuple (the event decoder does both)."""
    if len(tokens) == block_size:  # one block: the common event, skip the loop
        return [hash((parent, tokens)) & MASK64]
    out: list[int] = []
    append = out.append
    prev = parent
    for i in range(0, len(tokens) - len(tokens) % block_size, block_size):
        prev = hash((prev, tokens[i : i + block_size])) & MASK64
        append(prev)
    return out
