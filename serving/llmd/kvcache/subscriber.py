"""The I/O shell: one ZMQ SUB per engine, feeding its KV events into a ``KVIndex``.

Per pod it tracks the publisher's ``seq``:
- ``seq == last + 1``: apply;
- ``seq > last + 1`` (we missed batches): ask the engine's replay ROUTER for everything from ``last + 1``
  (a DEALER sends ``[b"", start_seq]`` and reads ``[b"", topic, seq, payload]`` until ``seq == -1``);
  live messages already covered by the replay are then skipped as duplicates;
- ``seq <= last`` outside such a window: the engine restarted (its counter starts over and its cache is
  empty), so the pod's entries are dropped before the new stream is applied;
- the first message of a stream with ``seq > 0`` is a gap from 0: a subscriber that joins late, or
  loses the first messages to ZMQ's slow-joiner effect, recovers whatever the engine still buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from serving.llmd.kvcache.events import KVEventDecodeError, decode_events
from serving.llmd.kvcache.index import KVIndex

log = logging.getLogger(__name__)

END_SEQ = -1
_NOBLOCK = int(zmq.NOBLOCK)
DRAIN_BUDGET = 256  # queued messages taken per wake-up before other tasks get the loop


@dataclass(slots=True)
class PodStream:
    pod: str
    endpoint: str
    replay_endpoint: str | None = None
    last_seq: int | None = None
    messages: int = 0
    gaps: int = 0
    replayed: int = 0
    lost: int = 0  # batches neither received nor recovered by replay
    duplicates: int = 0
    restarts: int = 0
    decode_errors: int = 0
    apply_errors: int = 0  # messages that decoded but the index failed on (a bug: logged with its traceback)
    replay_failures: int = 0
    # (after, upto]: seqs already applied from a replay that may still arrive live
    dup_window: tuple[int, int] | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    def summary(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "replay_endpoint": self.replay_endpoint,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "gaps": self.gaps,
            "replayed": self.replayed,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "restarts": self.restarts,
            "decode_errors": self.decode_errors,
            "apply_errors": self.apply_errors,
            "replay_failures": self.replay_failures,
        }


def _recv_queued(sock: zmq.Socket) -> list[bytes]:
    """One message already queued on ``sock`` (else ``zmq.Again``), read for vLLM's three frames.

    ``recv_multipart`` asks ``RCVMORE`` through ``getsockopt`` after every frame, which costs more than the
    receive itself (~1 us a frame); here only the third frame comes as a ``Frame``, whose ``more`` flag
    says whether the message goes on. A message of another length comes back with the wrong number of
    frames for ``handle`` to reject; at worst it takes its neighbour with it, a seq gap that replay mends.
    """
    parts = [sock.recv(_NOBLOCK)]
    try:
        parts.append(sock.recv(_NOBLOCK))
        frame = sock.recv(_NOBLOCK, copy=False)
        parts.append(frame.bytes)
        while frame.more:
            frame = sock.recv(_NOBLOCK, copy=False)
            parts.append(frame.bytes)
    except zmq.Again:  # a short last message: ZMQ delivers whole messages, so nothing more is coming
        pass
    return parts


class KVEventSubscriber:
    def __init__(
        self,
        index: KVIndex,
        context: zmq.asyncio.Context | None = None,
        replay_timeout: float = 2.0,
    ) -> None:
        self.index = index
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self.replay_timeout = replay_timeout
        self.streams: dict[str, PodStream] = {}

    async def add_pod(self, pod: str, endpoint: str, replay_endpoint: str | None = None) -> None:
        """Subscribe to ``pod``'s events (replacing an existing subscription of the same name)."""
        if pod in self.streams:
            await self.remove_pod(pod)
        stream = PodStream(pod, endpoint, replay_endpoint)
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint)
        self.index.add_pod(pod)
        self.streams[pod] = stream
        stream.task = asyncio.create_task(self._run(stream, sub), name=f"kv-events-{pod}")

    async def remove_pod(self, pod: str) -> None:
        """Stop ``pod``'s subscription and forget its blocks."""
        stream = self.streams.pop(pod, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task
        self.index.drop_pod(pod)

    async def close(self) -> None:
        for pod in list(self.streams):
            await self.remove_pod(pod)
        if self._own_context:
            self.context.term()

    def status(self) -> dict[str, dict[str, object]]:
        return {pod: stream.summary() for pod, stream in self.streams.items()}

    async def _run(self, stream: PodStream, sub: zmq.asyncio.Socket) -> None:
        # Awaiting each message costs zmq.asyncio a Future and a trip through the event loop, which
        # capped ingest at ~19k messages/s (benchmarks/llmd/indexer.py --zmq). So one await waits for
        # traffic, and a synchronous view of the same socket then takes what is already queued, up to
        # DRAIN_BUDGET messages before yielding to the router's requests on the shared loop.
        drain: zmq.Socket[bytes] = zmq.Socket.shadow(sub.underlying)
        try:
            while True:
                await self._handle_logged(stream, await sub.recv_multipart())
                for _ in range(DRAIN_BUDGET):
                    try:
                        frames = _recv_queued(drain)
                    except zmq.Again:
                        break
                    if not self._apply_next(stream, frames):
                        await self._handle_logged(stream, frames)
                else:
                    await asyncio.sleep(0)
        finally:
            sub.close(linger=0)

    async def _handle_logged(self, stream: PodStream, frames: list[bytes]) -> None:
        try:
            await self.handle(stream, frames)
        except Exception:  # one bad message must not end the subscription
            log.exception("KV events from %s: failed to handle a message", stream.pod)

    def _apply_next(self, stream: PodStream, frames: list[bytes]) -> bool:
        """``handle``'s common case without a coroutine: the message right after the last one, outside any
        replay window. Returns False, having done nothing, for anything else."""
        if len(frames) != 3 or stream.dup_window is not None or stream.last_seq is None:
            return False
        seq_frame = frames[1]
        if len(seq_frame) != 8 or int.from_bytes(seq_frame, "big") != stream.last_seq + 1:
            return False
        stream.messages += 1
        self._apply(stream, frames[2])
        stream.last_seq += 1
        return True

    async def handle(self, stream: PodStream, frames: list[bytes]) -> None:
        """Apply one live ``[topic, seq, payload]`` message, replaying or resetting as the seq demands."""
        if len(frames) != 3 or len(frames[1]) != 8:
            stream.decode_errors += 1
            log.warning(
                "KV events from %s: expected [topic, seq(8 bytes), payload], got %d frames", stream.pod, len(frames)
            )
            return
        seq = int.from_bytes(frames[1], "big")
        stream.messages += 1
        window = stream.dup_window
        if window is not None:
            if window[0] < seq <= window[1]:
                stream.duplicates += 1
                return
            if seq > window[1]:
                stream.dup_window = None
        if stream.last_seq is not None and seq <= stream.last_seq:
            log.info(
                "KV events from %s: seq went back %d -> %d, engine restarted: dropping its blocks",
                stream.pod, stream.last_seq, seq,
            )
            self.index.clear_pod(stream.pod)
            stream.restarts += 1
            stream.last_seq = None
        expected = 0 if stream.last_seq is None else stream.last_seq + 1
        if seq > expected:
            if stream.last_seq is not None:
                stream.gaps += 1
            if stream.replay_endpoint:
                await self._replay(stream, expected)
            last = -1 if stream.last_seq is None else stream.last_seq
            if seq > last + 1:  # replay missing or short: what is left is lost
                stream.lost += seq - last - 1
        if stream.last_seq is None or seq > stream.last_seq:
            self._apply(stream, frames[2])
            stream.last_seq = seq
        elif stream.last_seq > seq:
            stream.dup_window = (seq, stream.last_seq)

    def _apply(self, stream: PodStream, payload: bytes) -> None:
        try:
            events = decode_events(payload)[1]
        except KVEventDecodeError as exc:
            stream.decode_errors += 1
            log.warning("KV events from %s: %s", stream.pod, exc)
            return
        try:
            self.index.apply_events(stream.pod, events)
        except Exception:  # neither ends the subscription nor holds the seq back (replay would repeat it)
            stream.apply_errors += 1
            log.exception("KV events from %s: the index failed on a message", stream.pod)

    async def _replay(self, stream: PodStream, start: int) -> None:
        """Fetch and apply the buffered batches from ``start`` on, in order."""
        assert stream.replay_endpoint is not None
        dealer = self.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(stream.replay_endpoint)
        timeout_ms = int(self.replay_timeout * 1000)
        try:
            await dealer.send_multipart([b"", start.to_bytes(8, "big")])
            while True:
                if not await dealer.poll(timeout_ms):
                    stream.replay_failures += 1
                    log.warning("KV events from %s: replay from %d timed out", stream.pod, start)
                    return
                frames = await dealer.recv_multipart()
                if frames and frames[0] == b"":
                    frames = frames[1:]
                # [topic, seq, payload]; tolerate engines that leave out the topic
                if len(frames) == 3:
                    seq_frame, payload = frames[1], frames[2]
                elif len(frames) == 2:
                    seq_frame, payload = frames
                else:
                    stream.decode_errors += 1
                    continue
                if len(seq_frame) != 8:
                    stream.decode_errors += 1
                    continue
                seq = int.from_bytes(seq_frame, "big", signed=True)
                if seq == END_SEQ:
                    return
                last = -1 if stream.last_seq is None else stream.last_seq
                if seq <= last or seq < start:
                    continue
                if seq > last + 1:  # the engine's buffer no longer reaches back that far
                    stream.lost += seq - last - 1
                self._apply(stream, payload)
                stream.last_seq = seq
                stream.replayed += 1
        except zmq.ZMQError as exc:
            stream.replay_failures += 1
            log.warning("KV events from %s: replay failed: %s", stream.pod, exc)
        finally:
            dealer.close(linger=0)
