"""vLLM's KV events over ZMQ, byte for byte: what ``tests/fixtures/vllm-kv-events`` recorded.

PUB: multipart ``[topic, seq (8-byte big-endian), msgpack([ts, [event, ...], dp_rank])]``, one batch
per engine step. Events are maps keyed as vLLM's msgspec structs encode them (tag field ``type``).
ROUTER replay (vLLM's ``replay_endpoint``): a DEALER sends ``[b"", start_seq]`` and receives
``[b"", topic, seq, payload]`` per buffered batch with seq >= start_seq, then
``[b"", b"", seq=-1 (signed), b""]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import msgpack
import zmq
import zmq.asyncio

END_SEQ = (-1).to_bytes(8, "big", signed=True)
MEDIUM = "GPU"  # what vLLM reports for its own KV cache, CPU backend included
SPEC_KIND = "full_attention"


def block_stored(hashes: list[int], parent: int | None, token_ids: list[int], block_size: int) -> dict[str, Any]:
    # Field order and values as in the recording (extra_keys: one None per block).
    return {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": token_ids,
        "block_size": block_size,
        "lora_id": None,
        "medium": MEDIUM,
        "lora_name": None,
        "extra_keys": [None] * len(hashes),
        "group_idx": 0,
        "kv_cache_spec_kind": SPEC_KIND,
    }


def block_removed(hashes: list[int]) -> dict[str, Any]:
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": MEDIUM, "group_idx": 0}


def all_blocks_cleared() -> dict[str, Any]:
    return {"type": "AllBlocksCleared"}


def encode_batch(events: list[dict[str, Any]], ts: float | None = None, dp_rank: int = 0) -> bytes:
    return msgpack.packb([time.time() if ts is None else ts, events, dp_rank])


def topic_for(host: str, port: int, model: str) -> str:
    return f"kv@{host}:{port}@{model}"


class KVEventPublisher:
    """PUB socket plus optional ROUTER replay; ``publish`` never blocks (PUB drops at HWM)."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        topic: str,
        replay_endpoint: str | None = None,
        buffer_steps: int = 10_000,
    ) -> None:
        self.topic = topic.encode()
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self._seq = 0
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        # A plain (sync) PUB socket: sends never block and need no awaiting.
        self._pub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 100_000)
        self._pub.bind(endpoint)
        self._replay: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        if replay_endpoint:
            self._replay = ctx.socket(zmq.ROUTER)
            self._replay.setsockopt(zmq.LINGER, 0)
            self._replay.bind(replay_endpoint)

    @property
    def next_seq(self) -> int:
        return self._seq

    def publish(self, events: list[dict[str, Any]]) -> int:
        seq = self._seq
        self._seq += 1
        payload = encode_batch(events)
        self._buffer.append((seq, payload))
        seq_bytes = seq.to_bytes(8, "big")
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart((self.topic, seq_bytes, payload), flags=zmq.NOBLOCK)
        return seq

    def start(self) -> None:
        if self._replay is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve_replay())

    async def _serve_replay(self) -> None:
        sock = self._replay
        assert sock is not None
        while True:
            frames = await sock.recv_multipart()
            # [identity, b"", start_seq] from a DEALER; accept a missing delimiter too.
            if len(frames) not in (2, 3) or len(frames[-1]) != 8:
                continue
            ident, start = frames[0], int.from_bytes(frames[-1], "big")
            for seq, payload in list(self._buffer):
                if seq >= start:
                    await sock.send_multipart((ident, b"", self.topic, seq.to_bytes(8, "big"), payload))
            await sock.send_multipart((ident, b"", b"", END_SEQ, b""))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)
