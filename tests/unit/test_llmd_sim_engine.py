"""The simulated engine's model: KV cache LRU, prefix reuse, token-counted hits, admission, timing."""

from __future__ import annotations

import asyncio

import pytest

from serving.llmd.sim.engine import Engine, EngineConfig, KVCache, Scheduler, SimRequest, block_hashes

BS = 4


def toks(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[dict]] = []

    def __call__(self, events: list[dict]) -> None:
        self.batches.append(events)

    def of(self, kind: str) -> list[dict]:
        return [e for b in self.batches for e in b if e["type"] == kind]


def test_block_hashes_chain_and_skip_partial_tail() -> None:
    a = block_hashes(toks(0, 10), BS)
    assert len(a) == 2  # 10 tokens: two full blocks, the tail has no hash
    assert block_hashes(toks(0, 8), BS) == a
    assert all(0 <= h < 2**64 for h in a)
    # Same second block after a different first block: different key (chained).
    b = block_hashes([99, 1, 2, 3] + toks(4, 4), BS)
    assert b[1] != a[1]


def test_stored_events_carry_parent_and_tokens() -> None:
    sink = Sink()
    cache = KVCache(num_blocks=8, block_size=BS, sink=sink)
    ids = toks(0, 9)
    alloc = cache.allocate(ids, total_tokens=12)
    assert alloc is not None and alloc.hit_tokens == 0
    (stored,) = sink.of("BlockStored")
    assert stored["block_hashes"] == block_hashes(ids, BS)
    assert stored["parent_block_hash"] is None
    assert stored["token_ids"] == toks(0, 8)
    assert stored["block_size"] == BS and stored["extra_keys"] == [None, None]
    assert cache.used_blocks == 3  # two hashed + one for the tail and the 3 output tokens
    cache.release(alloc)
    assert cache.used_blocks == 0 and cache.cached_blocks == 2

    # Extending the prompt stores only the new block, naming its parent.
    sink.batches.clear()
    alloc = cache.allocate(toks(0, 13), total_tokens=13)
    assert alloc is not None and alloc.hit_tokens == 8
    (stored,) = sink.of("BlockStored")
    assert stored["parent_block_hash"] == block_hashes(ids, BS)[1]
    assert stored["token_ids"] == toks(8, 4)


def test_prefix_reuse_counts_hits_in_tokens_and_never_the_last_token() -> None:
    sched = Scheduler(EngineConfig(block_size=BS, num_blocks=16, max_running=4, max_model_len=64),
                      KVCache(16, BS))
    first = SimRequest(toks(0, 12), max_tokens=1)
    sched.submit(first)
    sched.finish(first, 1)
    # Identical 12-token prompt: 3 full blocks cached, but the last token is recomputed, so 2 hit.
    again = SimRequest(toks(0, 12), max_tokens=1)
    sched.submit(again)
    assert again.alloc is not None and again.alloc.hit_tokens == 8
    assert again.uncached_tokens == 4
    sched.finish(again, 1)
    longer = SimRequest(toks(0, 14), max_tokens=1)
    sched.submit(longer)
    assert longer.alloc is not None and longer.alloc.hit_tokens == 12
    c = sched.counters
    assert c.prefix_queries == 12 + 12 + 14
    assert c.prefix_hits == 0 + 8 + 12


def test_lru_evicts_least_recently_freed_and_reports_removal() -> None:
    sink = Sink()
    cache = KVCache(num_blocks=4, block_size=BS, sink=sink)
    a = cache.allocate(toks(0, 8), 8)  # blocks A0 A1
    assert a is not None
    cache.release(a)
    b = cache.allocate(toks(100, 8), 8)  # blocks B0 B1
    assert b is not None
    cache.release(b)
    # Touch A again so B is now the least recently freed.
    a2 = cache.allocate(toks(0, 8), 8)
    assert a2 is not None
    cache.release(a2)
    c = cache.allocate(toks(200, 4), 4)  # needs one block: evicts B's tail block first
    assert c is not None
    (removed,) = sink.of("BlockRemoved")
    hb = block_hashes(toks(100, 8), BS)
    assert removed["block_hashes"] == [hb[1]]
    assert set(removed) == {"type", "block_hashes", "medium", "group_idx"}
    assert all(h in cache for h in block_hashes(toks(0, 8), BS))


def test_pinned_blocks_are_never_evicted_and_full_cache_waits() -> None:
    cache = KVCache(num_blocks=4, block_size=BS)
    held = cache.allocate(toks(0, 12), 12)  # 3 blocks pinned
    assert held is not None
    assert cache.allocate(toks(50, 8), 8) is None  # needs 2, only 1 free
    assert cache.allocate(toks(50, 4), 4) is not None
    assert cache.usage() == 1.0


def test_concurrency_limit_and_fcfs_admission() -> None:
    cfg = EngineConfig(block_size=BS, num_blocks=64, max_running=2, max_model_len=64)
    sched = Scheduler(cfg, KVCache(64, BS))
    reqs = [SimRequest(toks(i * 10, 5), max_tokens=2) for i in range(4)]
    admitted = [r for req in reqs for r in sched.submit(req)]
    assert admitted == reqs[:2]
    assert (sched.num_running, sched.num_waiting) == (2, 2)
    assert sched.finish(reqs[0], 2) == [reqs[2]]
    sched.finish(reqs[3])  # a waiting request that gives up leaves the queue
    assert (sched.num_running, sched.num_waiting) == (2, 0)


