"""vLLM v1's prefix-cache block hashes, reproduced so the simulator's KV events carry the real values.

What vLLM (v1, ``vllm/v1/core/kv_cache_utils.py`` and ``vllm/utils/hashing.py``) does:

- ``--prefix-caching-hash-algo`` picks the function: ``sha256`` (the default; SHA-256 of
  ``pickle.dumps(obj, protocol=HIGHEST_PROTOCOL)``) or ``sha256_cbor`` (SHA-256 of canonical CBOR,
  language independent). Newer engines add ``xxhash``/``xxhash_cbor``; not modelled here.
- block ``i``'s hash is ``fn((parent, tuple(block_token_ids), extra_keys))``, a 32-byte digest, where
  ``parent`` is block ``i-1``'s digest or, for the first block, ``NONE_HASH``; ``extra_keys`` is
  ``None`` for plain text requests (LoRA id, multimodal hashes, cache_salt otherwise).
- ``NONE_HASH = fn(os.environ["PYTHONHASHSEED"])`` (the seed *string*) when that variable is set, else
  32 random bytes per engine process: without a shared seed no outsider can recompute the hashes.
- KV events carry ``int.from_bytes(digest, "big") & (2**64 - 1)`` (the digest's last 8 bytes) while
  ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`` is on (the default), else the digest bytes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, Literal

HashAlgo = Literal["sha256", "sha256_cbor"]
HASH_ALGOS: tuple[HashAlgo, ...] = ("sha256", "sha256_cbor")
_LOW64 = (1 << 64) - 1


def sha256_pickle(obj: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for info, fmt, limit in ((24, ">B", 1 << 8), (25, ">H", 1 << 16), (26, ">I", 1 << 32), (27, ">Q", 1 << 64)):
        if n < limit:
            return bytes((major << 5 | info,)) + struct.pack(fmt, n)
    raise ValueError(f"CBOR integer out of range: {n}")


def cbor_canonical(obj: Any) -> bytes:
    """Canonical CBOR (RFC 8949 core deterministic) for what block hashes contain: ints, bytes, str,
    None, bools and tuples/lists of those. Matches ``cbor2.dumps(obj, canonical=True)`` on these types."""
    if obj is None:
        return b"\xf6"
    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if type(obj) is int:
        return _cbor_head(0, obj) if obj >= 0 else _cbor_head(1, -1 - obj)
    if isinstance(obj, (bytes, bytearray)):
        return _cbor_head(2, len(obj)) + bytes(obj)
    if isinstance(obj, str):
        data = obj.encode()
        return _cbor_head(3, len(data)) + data
    if isinstance(obj, (tuple, list)):
        return _cbor_head(4, len(obj)) + b"".join(cbor_canonical(x) for x in obj)
    raise TypeError(f"cannot CBOR-encode {type(obj).__name__} in a block hash")


def sha256_cbor(obj: Any) -> bytes:
    return hashlib.sha256(cbor_canonical(obj)).digest()


HASH_FUNCTIONS: dict[str, Callable[[Any], bytes]] = {"sha256": sha256_pickle, "sha256_cbor": sha256_cbor}


def external_hash(digest: bytes) -> int:
    """The form KV events carry by default: the digest's low 64 bits (big-endian)."""
    return int.from_bytes(digest[-8:], "big")


class VllmBlockHasher:
    """One engine's block hashing: the algorithm plus its ``NONE_HASH``, fixed at construction."""

    def __init__(self, algo: str = "sha256", seed: str | None = None, *, from_env: bool = True) -> None:
        """``seed``: the PYTHONHASHSEED string; ``None`` reads the environment (when ``from_env``) and,
        if unset there too, draws a random ``NONE_HASH`` as vLLM does."""
        fn = HASH_FUNCTIONS.get(algo)
        if fn is None:
            raise ValueError(f"unknown block hash algorithm {algo!r}; choose one of {', '.join(HASH_ALGOS)}")
        if seed is None and from_env:
            seed = os.environ.get("PYTHONHASHSEED")
        self.algo = algo
        self.seed = seed
        self._fn = fn
        self.none_hash = fn(seed) if seed is not None else os.urandom(32)

    def digests(self, token_ids: Sequence[int], block_size: int, extra_keys: Any = None) -> list[bytes]:
        """32-byte digests of the full blocks of ``token_ids`` (a partial tail block has none)."""
        fn = self._fn
        parent = self.none_hash
        out: list[bytes] = []
        for start in range(0, len(token_ids) - block_size + 1, block_size):
            parent = fn((parent, tuple(token_ids[start : start + block_size]), extra_keys))
            out.append(parent)
        return out

    def hashes(self, token_ids: Sequence[int], block_size: int, extra_keys: Any = None) -> list[int]:
        """The int form of ``digests`` that KV events carry (vLLM's ``maybe_convert_block_hash``)."""
        return [int.from_bytes(d[-8:], "big") for d in self.digests(token_ids, block_size, extra_keys)]
