"""Decode vLLM KV-event messages into typed events.

Wire format (vLLM ``distributed/kv_events.py``): a ZMQ multipart ``[topic, seq, payload]`` where ``seq``
is an 8-byte big-endian counter and ``payload`` is msgpack ``[ts, [event, ...], dp_rank]`` (older
engines omit ``dp_rank``). Events come as maps with a ``type`` key, or, from engines whose msgspec
structs are ``array_like``, as positional arrays whose first element is the type tag:

    ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, ...]
    ["BlockRemoved", block_hashes, medium, ...]
    ["AllBlocksCleared"]

Block hashes are unsigned 64-bit ints or (newer engines) bytes; both are normalised to ``int`` so that a
BlockRemoved matches the BlockStored that introduced the same hash whatever its wire form.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import msgpack

from serving.errors import ServingError
from serving.llmd.kvcache.keys import token_bytes


class KVEventDecodeError(ServingError, ValueError):
    """A KV-event message that does not follow vLLM's format; the message says which part is wrong."""


# Not frozen: frozen dataclasses pay object.__setattr__ per field, and ingest decodes ~1e5 events/s.
@dataclass(slots=True)
class BlockStored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    # token_ids as keys.token_bytes(): computed once while validating, reused to compute keys
    token_bytes: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class BlockRemoved:
    block_hashes: list[int]
    medium: str | None = None


@dataclass(slots=True, frozen=True)
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(slots=True)
class EventBatch:
    ts: float
    events: list[KVEvent]
    dp_rank: int | None = None


@dataclass(slots=True, frozen=True)
class EventMessage:
    """One ZMQ message: the topic, the publisher's sequence number and the decoded batch."""

    topic: str
    seq: int
    batch: EventBatch


_ALL_CLEARED = AllBlocksCleared()


def decode_seq(frame: bytes) -> int:
    if not isinstance(frame, (bytes, bytearray, memoryview)) or len(frame) != 8:
        raise KVEventDecodeError(f"seq frame must be 8 bytes (big-endian), got {_describe(frame)}")
    return int.from_bytes(frame, "big")


def decode_message(frames: list[bytes]) -> EventMessage:
    """Decode a multipart ``[topic, seq, payload]`` as received by a SUB socket."""
    if len(frames) != 3:
        raise KVEventDecodeError(f"KV-event message must have 3 frames [topic, seq, payload], got {len(frames)}")
    topic, seq, payload = frames
    return EventMessage(bytes(topic).decode("utf-8", "replace"), decode_seq(seq), decode_payload(payload))


