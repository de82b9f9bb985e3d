"""The block index: our block key -> the pods holding that block, and prefix scoring over it.

Layout, chosen for speed in pure Python:
- each pod gets a small int id; the pods holding a key are one int bitmask, so "which pods hold every
  key so far" is one ``&`` per key while scoring, and a score stops as soon as the mask is empty;
- ``_keys`` is an ``OrderedDict`` (C linked list) used as the LRU: ``move_to_end`` on store and on a
  scoring hit, ``popitem(last=False)`` to evict once over ``capacity``;
- per pod, ``engine hash -> our key``: BlockRemoved carries only engine hashes, and a BlockStored's
  parent is named by engine hash, so this map is how both are placed. It is bounded by the engine's own
  cache size (every block it stores it later removes), not by our LRU: a key evicted here keeps its
  mapping so that later children still chain correctly.

Ingest: ``ingest``/``apply_events`` take ``events.decode_events`` structs (the subscriber's path); ``apply``
and ``apply_batch`` take the typed events. Both build the same index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from serving.llmd.kvcache.events import (
    REMOVED,
    STORED,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KVEvent,
    WireEvent,
    decode_events,
)
from serving.llmd.kvcache.keys import MASK64, block_keys, block_keys_from_tuple, check_token_ids, root_key


@dataclass(slots=True)
class IndexStats:
    stored_blocks: int = 0
    removed_blocks: int = 0
    orphaned_blocks: int = 0  # BlockStored whose parent this pod never reported: cannot be placed
    unknown_removed: int = 0  # BlockRemoved for a hash we never saw (e.g. stored before we subscribed)
    block_size_mismatch: int = 0  # events whose block size differs from the index's
    evicted_keys: int = 0  # LRU evictions
    cleared_pods: int = 0


class KVIndex:
    """Which pods hold which blocks. Single-threaded: call it from one thread or one event loop."""

    def __init__(self, block_size: int | None = None, capacity: int = 1_000_000, model: str = "") -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        # None: learn it from the first BlockStored (the engine's --block-size).
        self.block_size = block_size
        self.capacity = capacity
        self.model = model
        self.stats = IndexStats()
        self._keys: OrderedDict[int, int] = OrderedDict()
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._free: list[int] = []
        self._engine: dict[str, dict[int, int]] = {}
        self._all = 0  # bitmask of registered pods
        self._roots: dict[int | None, int] = {}

    # pods

    @property
    def pods(self) -> list[str]:
        return list(self._ids)

    def add_pod(self, pod: str) -> int:
        """Register ``pod`` (idempotent) and return its bit position."""
        pid = self._ids.get(pod)
        if pid is None:
            pid = self._free.pop() if self._free else len(self._ids)
            self._ids[pod] = pid
            self._names[pid] = pod
            self._engine[pod] = {}
            self._all |= 1 << pid
        return pid

    def clear_pod(self, pod: str) -> None:
        """Forget every block of ``pod`` but keep it registered (AllBlocksCleared)."""
        pid = self._ids.get(pod)
        if pid is None:
            return
        bit = 1 << pid
        keys = self._keys
        for key in set(self._engine[pod].values()):
            mask = keys.get(key)
            if mask is not None and mask & bit:
                if mask == bit:
                    del keys[key]
                else:
                    keys[key] = mask & ~bit
        self._engine[pod] = {}
        self.stats.cleared_pods += 1

    def drop_pod(self, pod: str) -> None:
        """Forget ``pod`` entirely: it left the pool or restarted."""
        if pod not in self._ids:
            return
        self.clear_pod(pod)
        pid = self._ids.pop(pod)
        del self._names[pid]
        del self._engine[pod]
        self._all &= ~(1 << pid)
        self._free.append(pid)

    def pod_blocks(self, pod: str) -> int:
        """How many blocks the engine reported for ``pod`` and has not removed."""
        return len(self._engine.get(pod, ()))

    def __len__(self) -> int:
        return len(self._keys)

    # events

    def apply_batch(self, pod: str, batch: EventBatch | Iterable[KVEvent]) -> None:
        for event in batch.events if isinstance(batch, EventBatch) else batch:
            self.apply(pod, event)

    def apply(self, pod: str, event: KVEvent) -> None:
        if type(event) is BlockStored:
            self._stored(pod, event)
        elif type(event) is BlockRemoved:
            self._removed(pod, event)
        elif type(event) is AllBlocksCleared:
            self.clear_pod(pod)
        else:
            raise TypeError(f"not a KV event: {event!r}")

    def learn_block_size(self, size: int) -> bool:
        """Adopt the engines' block size before any event taught it, e.g. from the metrics route
        (``vllm:cache_config_info{block_size=...}``, which the load monitor scrapes), so that prompts can
        be scored, and routed to the right pod, before the first BlockStored arrives.

        Returns whether ``size`` is (now) the index's block size; a different size than the one already
        known is counted as a mismatch and ignored: keys of two block sizes never match each other.
        """
        if type(size) is not int or size <= 0:
            raise ValueError(f"block size must be a positive int, got {size!r}")
        if self.block_size is None:
            self.block_size = size
            return True
        if size != self.block_size:
            self.stats.block_size_mismatch += 1
            return False
        return True

    def root(self, lora_id: int | None = None) -> int:
        root = self._roots.get(lora_id)
        if root is None:
            root = self._roots[lora_id] = root_key(self.model, lora_id)
        return root

    def apply_events(self, pod: str, events: Iterable[WireEvent]) -> None:
        """Apply ``events.decode_events`` output: the ingest fast path (the decoder's structs as they are).

        One-block BlockStored events (what an engine sends most, one per block as it fills) are applied
        inline with the pod's state looked up once per message; everything else takes ``_store`` etc.
        """
        emap = self._engine.get(pod)
        if emap is None:
            self.add_pod(pod)
            emap = self._engine[pod]
        bit = 1 << self._ids[pod]
        keys = self._keys
        size = self.block_size
        stored = 0
        for ev in events:
            if ev.kind == STORED:
                hashes = ev.block_hashes
                parent_hash = ev.parent_block_hash
                if len(hashes) != 1 or ev.block_size != size or (parent_hash is None and ev.lora_id is not None):
                    self._store(pod, hashes, parent_hash, ev.token_ids, ev.block_size, ev.lora_id)
                    size = self.block_size  # the first event may have taught it
                    continue
                parent = self.root(None) if parent_hash is None else emap.get(parent_hash)
                if parent is None:  # chain cannot be placed; guessing would corrupt the index
                    self.stats.orphaned_blocks += 1
                    continue
                key = hash((parent, ev.token_ids)) & MASK64  # keys.block_key, inlined
                engine_hash = hashes[0]
                old = emap.get(engine_hash)
                if old is not None and old != key:  # engine reused a hash for other content
                    self._unset(old, bit)
                emap[engine_hash] = key
                mask = keys.get(key)
                if mask is None:
                    keys[key] = bit
                    if len(keys) > self.capacity:
                        keys.popitem(last=False)
                        self.stats.evicted_keys += 1
                else:
                    keys[key] = mask | bit
                    keys.move_to_end(key)
                stored += 1
            elif ev.kind == REMOVED:
                self._remove(pod, ev.block_hashes)
            else:
                self.clear_pod(pod)
                emap = self._engine[pod]  # clear_pod replaced it
        if stored:
            self.stats.stored_blocks += stored

    def ingest(self, pod: str, payload: bytes) -> int:
        """Decode one msgpack payload and apply it; returns the number of events. Raises
        ``KVEventDecodeError`` (before changing anything) for a malformed payload."""
        events = decode_events(payload)[1]
        self.apply_events(pod, events)
        return len(events)

    def _stored(self, pod: str, event: BlockStored) -> None:
        tokens = tuple(event.token_ids)
        check_token_ids(tokens)
        self._store(pod, event.block_hashes, event.parent_block_hash, tokens, event.block_size, event.lora_id)

    def _store(self, pod: str, hashes: list[int], parent_hash: int | None, tokens: tuple[int, ...], size: int,
               lora_id: int | None) -> None:
        # Multi-block events and the typed API; one-block events from the wire take the inlined path in
        # ``apply_events``.
        if size != self.block_size:
            if self.block_size is not None:
                self.stats.block_size_mismatch += 1
                return
            self.block_size = size
        emap = self._engine.get(pod)
        if emap is None:
            self.add_pod(pod)
            emap = self._engine[pod]
        parent = (self._roots.get(lora_id) or self.root(lora_id)) if parent_hash is None else emap.get(parent_hash)
        if parent is None:  # chain cannot be placed; guessing would corrupt the index
            self.stats.orphaned_blocks += len(hashes)
            return
        bit = 1 << self._ids[pod]
        keys = self._keys
        get = keys.get
        for engine_hash, key in zip(hashes, block_keys_from_tuple(tokens, size, parent), strict=True):
            old = emap.get(engine_hash)
            if old is not None and old != key:
                self._unset(old, bit)
            emap[engine_hash] = key
            mask = get(key)
            if mask is None:
                keys[key] = bit
            else:
                keys[key] = mask | bit
                keys.move_to_end(key)
        self.stats.stored_blocks += len(hashes)
        if len(keys) > self.capacity:
            over = len(keys) - self.capacity
            for _ in range(over):
                keys.popitem(last=False)
            self.stats.evicted_keys += over

    def _removed(self, pod: str, event: BlockRemoved) -> None:
        self._remove(pod, event.block_hashes)

    def _remove(self, pod: str, hashes: list[int]) -> None:
        emap = self._engine.get(pod)
        pid = self._ids.get(pod)
        if emap is None or pid is None:
            self.stats.unknown_removed += len(hashes)
            return
        bit = 1 << pid
        for engine_hash in hashes:
            key = emap.pop(engine_hash, None)
            if key is None:
                self.stats.unknown_removed += 1
                continue
            self._unset(key, bit)
            self.stats.removed_blocks += 1

    def _unset(self, key: int, bit: int) -> None:
        mask = self._keys.get(key)
        if mask is not None and mask & bit:
            if mask == bit:
                del self._keys[key]
            else:
                self._keys[key] = mask & ~bit

    # scoring

    def keys_for(self, token_ids: Sequence[int], lora_id: int | None = None) -> list[int]:
        """Our keys for a prompt's full blocks (empty until the block size is known)."""
        if self.block_size is None:
            return []
        return block_keys(token_ids, self.block_size, self.root(lora_id))

    def score_tokens(self, token_ids: Sequence[int], lora_id: int | None = None) -> dict[str, int]:
        return self.score(self.keys_for(token_ids, lora_id))

    def score(self, keys: Sequence[int]) -> dict[str, int]:
        """Per registered pod, how many leading ``keys`` it holds in a row (its cached prefix, in blocks)."""
        result = dict.fromkeys(self._ids, 0)
        live = self._all
        table = self._keys
        names = self._names
        depth = 0
        for key in keys:
            mask = table.get(key)
            if mask is None:
                break
            held = mask & live
            if not held:
                break
            gone = live ^ held
            if gone and depth:
                self._assign(result, names, gone, depth)
            live = held
            depth += 1
        if depth:
            if live:
                self._assign(result, names, live, depth)
            # A hit is a use: keep hot prefixes from being the LRU's first victims.
            move = table.move_to_end
            for key in keys[:depth]:
                move(key)
        return result

    @staticmethod
    def _assign(result: dict[str, int], names: dict[int, str], mask: int, depth: int) -> None:
        while mask:
            low = mask & -mask
            result[names[low.bit_length() - 1]] = depth
            mask ^= low