def test_requests_that_can_never_run_are_rejected() -> None:
    cfg = EngineConfig(block_size=BS, num_blocks=64, max_model_len=16)
    sched = Scheduler(cfg, KVCache(64, BS))
    with pytest.raises(ValueError, match="maximum context length is 16"):
        sched.submit(SimRequest(toks(0, 17), max_tokens=1))
    with pytest.raises(ValueError, match="'max_tokens'"):
        sched.submit(SimRequest(toks(0, 10), max_tokens=7))


def test_timing_math() -> None:
    cfg = EngineConfig(prefill_ms_per_token=0.5, decode_ms_per_token=10)
    assert cfg.prefill_seconds(100) == pytest.approx(0.05)
    assert cfg.decode_seconds(1) == 0  # the first token comes out of prefill
    assert cfg.decode_seconds(11) == pytest.approx(0.1)
    zero = EngineConfig(prefill_ms_per_token=0, decode_ms_per_token=0)
    assert zero.prefill_seconds(10_000) == 0 and zero.decode_seconds(500) == 0
    req = SimRequest(toks(0, 10), 1, skip_prefill=True)
    assert req.uncached_tokens == 0  # disaggregated decode: the KV came from the prefill engine


def test_clear_emits_all_blocks_cleared_and_keeps_pinned() -> None:
    sink = Sink()
    cache = KVCache(8, BS, sink)
    held = cache.allocate(toks(0, 8), 8)
    done = cache.allocate(toks(100, 8), 8)
    assert held and done
    cache.release(done)
    cache.clear()
    assert sink.of("AllBlocksCleared") == [{"type": "AllBlocksCleared"}]
    assert cache.cached_blocks == 2 and cache.used_blocks == 2


async def test_engine_admit_waits_and_cancel_frees_the_queue() -> None:
    engine = Engine(EngineConfig(block_size=BS, num_blocks=64, max_running=1, max_model_len=64))
    first = SimRequest(toks(0, 5), 1)
    await engine.admit(first)
    second = SimRequest(toks(10, 5), 1)
    waiter = asyncio.create_task(engine.admit(second))
    await asyncio.sleep(0)
    assert engine.scheduler.num_waiting == 1 and not waiter.done()
    engine.finish(first, 1)
    await asyncio.wait_for(waiter, 1)
    third = asyncio.create_task(engine.admit(SimRequest(toks(20, 5), 1)))
    await asyncio.sleep(0)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert engine.scheduler.num_waiting == 0
    engine.finish(second, 1)
    assert engine.scheduler.num_running == 0 and engine.cache.used_blocks == 0


# --- vLLM's block hashes ------------------------------------------------------------------------

def test_block_hashes_follow_vllm_sha256_pickle_chain() -> None:
    import hashlib
    import pickle

    from serving.llmd.sim.hashing import VllmBlockHasher

    def fn(obj: object) -> bytes:  # vLLM's sha256: SHA-256 over pickle, highest protocol
        return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()

    ids = toks(7, 9)
    none_hash = fn("42")  # NONE_HASH = hash_fn(PYTHONHASHSEED)
    d0 = fn((none_hash, tuple(ids[0:4]), None))
    d1 = fn((d0, tuple(ids[4:8]), None))
    hasher = VllmBlockHasher("sha256", seed="42")
    assert hasher.digests(ids, BS) == [d0, d1]
    # Events carry the low 64 bits of each digest (maybe_convert_block_hash).
    assert hasher.hashes(ids, BS) == [int.from_bytes(d, "big") & (2**64 - 1) for d in (d0, d1)]


def test_hash_seed_comes_from_pythonhashseed_else_random(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.llmd.sim.hashing import VllmBlockHasher

    monkeypatch.setenv("PYTHONHASHSEED", "123")
    assert VllmBlockHasher().hashes(toks(0, 8), BS) == VllmBlockHasher(seed="123").hashes(toks(0, 8), BS)
    monkeypatch.delenv("PYTHONHASHSEED")
    a, b = VllmBlockHasher(), VllmBlockHasher()
    assert a.hashes(toks(0, 8), BS) != b.hashes(toks(0, 8), BS)  # per-process random NONE_HASH
    # Engines follow the config's seed, so two engines sharing one agree (as vLLM with PYTHONHASHSEED).
    e1 = Engine(EngineConfig(block_size=BS, hash_seed="9"))
    e2 = Engine(EngineConfig(block_size=BS, hash_seed="9"))
    assert e1.cache.hasher.hashes(toks(0, 8), BS) == e2.cache.hasher.hashes(toks(0, 8), BS)


def test_sha256_cbor_uses_canonical_cbor() -> None:
    import hashlib

    from serving.llmd.sim.hashing import VllmBlockHasher, cbor_canonical

    # (bytes b"\x01", (1, 24, 256), None): array(3), bstr(1), array(3) of uints, null.
    assert cbor_canonical((b"\x01", (1, 24, 256), None)) == bytes.fromhex("834101830118181901" "00f6")
    assert cbor_canonical("0") == b"\x610"
    assert cbor_canonical((-1, -25, 2**32)) == bytes.fromhex("83203818" "1b0000000100000000")
    hasher = VllmBlockHasher("sha256_cbor", seed="0")
    none_hash = hashlib.sha256(b"\x610").digest()
    expect = hashlib.sha256(cbor_canonical((none_hash, tuple(toks(0, 4)), None))).digest()
    assert hasher.digests(toks(0, 4), BS) == [expect]
    with pytest.raises(ValueError, match="unknown block hash algorithm"):
        VllmBlockHasher("md5")
