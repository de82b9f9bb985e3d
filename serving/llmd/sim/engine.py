"""A model of one vLLM engine: paged KV cache with prefix reuse, FCFS admission, timing, counters.

No sockets here: the HTTP and ZMQ shells (``server.py``, ``events.py``) drive it, and the unit tests
exercise every decision without a loop. The model follows vLLM v1 where it matters to a router:

- Full blocks of ``block_size`` prompt tokens are keyed by vLLM's chained block hash (``hashing.py``:
  sha256 over pickle or CBOR of (parent, tokens, extra_keys), ``NONE_HASH`` from PYTHONHASHSEED) and
  stay cached after the request ends; unreferenced cached blocks are evicted least-recently-freed first (vLLM's free queue,
  a request's blocks freed tail first), and each eviction is a ``BlockRemoved`` event.
- A prefix hit never covers the last prompt token (vLLM recomputes it to produce logits), and hits and
  queries are counted in tokens, as ``vllm:prefix_cache_{hits,queries}_total`` are.
- Admission is first come first served: at most ``max_running`` requests, and only when the cache can
  hold the whole request (prompt plus output); the rest wait in order. Reserving the output blocks up
  front stands in for vLLM's preemption, which a simulator does not need.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.llmd.sim.events import all_blocks_cleared, block_removed, block_stored
from serving.llmd.sim.hashing import VllmBlockHasher

EventSink = Callable[[list[dict[str, Any]]], object]  # what it returns (a publisher's seq) is not used

# Block hashes are vLLM's own (``hashing.py``): the KV events a router sees carry the same values a real
# engine would send for the same tokens, seed and algorithm. Our indexer never relies on them (it keys
# blocks by its own hash of the events' token_ids); they only have to match between events.
# Fixed-seed hasher for callers without an engine (tests, the benchmark's ideal hit rate).
DEFAULT_HASHER = VllmBlockHasher("sha256", seed="0", from_env=False)


def block_hashes(token_ids: list[int], block_size: int, hasher: VllmBlockHasher | None = None) -> list[int]:
    """Chained hashes of the full blocks of ``token_ids`` (a partial tail block has none), as vLLM's
    KV events carry them (low 64 bits of each digest)."""
    return (hasher or DEFAULT_HASHER).hashes(token_ids, block_size)


@dataclass(frozen=True)
class EngineConfig:
    model: str = "sim-model"
    block_size: int = 32
    num_blocks: int = 512
    max_running: int = 8
    prefill_ms_per_token: float = 0.05
    decode_ms_per_token: float = 5.0
    max_model_len: int = 4096
    hash_algo: str = "sha256"  # vLLM's --prefix-caching-hash-algo
    hash_seed: str | None = None  # PYTHONHASHSEED; None: read the environment, else random (as vLLM)

    def prefill_seconds(self, uncached_tokens: int) -> float:
        """Time to first token once admitted: only uncached prompt tokens cost compute."""
        return max(0, uncached_tokens) * self.prefill_ms_per_token / 1000.0

    def decode_seconds(self, output_tokens: int) -> float:
        """Time after the first token: prefill emits token one, each further token costs a step."""
        return max(0, output_tokens - 1) * self.decode_ms_per_token / 1000.0


@dataclass
class Allocation:
    """Blocks a running request holds: its hashed prompt blocks (pinned) and anonymous ones."""

    hashes: list[int]
    anonymous: int
    hit_tokens: int


@dataclass
class _Block:
    parent: int | None
    refs: int = 0


class KVCache:
    """``num_blocks`` blocks; hashed blocks outlive their request until evicted (LRU)."""

    def __init__(self, num_blocks: int, block_size: int, sink: EventSink | None = None,
                 hasher: VllmBlockHasher | None = None) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.hasher = hasher or DEFAULT_HASHER
        self._sink = sink
        self._blocks: dict[int, _Block] = {}
        self._free: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; oldest first
        self._pinned = 0  # blocks held by running requests (hashed once each + anonymous)

    # --- state -------------------------------------------------------------------------------
    @property
    def used_blocks(self) -> int:
        return self._pinned

    @property
    def cached_blocks(self) -> int:
        return len(self._blocks)

    def usage(self) -> float:
        """Fraction of blocks referenced by running requests (vLLM's ``kv_cache_usage_perc``)."""
        return self._pinned / self.num_blocks if self.num_blocks else 0.0

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._blocks

    def blocks_needed(self, total_tokens: int) -> int:
        return -(-total_tokens // self.block_size)

    def cached_prefix_blocks(self, hashes: list[int], prompt_len: int) -> int:
        """Leading blocks already cached, never covering the last prompt token."""
        limit = min(len(hashes), max(0, prompt_len - 1) // self.block_size)
        hit = 0
        while hit < limit and hashes[hit] in self._blocks:
            hit += 1
        return hit

    # --- transitions -------------------------------------------------------------------------
    def allocate(self, token_ids: list[int], total_tokens: int, hashes: list[int] | None = None) -> Allocation | None:
        """Pin the request's blocks, evicting as needed; ``None`` when it does not fit now."""
        bs = self.block_size
        if hashes is None:
            hashes = self.hasher.hashes(token_ids, bs)
        hit = self.cached_prefix_blocks(hashes, len(token_ids))
        blocks = self._blocks
        reuse_free = sum(1 for h in hashes if h in self._free)
        fresh = [i for i, h in enumerate(hashes) if h not in blocks]
        anonymous = max(0, self.blocks_needed(total_tokens) - len(hashes))
        need = len(fresh) + anonymous
        empty = self.num_blocks - self._pinned - len(self._free)
        if need > empty + len(self._free) - reuse_free:
            return None

        for h in hashes:  # pin what is cached (prefix hits and any later cached block)
            block = blocks.get(h)
            if block is not None:
                if block.refs == 0:
                    del self._free[h]
                    self._pinned += 1
                block.refs += 1
        removed: list[int] = []
        for _ in range(max(0, need - empty)):
            victim, _ = self._free.popitem(last=False)
            del blocks[victim]
            removed.append(victim)
        for i in fresh:
            blocks[hashes[i]] = _Block(parent=hashes[i - 1] if i else None, refs=1)
        self._pinned += need

        events: list[dict[str, Any]] = []
        # vLLM reports each evicted block as its own BlockRemoved (one hash each), before the stores.
        events.extend(block_removed([h]) for h in removed)
        # One BlockStored per contiguous run of new blocks, each naming its parent (vLLM's shape).
        run_start = None
        for pos, i in enumerate(fresh + [-1]):
            if run_start is None:
                run_start = pos
            elif i != fresh[pos - 1] + 1:
                first, last = fresh[run_start], fresh[pos - 1]
                events.append(
                    block_stored(
                        hashes[first : last + 1],
                        hashes[first - 1] if first else None,
                        token_ids[first * bs : (last + 1) * bs],
                        bs,
                    )
                )
                run_start = pos
        if events and self._sink is not None:
            self._sink(events)
        return Allocation(hashes=hashes, anonymous=anonymous, hit_tokens=hit * bs)

    def release(self, alloc: Allocation) -> None:
        """Unpin; blocks nobody references join the eviction queue, the request's tail first."""
        self._pinned -= alloc.anonymous
        for h in reversed(alloc.hashes):
            block = self._blocks.get(h)
            if block is None:
                continue
            block.refs -= 1
            if block.refs == 0:
                self._free[h] = None
                self._pinned -= 1

    def clear(self) -> None:
        """Drop every unreferenced cached block (vLLM's reset_prefix_cache) and say so."""
        for h in list(self._free):
            del self._blocks[h]
        self._free.clear()
        if self._sink is not None:
            self._sink([all_blocks_cleared()])


@dataclass
class SimRequest:
    prompt_ids: list[int]
    max_tokens: int
    skip_prefill: bool = False  # disaggregated decode: the KV arrives from a prefill engine
    arrival: float = field(default_factory=time.monotonic)
    hashes: list[int] = field(default_factory=list)
    alloc: Allocation | None = None
    _admitted: asyncio.Future[None] | None = None

    @property
    def total_tokens(self) -> int:
        return len(self.prompt_ids) + self.max_tokens

    @property
    def uncached_tokens(self) -> int:
        if self.skip_prefill:
            return 0
        hit = self.alloc.hit_tokens if self.alloc else 0
        return len(self.prompt_ids) - hit


@dataclass
class Counters:
    """Monotonic totals the metrics endpoint exposes under vLLM's names."""

    prefix_queries: int = 0  # tokens
    prefix_hits: int = 0  # tokens
    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests_finished: int = 0


class Scheduler:
    """FCFS admission over a ``KVCache``; synchronous so that tests drive it step by step."""

    def __init__(self, config: EngineConfig, cache: KVCache) -> None:
        self.config = config
        self.cache = cache
        self.waiting: deque[SimRequest] = deque()
        self.running: set[int] = set()  # id(request)
        self.counters = Counters()

    def check(self, req: SimRequest) -> None:
        """Reject what could never run; the message mirrors vLLM's wording."""
        cfg = self.config
        n = len(req.prompt_ids)
        if n > cfg.max_model_len:
            raise ValueError(
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, your "
                f"request has {n} input tokens. Please reduce the length of the input messages."
            )
        if req.total_tokens > cfg.max_model_len:
            raise ValueError(
                f"'max_tokens' or 'max_completion_tokens' is too large: {req.max_tokens}. This model's "
                f"maximum context length is {cfg.max_model_len} tokens and your request has {n} input "
                f"tokens ({req.max_tokens} > {cfg.max_model_len} - {n})."
            )
        if self.cache.blocks_needed(req.total_tokens) > cfg.num_blocks:
            raise ValueError(
                f"The request needs {self.cache.blocks_needed(req.total_tokens)} KV cache blocks, "
                f"more than the {cfg.num_blocks} the engine has."
            )

    def submit(self, req: SimRequest) -> list[SimRequest]:
        """Queue ``req``; returns the requests admitted as a result (possibly including it)."""
        self.check(req)
        if not req.hashes:
            req.hashes = self.cache.hasher.hashes(req.prompt_ids, self.cache.block_size)
        self.waiting.append(req)
        return self.pump()

    def pump(self) -> list[SimRequest]:
        admitted: list[SimRequest] = []
        while self.waiting and len(self.running) < self.config.max_running:
            head = self.waiting[0]
            alloc = self.cache.allocate(head.prompt_ids, head.total_tokens, head.hashes)
            if alloc is None:
                break  # head-of-line blocking, as vLLM's FCFS policy does
            self.waiting.popleft()
            head.alloc = alloc
            self.running.add(id(head))
            c = self.counters
            c.prefix_queries += len(head.prompt_ids)
            c.prefix_hits += alloc.hit_tokens
            c.prompt_tokens += len(head.prompt_ids)
            admitted.append(head)
        return admitted

    def finish(self, req: SimRequest, generated: int = 0) -> list[SimRequest]:
        """Release a running request (or drop a waiting one); returns newly admitted requests."""
        if id(req) in self.running:
            self.running.discard(id(req))
            assert req.alloc is not None
            self.cache.release(req.alloc)
            self.counters.generation_tokens += generated
            self.counters.requests_finished += 1
        else:
            try:
                self.waiting.remove(req)
            except ValueError:
                pass
        return self.pump()

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)


class Engine:
    """The asyncio face of ``Scheduler``: ``await admit(req)`` returns once the request runs."""

    def __init__(self, config: EngineConfig, sink: EventSink | None = None) -> None:
        self.config = config
        self.cache = KVCache(config.num_blocks, config.block_size, sink,
                             VllmBlockHasher(config.hash_algo, config.hash_seed))
        self.scheduler = Scheduler(config, self.cache)
        self.ttft_observer: Callable[[float], None] | None = None

    @property
    def counters(self) -> Counters:
        return self.scheduler.counters

    def _wake(self, admitted: list[SimRequest]) -> None:
        for r in admitted:
            if r._admitted is not None and not r._admitted.done():
                r._admitted.set_result(None)

    async def admit(self, req: SimRequest) -> None:
        """Queue and wait for a slot; raises ``ValueError`` for requests that can never run."""
        req._admitted = asyncio.get_running_loop().create_future()
        self._wake(self.scheduler.submit(req))
        try:
            await req._admitted
        except BaseException:
            self._wake(self.scheduler.finish(req))  # cancelled while waiting (or just admitted)
            raise

    def finish(self, req: SimRequest, generated: int) -> None:
        self._wake(self.scheduler.finish(req, generated))

    def first_token(self, req: SimRequest) -> None:
        if self.ttft_observer is not None:
            self.ttft_observer(time.monotonic() - req.arrival)

    def reset_prefix_cache(self) -> None:
        self.cache.clear()