def decode_payload(payload: bytes) -> EventBatch:
    """Decode the msgpack payload ``[ts, [events], dp_rank?]``."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise KVEventDecodeError(f"payload is not valid msgpack: {exc}") from exc
    return decode_batch(raw)


def decode_batch(raw: Any) -> EventBatch:
    if type(raw) is not list or not 2 <= len(raw) <= 3:
        if not isinstance(raw, (list, tuple)) or len(raw) not in (2, 3):
            raise KVEventDecodeError(f"payload must be [ts, [events], dp_rank?], got {_describe(raw)}")
    ts, events = raw[0], raw[1]
    if type(ts) is not float:
        if not isinstance(ts, (int, float)) or isinstance(ts, bool):
            raise KVEventDecodeError(f"payload ts must be a number, got {_describe(ts)}")
        ts = float(ts)
    if not isinstance(events, (list, tuple)):
        raise KVEventDecodeError(f"payload events must be a list, got {_describe(events)}")
    dp_rank = raw[2] if len(raw) == 3 else None
    if dp_rank is not None and type(dp_rank) is not int:
        raise KVEventDecodeError(f"payload dp_rank must be an int, got {_describe(dp_rank)}")
    if len(events) == 1:  # the usual batch: skip enumerate and the comprehension
        return EventBatch(ts, [decode_event(events[0])], dp_rank)
    return EventBatch(ts, [decode_event(event, i) for i, event in enumerate(events)], dp_rank)


def decode_event(raw: Any, index: int = 0) -> KVEvent:
    """Decode one event, map or positional-array form."""
    if type(raw) is dict:
        fields = raw
        kind = raw.get("type")
    elif isinstance(raw, (list, tuple)) and raw:
        kind = raw[0]
        names = _POSITIONAL.get(kind) if isinstance(kind, str) else None
        if names is None:
            raise KVEventDecodeError(f"event {index}: unknown event type {kind!r}")
        if len(raw) - 1 < _REQUIRED[kind]:
            raise KVEventDecodeError(
                f"event {index}: {kind} array needs at least {_REQUIRED[kind]} fields "
                f"({', '.join(names[: _REQUIRED[kind]])}), got {len(raw) - 1}"
            )
        fields = dict(zip(names, raw[1:]))
    elif isinstance(raw, dict):
        fields = raw
        kind = raw.get("type")
    else:
        raise KVEventDecodeError(f"event {index}: must be a map or a non-empty array, got {_describe(raw)}")

    # The hot path builds no error strings: ``where`` is only formatted on failure.
    if kind == "BlockStored":
        get = fields.get
        hashes = _hashes(get("block_hashes"), index, kind)
        parent = get("parent_block_hash")
        if parent is not None and (type(parent) is not int or parent < 0):
            parent = _hash(parent, f"{_where(index, kind)} parent_block_hash")
        token_ids = get("token_ids")
        if type(token_ids) is not list:
            raise KVEventDecodeError(
                f"{_where(index, kind)}: token_ids must be a list of ints, got {_describe(token_ids)}"
            )
        try:  # validates every id in C, and keeps the bytes the index hashes
            data = token_bytes(token_ids)
        except (TypeError, OverflowError) as exc:
            raise KVEventDecodeError(
                f"{_where(index, kind)}: token_ids must be a list of 32-bit unsigned ints ({exc})"
            ) from exc
        block_size = get("block_size")
        if type(block_size) is not int or block_size <= 0:
            raise KVEventDecodeError(
                f"{_where(index, kind)}: block_size must be a positive int, got {_describe(block_size)}"
            )
        if len(token_ids) != len(hashes) * block_size:
            raise KVEventDecodeError(
                f"{_where(index, kind)}: {len(token_ids)} token_ids do not fill {len(hashes)} blocks of {block_size}"
            )
        lora_id = get("lora_id")
        if lora_id is not None and type(lora_id) is not int:
            raise KVEventDecodeError(f"{_where(index, kind)}: lora_id must be an int or null, got {_describe(lora_id)}")
        medium = get("medium")
        if medium is not None and type(medium) is not str:
            raise KVEventDecodeError(f"{_where(index, kind)}: medium must be a string or null, got {_describe(medium)}")
        return BlockStored(hashes, parent, token_ids, block_size, lora_id, medium, data)
    if kind == "BlockRemoved":
        medium = fields.get("medium")
        if medium is not None and type(medium) is not str:
            raise KVEventDecodeError(f"{_where(index, kind)}: medium must be a string or null, got {_describe(medium)}")
        return BlockRemoved(_hashes(fields.get("block_hashes"), index, kind), medium)
    if kind == "AllBlocksCleared":
        return _ALL_CLEARED
    raise KVEventDecodeError(f"event {index}: unknown event type {kind!r}")


def _where(index: int, kind: str) -> str:
    return f"event {index} ({kind})"


# Field order of vLLM's array_like msgspec structs (after the tag); newer engines append fields.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}
# msgspec's omit_defaults drops trailing defaulted fields (lora_id, medium), so only these must be present.
_REQUIRED = {"BlockStored": 4, "BlockRemoved": 1, "AllBlocksCleared": 0}


def _hash(value: Any, where: str) -> int:
    if type(value) is int:
        if value < 0:  # some engines send signed 64-bit; fold onto the unsigned range
            value &= 0xFFFFFFFFFFFFFFFF
        return value
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big")
    raise KVEventDecodeError(f"{where}: block hash must be an int or bytes, got {_describe(value)}")


def _hashes(value: Any, index: int, kind: str) -> list[int]:
    if type(value) is not list:
        raise KVEventDecodeError(f"{_where(index, kind)}: block_hashes must be a list, got {_describe(value)}")
    try:  # the common case: all unsigned 64-bit ints, checked in C
        array("Q", value)
        return value
    except (TypeError, OverflowError):
        return [_hash(v, f"{_where(index, kind)} block_hashes[{i}]") for i, v in enumerate(value)]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
