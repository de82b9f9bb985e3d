"""Decoding vLLM KV-event messages: the real recording, both event forms, hash forms, malformed input."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
from support import FIXTURES

from serving.llmd.kvcache.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventDecodeError,
    decode_message,
    decode_payload,
)

RECORDING = FIXTURES / "vllm-kv-events"


def recorded_frames() -> list[list[bytes]]:
    out = []
    for line in (RECORDING / "events.jsonl").read_text().splitlines():
        m = json.loads(line)
        out.append([m["topic"].encode(), m["seq"].to_bytes(8, "big"), base64.b64decode(m["payload_b64"])])
    return out


def test_decodes_the_whole_real_recording() -> None:
    messages = [decode_message(frames) for frames in recorded_frames()]
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert all(m.topic == "kv@127.0.0.1:8101@tiny-llama" and m.batch.dp_rank == 0 for m in messages)
    events = [e for m in messages for e in m.batch.events]
    stored = [e for e in events if isinstance(e, BlockStored)]
    removed = [e for e in events if isinstance(e, BlockRemoved)]
    assert len(stored) + len(removed) == len(events)
    assert sum(len(e.block_hashes) for e in stored) == 297
    assert sum(len(e.block_hashes) for e in removed) == 234
    first = stored[0]
    assert first.parent_block_hash is None and first.block_size == 32 and first.medium == "GPU"
    assert len(first.token_ids) == 32 * len(first.block_hashes) == 352
    assert all(isinstance(h, int) and 0 <= h < 2**64 for e in events for h in e.block_hashes)


def _payload(events: list, with_rank: bool = True) -> bytes:
    return msgpack.packb([1.5, events, 0] if with_rank else [1.5, events])


STORED_MAP = {
    "type": "BlockStored",
    "block_hashes": [11, 12],
    "parent_block_hash": 10,
    "token_ids": list(range(8)),
    "block_size": 4,
    "lora_id": None,
    "medium": "GPU",
}


def test_map_and_array_forms_decode_the_same() -> None:
    as_map = decode_payload(_payload([STORED_MAP, {"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU"},
                                      {"type": "AllBlocksCleared"}]))
    as_array = decode_payload(_payload([["BlockStored", [11, 12], 10, list(range(8)), 4, None, "GPU"],
                                        ["BlockRemoved", [11], "GPU"], ["AllBlocksCleared"]], with_rank=False))
    assert as_map.events == as_array.events
    assert as_map.dp_rank == 0 and as_array.dp_rank is None
    stored, removed, cleared = as_array.events
    assert stored == BlockStored([11, 12], 10, list(range(8)), 4, None, "GPU")
    assert removed == BlockRemoved([11], "GPU")
    assert isinstance(cleared, AllBlocksCleared)


def test_array_form_without_trailing_defaults_and_with_extra_fields() -> None:
    short = decode_payload(_payload([["BlockStored", [1], None, [5, 6], 2]]))
    assert short.events[0] == BlockStored([1], None, [5, 6], 2, None, None)
    longer = decode_payload(_payload([["BlockStored", [1], None, [5, 6], 2, 3, "CPU", "lora-x", None]]))
    assert longer.events[0].lora_id == 3 and longer.events[0].medium == "CPU"


def test_bytes_hashes_normalise_to_the_same_ints() -> None:
    h = (2**64 - 5).to_bytes(8, "big")
    batch = decode_payload(_payload([{**STORED_MAP, "block_hashes": [h, b"\x00" * 7 + b"\x0c"], "parent_block_hash": b"\x0a"},
                                     {"type": "BlockRemoved", "block_hashes": [2**64 - 5]}]))
    stored, removed = batch.events
    assert stored.block_hashes == [2**64 - 5, 12] and stored.parent_block_hash == 10
    assert removed.block_hashes == [2**64 - 5]


@pytest.mark.parametrize(
    ("frames", "needle"),
    [
        ([b"t", b"\x00" * 8], "3 frames"),
        ([b"t", b"\x00" * 4, _payload([])], "8 bytes"),
        ([b"t", b"\x00" * 8, b"\xc1"], "not valid msgpack"),
        ([b"t", b"\x00" * 8, msgpack.packb({"ts": 1})], "[ts, [events], dp_rank?]"),
        ([b"t", b"\x00" * 8, msgpack.packb([1.0, "x"])], "events must be a list"),
        ([b"t", b"\x00" * 8, _payload([{"type": "BlockMoved"}])], "unknown event type 'BlockMoved'"),
        ([b"t", b"\x00" * 8, _payload([["Nope", 1]])], "unknown event type 'Nope'"),
        ([b"t", b"\x00" * 8, _payload([["BlockStored", [1], None]])], "at least 4 fields"),
        ([b"t", b"\x00" * 8, _payload([{**STORED_MAP, "token_ids": [1, 2, 3]}])], "do not fill 2 blocks of 4"),
        ([b"t", b"\x00" * 8, _payload([{**STORED_MAP, "token_ids": [1] * 7 + [-1]}])], "32-bit unsigned"),
        ([b"t", b"\x00" * 8, _payload([{**STORED_MAP, "block_size": 0}])], "block_size must be a positive int"),
        ([b"t", b"\x00" * 8, _payload([{**STORED_MAP, "block_hashes": "ab"}])], "block_hashes must be a list"),
        ([b"t", b"\x00" * 8, _payload([{**STORED_MAP, "block_hashes": [1.5, 2]}])], "block_hashes[0]"),
        ([b"t", b"\x00" * 8, _payload([7])], "event 0: must be a map"),
    ],
)
def test_malformed_messages_name_the_problem(frames: list[bytes], needle: str) -> None:
    with pytest.raises(KVEventDecodeError) as info:
        decode_message(frames)
    assert needle in str(info.value)


def test_the_msgspec_fast_path_agrees_with_the_validating_decoder_on_every_form() -> None:
    import msgpack

    from serving.llmd.kvcache import events as ev

    stored_map = {"type": "BlockStored", "block_hashes": [2**64 - 1], "parent_block_hash": None,
                  "token_ids": list(range(32)), "block_size": 32, "lora_id": None, "medium": "GPU",
                  "lora_name": None, "extra_keys": [None], "group_idx": 0, "kv_cache_spec_kind": "full_attention"}
    stored_array = ["BlockStored", [5, 6], 2**63, list(range(64)), 32, None, "GPU", None, [None, None], 0]
    payloads = [
        [1.5, [stored_map, {"type": "BlockRemoved", "block_hashes": [2**64 - 1], "medium": "GPU"}], 0],
        [1.5, [stored_array, ["BlockRemoved", [5]], ["AllBlocksCleared"]]],
        [2, [{"type": "BlockStored", "block_hashes": [b"\x01" * 32], "parent_block_hash": None,  # bytes hash
              "token_ids": [1] * 32, "block_size": 32}], 1],
    ]
    for raw in payloads:
        payload = msgpack.packb(raw)
        fast, checked = ev.decode_events(payload), ev._decode_unpacked(ev._unpackb(payload))
        assert fast[0::2] == checked[0::2]
        assert [ev._typed(e) for e in fast[1]] == [ev._typed(e) for e in checked[1]]
        assert [e.kind for e in fast[1]] == [e.kind for e in checked[1]]
    for bad, field in ((stored_map | {"token_ids": [-1] * 32}, "token_ids"),
                       (stored_map | {"block_size": 0}, "block_size"),
                       (stored_map | {"token_ids": [1] * 31}, "do not fill")):
        with pytest.raises(ev.KVEventDecodeError, match=field):
            ev.decode_events(msgpack.packb([1.0, [bad], 0]))
