"""The ZMQ shell against a stand-in engine on loopback: live events, gap + replay, restart, removal, HTTP."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgpack
import pytest
import zmq
import zmq.asyncio
from support import FIXTURES, free_port, wait_until, wait_until_async

from serving.llmd.kvcache.index import KVIndex
from serving.llmd.kvcache.server import create_app, parse_engine
from serving.llmd.kvcache.subscriber import KVEventSubscriber
from serving.llmd.kvcache.tokenize import PromptTokenizer

pytestmark = pytest.mark.integration

BS = 4
TOPIC = b"kv@test@tiny"
SUBSCRIPTION_WAIT_S = 30.0  # an XPUB sees a SUB connect within milliseconds; this only bounds a hang


class StandInEngine:
    """vLLM's publisher in miniature: PUB for live batches, ROUTER serving replays from a buffer.

    Its PUB is an XPUB (it publishes the same way) so that a test can see a subscriber arrive or leave
    instead of sleeping for ZMQ's slow joiner.
    """

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.pub_port, self.replay_port = free_port(), free_port()
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.bind(f"tcp://127.0.0.1:{self.pub_port}")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(f"tcp://127.0.0.1:{self.replay_port}")
        self.buffer: list[tuple[int, bytes]] = []
        self.seq = 0
        self.replay_requests: list[int] = []
        self.task = asyncio.create_task(self._serve_replay())

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.pub_port}"

    @property
    def replay_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.replay_port}"

    async def _serve_replay(self) -> None:
        while True:
            client, _empty, start = await self.router.recv_multipart()
            first = int.from_bytes(start, "big")
            self.replay_requests.append(first)
            for seq, payload in self.buffer:
                if seq >= first:
                    await self.router.send_multipart([client, b"", TOPIC, seq.to_bytes(8, "big"), payload])
            await self.router.send_multipart([client, b"", b"", (-1).to_bytes(8, "big", signed=True), b""])

    async def publish(self, events: list, send: bool = True) -> int:
        """Buffer a batch under the next seq; ``send=False`` loses it on the wire (a gap)."""
        seq = self.seq
        self.seq += 1
        payload = msgpack.packb([time.time(), events, 0])
        self.buffer.append((seq, payload))
        if send:
            await self.pub.send_multipart([TOPIC, seq.to_bytes(8, "big"), payload])
        return seq

    async def subscription_change(self) -> bool:
        """Wait for the next (un)subscription on the PUB socket: True for a subscribe, False for a leave."""
        message = await asyncio.wait_for(self.pub.recv(), SUBSCRIPTION_WAIT_S)
        return message[:1] == b"\x01"

    def restart(self) -> None:
        self.seq = 0
        self.buffer = []

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        self.pub.close(linger=0)
        self.router.close(linger=0)


def stored(hashes: list[int], tokens: list[int], parent: int | None = None) -> dict:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent, "token_ids": tokens,
            "block_size": BS, "lora_id": None, "medium": "GPU"}


@pytest.fixture
async def setup():
    ctx = zmq.asyncio.Context()
    engine = StandInEngine(ctx)
    index = KVIndex(block_size=BS)
    subscriber = KVEventSubscriber(index, context=ctx, replay_timeout=2.0)
    await subscriber.add_pod("pod-a", engine.endpoint, engine.replay_endpoint)
    assert await engine.subscription_change()  # the SUB is connected and subscribed: nothing published is missed
    yield engine, index, subscriber
    await subscriber.close()
    await engine.close()
    ctx.term()


A = list(range(100, 112))  # three blocks
B = list(range(200, 208))


async def test_live_events_reach_the_index(setup) -> None:
    engine, index, subscriber = setup
    await engine.publish([stored([1, 2], A[:8])])
    await engine.publish([stored([3], A[8:], parent=2)])
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3})
    stream = subscriber.streams["pod-a"]
    assert stream.last_seq == 1 and stream.gaps == 0 and stream.lost == 0


async def test_a_burst_is_drained_in_order_and_misframed_messages_do_not_stop_the_stream(setup) -> None:
    from serving.llmd.kvcache.subscriber import DRAIN_BUDGET

    engine, index, subscriber = setup
    stream = subscriber.streams["pod-a"]
    # more queued messages than one drain takes: a chain of one-block events, each the child of the last
    chain = [[i * 7 % 5000 + j for j in range(BS)] for i in range(2 * DRAIN_BUDGET + 10)]
    for i, block in enumerate(chain):
        await engine.publish([stored([i + 1], block, parent=i or None)])
    await wait_until_async(lambda: stream.last_seq == len(chain) - 1)
    tokens = [t for block in chain for t in block]
    assert index.score_tokens(tokens) == {"pod-a": len(chain)}
    assert stream.gaps == 0 and stream.decode_errors == 0 and stream.messages == len(chain)

    # four frames, then two: each rejected (the second may take the next message with it, which replay mends)
    await engine.pub.send_multipart([TOPIC, engine.seq.to_bytes(8, "big"), b"x", b"y"])
    await engine.pub.send_multipart([TOPIC, engine.seq.to_bytes(8, "big")])
    await engine.publish([stored([9001], B[:4])])
    await engine.publish([stored([9002], B[4:], parent=9001)])
    await wait_until_async(lambda: index.score_tokens(B) == {"pod-a": 2})
    assert stream.decode_errors == 2 and stream.last_seq == engine.seq - 1 and stream.lost == 0


async def test_a_message_the_index_fails_on_is_logged_and_the_stream_goes_on(setup, monkeypatch) -> None:
    engine, index, subscriber = setup
    apply_events, calls = index.apply_events, []

    def failing_once(pod: str, events: list) -> None:
        calls.append(pod)
        if len(calls) == 2:
            raise RuntimeError("an index bug")
        apply_events(pod, events)

    monkeypatch.setattr(index, "apply_events", failing_once)
    await engine.publish([stored([1], A[:4])])
    await engine.publish([stored([2], A[4:8], parent=1)])  # the index fails on this one
    await engine.publish([stored([11, 12], B)])
    await wait_until_async(lambda: index.score_tokens(B) == {"pod-a": 2})
    stream = subscriber.streams["pod-a"]
    assert stream.apply_errors == 1 and stream.last_seq == 2 and stream.gaps == 0 and engine.replay_requests == []
    assert index.score_tokens(A) == {"pod-a": 1}


async def test_gap_is_filled_by_replay(setup) -> None:
    engine, index, subscriber = setup
    await engine.publish([stored([1], A[:4])])
    await wait_until_async(lambda: subscriber.streams["pod-a"].last_seq == 0)
    await engine.publish([stored([2], A[4:8], parent=1)], send=False)  # lost on the wire
    await engine.publish([stored([3], A[8:], parent=2)], send=False)
    await engine.publish([stored([11, 12], B)])  # seq 3 arrives: gap 1..2
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3} and index.score_tokens(B) == {"pod-a": 2})
    stream = subscriber.streams["pod-a"]
    assert engine.replay_requests == [1]
    assert stream.gaps == 1 and stream.replayed >= 2 and stream.lost == 0 and stream.last_seq == 3
    # later live messages already covered by a replay are skipped, not taken for a restart
    await engine.publish([{"type": "BlockRemoved", "block_hashes": [3], "medium": "GPU"}])
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 2})
    assert stream.restarts == 0


async def test_restart_drops_stale_blocks(setup) -> None:
    engine, index, subscriber = setup
    for _ in range(3):
        await engine.publish([])
    await engine.publish([stored([1, 2, 3], A)])
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3})
    engine.restart()  # the engine came back: empty cache, seq from 0
    await engine.publish([stored([1, 2], B)])  # same engine hashes, other content
    await wait_until_async(lambda: index.score_tokens(B) == {"pod-a": 2})
    assert index.score_tokens(A) == {"pod-a": 0}
    assert subscriber.streams["pod-a"].restarts == 1


async def test_remove_pod_stops_and_forgets(setup) -> None:
    engine, index, subscriber = setup
    await engine.publish([stored([1, 2, 3], A)])
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3})
    await subscriber.remove_pod("pod-a")
    assert index.score_tokens(A) == {} and len(index) == 0
    assert not await engine.subscription_change()  # its SUB left the engine: nothing more can arrive
    await engine.publish([stored([5], B[:4])])
    assert len(index) == 0 and "pod-a" not in subscriber.streams


async def test_late_joiner_recovers_history_by_replay() -> None:
    ctx = zmq.asyncio.Context()
    engine = StandInEngine(ctx)
    index = KVIndex(block_size=BS)
    subscriber = KVEventSubscriber(index, context=ctx)
    try:
        await engine.publish([stored([1, 2], A[:8])])  # nobody listening yet
        await subscriber.add_pod("pod-a", engine.endpoint, engine.replay_endpoint)
        assert await engine.subscription_change()
        await engine.publish([stored([3], A[8:], parent=2)])
        await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3})
    finally:
        await subscriber.close()
        await engine.close()
        ctx.term()


async def test_score_endpoint() -> None:
    tok = PromptTokenizer(FIXTURES / "vllm-kv-events" / "tokenizer")
    index = KVIndex(block_size=BS, model="tiny")
    prompt_ids = tok.encode_prompt("hello world " * 10)
    chat_ids = tok.encode_chat([{"role": "user", "content": "hi there, hello"}])
    index.apply_batch("a", [])
    from serving.llmd.kvcache.events import BlockStored

    index.apply("a", BlockStored(list(range(1, len(prompt_ids) // BS + 1)), None, prompt_ids[: len(prompt_ids) // BS * BS], BS))
    index.apply("b", BlockStored([1], None, chat_ids[:BS], BS))
    app = create_app(index, tok, model="tiny")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kv") as client:
        r = await client.post("/score", json={"model": "tiny", "prompt": "hello world " * 10})
        assert r.status_code == 200
        assert r.json()["scores"] == {"a": len(prompt_ids) // BS, "b": 0} and r.json()["block_size"] == BS
        r = await client.post("/score", json={"model": "tiny", "messages": [{"role": "user", "content": "hi there, hello"}]})
        assert r.json()["scores"] == {"a": 0, "b": 1}
        r = await client.post("/score", json={"token_ids": prompt_ids[:8]})
        assert r.json()["scores"] == {"a": 2, "b": 0}
        r = await client.post("/score", json={"model": "tiny"})
        assert r.status_code == 400 and "prompt" in r.json()["error"] and "token_ids" in r.json()["error"]
        r = await client.post("/score", json={"model": "other", "prompt": "x"})
        assert r.status_code == 404 and "other" in r.json()["error"]
        r = await client.post("/score", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = await client.post("/score", json={"token_ids": [1, "x"]})
        assert r.status_code == 400
        assert (await client.get("/healthz")).json()["status"] == "ok"


def test_parse_engine() -> None:
    spec = parse_engine("pod-a=tcp://10.0.0.1:5557,replay=tcp://10.0.0.1:5558")
    assert (spec.pod, spec.endpoint, spec.replay_endpoint) == ("pod-a", "tcp://10.0.0.1:5557", "tcp://10.0.0.1:5558")
    assert parse_engine("b=tcp://h:1").replay_endpoint is None
    with pytest.raises(ValueError, match="POD=tcp"):
        parse_engine("tcp://h:1")
    with pytest.raises(ValueError, match="unknown option"):
        parse_engine("b=tcp://h:1,foo=bar")


async def test_live_duplicates_of_a_replay_are_skipped(setup) -> None:
    engine, index, subscriber = setup
    await engine.publish([stored([1], A[:4])])
    await wait_until_async(lambda: subscriber.streams["pod-a"].last_seq == 0)
    await engine.publish([stored([2], A[4:8], parent=1)], send=False)
    # seq 2 and 3 go out back to back: the replay triggered by 2 already returns 3, so the live 3 is a duplicate
    await engine.publish([stored([3], A[8:], parent=2)])
    await engine.publish([stored([11, 12], B)])
    await wait_until_async(lambda: subscriber.streams["pod-a"].last_seq == 3 and subscriber.streams["pod-a"].messages == 3)
    stream = subscriber.streams["pod-a"]
    assert index.score_tokens(A) == {"pod-a": 3} and index.score_tokens(B) == {"pod-a": 2}
    assert stream.restarts == 0 and stream.duplicates == 1 and stream.lost == 0


async def test_bad_payload_does_not_end_the_subscription(setup) -> None:
    engine, index, subscriber = setup
    await engine.pub.send_multipart([TOPIC, (0).to_bytes(8, "big"), b"\xc1 not msgpack"])
    engine.seq = 1
    await engine.publish([stored([1, 2, 3], A)])
    await wait_until_async(lambda: index.score_tokens(A) == {"pod-a": 3})
    assert subscriber.streams["pod-a"].decode_errors == 1


def test_server_process_subscribes_and_scores() -> None:
    from support import python_module, running, wait_http

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # publishes as a PUB does, and shows when the server has subscribed
    pub_port, http_port = free_port(), free_port()
    pub.bind(f"tcp://127.0.0.1:{pub_port}")
    tokenizer = FIXTURES / "vllm-kv-events" / "tokenizer"
    ids = PromptTokenizer(tokenizer).encode_prompt("the quick brown fox " * 20)
    full = len(ids) // 32
    args = python_module("serving.llmd.kvcache.server", "--port", str(http_port), "--model", "tiny-llama",
                         "--tokenizer", str(tokenizer), "--engine", f"pod-a=tcp://127.0.0.1:{pub_port}")
    try:
        with running(args) as proc:
            wait_http(f"http://127.0.0.1:{http_port}/healthz", timeout=30, proc=proc)
            payload = msgpack.packb([0.0, [{"type": "BlockStored", "block_hashes": list(range(1, full + 1)),
                                            "parent_block_hash": None, "token_ids": ids[: full * 32], "block_size": 32}]])
            assert pub.poll(30_000), "the server never subscribed"
            assert pub.recv()[:1] == b"\x01"
            pub.send_multipart([b"kv", (0).to_bytes(8, "big"), payload])

            def scored() -> dict | None:
                r = httpx.post(f"http://127.0.0.1:{http_port}/score",
                               json={"model": "tiny-llama", "prompt": "the quick brown fox " * 20})
                assert r.status_code == 200, r.text
                return r.json() if r.json()["scores"].get("pod-a") == full else None

            assert wait_until(scored, timeout=30, interval=0.1, what="the published blocks scored") == {
                "block_size": 32, "tokens": len(ids), "blocks": full, "scores": {"pod-a": full}}
    finally:
        pub.close(linger=0)
        ctx.term()
