"""Scorers: each rates candidate pods 0..1 on one concern; a profile sums them with weights.

Also the small pure structures the prefix scorers share: ``BlockLRU`` (one pod's cache as the router
imagines it, for when KV events are off) and ``WorkingSet`` (the blocks a pod touched recently, so we
know when a pod holding a prefix is full of live data and new prefixes must go elsewhere).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Protocol

from .types import PodState, SchedRequest


class Scorer(Protocol):
    name: str

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]: ...


# --------------------------------------------------------------------------------------------------
# Pure block bookkeeping


class BlockLRU:
    """A bounded LRU set of block keys: what a pod's prefix cache holds, approximately.

    ``touch`` marks keys used (most recent last) and evicts the least recent beyond ``capacity``, like
    vLLM's free-block queue; ``match_prefix`` counts the leading keys present, since a cached block is
    only usable when every block before it is cached too.
    """

    __slots__ = ("_keys", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._keys: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: int) -> bool:
        return key in self._keys

    def match_prefix(self, keys: Sequence[int]) -> int:
        n = 0
        for key in keys:
            if key not in self._keys:
                break
            n += 1
        return n

    def touch(self, keys: Iterable[int]) -> None:
        store = self._keys
        for key in keys:
            if key in store:
                store.move_to_end(key)
            else:
                store[key] = None
        while len(store) > self.capacity:
            store.popitem(last=False)

    def resize(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


class WorkingSet:
    """Distinct block keys a pod touched within the last ``window`` time units (Denning's working set).

    A pod's LRU keeps a block only while fewer than ``capacity`` other blocks are touched before its
    reuse, so when this count nears the pod's capacity, adding a new prefix evicts live data.
    """

    __slots__ = ("_pruned_at", "_seen", "max_size", "window")

    def __init__(self, window: float, max_size: int = 1 << 20) -> None:
        self.window = window
        self.max_size = max_size
        self._seen: OrderedDict[int, float] = OrderedDict()  # key -> last touch, oldest first
        self._pruned_at = float("nan")

    def _prune(self, now: float) -> None:
        # One decision asks every pod at the same ``now``: the first ask prunes, the rest reuse it.
        if now == self._pruned_at:
            return
        self._pruned_at = now
        seen, horizon = self._seen, now - self.window
        while seen:
            t = next(iter(seen.values()))
            if t >= horizon:
                break
            seen.popitem(last=False)

    def size(self, now: float) -> int:
        self._prune(now)
        return len(self._seen)

    def missing(self, keys: Iterable[int], now: float) -> int:
        """How many of ``keys`` are not in the current working set (would grow it if routed here)."""
        self._prune(now)
        seen = self._seen
        return sum(1 for k in keys if k not in seen)

    def touch(self, keys: Iterable[int], now: float) -> None:
        seen = self._seen
        for key in keys:
            seen[key] = now
            seen.move_to_end(key)
        while len(seen) > self.max_size:
            seen.popitem(last=False)
        self._pruned_at = float("nan")  # new entries: the next ask prunes again
        self._prune(now)


class PodBlockTracker:
    """Per pod: the approximate cache (``BlockLRU``) and the recent working set, fed by decisions.

    The scheduler calls ``record`` for every pod it sends a request to and ``advance`` with the clock
    before scoring; ``forget`` drops a pod that left or restarted (its cache is gone).
    """

    def __init__(self, window: float = 30.0, default_capacity: int = 4096) -> None:
        self.window = window
        self.default_capacity = default_capacity
        self.now = 0.0
        self._lru: dict[str, BlockLRU] = {}
        self._ws: dict[str, WorkingSet] = {}

    def capacity(self, pod: PodState) -> int:
        return pod.num_blocks if pod.num_blocks > 0 else self.default_capacity

    def advance(self, now: float) -> None:
        self.now = now

    def _lru_for(self, pod: PodState) -> BlockLRU:
        lru = self._lru.get(pod.name)
        cap = self.capacity(pod)
        if lru is None:
            lru = self._lru[pod.name] = BlockLRU(cap)
        elif lru.capacity != cap:
            lru.resize(cap)
        return lru

    def _ws_for(self, pod: PodState) -> WorkingSet:
        ws = self._ws.get(pod.name)
        if ws is None:
            ws = self._ws[pod.name] = WorkingSet(self.window, max_size=4 * self.capacity(pod))
        return ws

    def record(self, pod: PodState, keys: Sequence[int], now: float | None = None) -> None:
        if not keys:
            return
        when = self.now if now is None else now
        self._lru_for(pod).touch(keys)
        self._ws_for(pod).touch(keys, when)

    def match(self, pod: PodState, keys: Sequence[int]) -> int:
        lru = self._lru.get(pod.name)
        return lru.match_prefix(keys) if lru is not None else 0

    def live(self, pod: PodState, keys: Sequence[int]) -> tuple[int, int]:
        """(blocks live in ``pod``'s working set now, how many of ``keys`` are not among them)."""
        ws = self._ws.get(pod.name)
        if ws is None:
            return 0, len(keys)
        return ws.size(self.now), ws.missing(keys, self.now)

    def forget(self, pod_name: str) -> None:
        self._lru.pop(pod_name, None)
        self._ws.pop(pod_name, None)


# --------------------------------------------------------------------------------------------------
# Helpers shared by the prefix scorers


def request_blocks(request: SchedRequest, pod: PodState) -> int:
    """Full blocks in the prompt (only full blocks are cached); at least 1 to keep ratios finite."""
    if request.approx_prefix_key:
        return len(request.approx_prefix_key)
    return max(1, request.token_count // max(1, pod.block_size))


def matched_blocks(request: SchedRequest, pod: PodState, tracker: PodBlockTracker | None) -> int:
    """Cached prefix blocks on ``pod``: the precise indexer's answer when given, else our own estimate."""
    if request.prefix_scores:
        n = request.prefix_scores.get(pod.name, 0)
    elif tracker is not None and request.approx_prefix_key:
        n = tracker.match(pod, request.approx_prefix_key)
    else:
        n = 0
    return min(n, request_blocks(request, pod))


def _min_max_inverse(values: dict[str, float]) -> dict[str, float]:
    """Lower is better: the lowest value scores 1, the highest 0; all equal scores 1 (no preference)."""
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return dict.fromkeys(values, 1.0)
    return {k: (hi - v) / (hi - lo) for k, v in values.items()}


# --------------------------------------------------------------------------------------------------
# Scorers


class PrecisePrefixScorer:
    """Share of the prompt's blocks the indexer says are cached on each pod (from KV events)."""

    name = "precise-prefix"

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        return {
            p.name: min(1.0, request.prefix_scores.get(p.name, 0) / request_blocks(request, p)) for p in pods
        }


class ApproximatePrefixScorer:
    """Share of the prompt's blocks we previously sent to each pod and that its LRU should still hold.

    For engines without KV events: the tracker mirrors each pod's cache from our own routing history.
    """

    name = "approx-prefix"
    uses_tracker = True

    def __init__(self, tracker: PodBlockTracker) -> None:
        self.tracker = tracker

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        keys = request.approx_prefix_key
        if not keys:
            return dict.fromkeys((p.name for p in pods), 0.0)
        return {p.name: self.tracker.match(p, keys) / len(keys) for p in pods}


class QueueScorer:
    """Shorter engine queue (``waiting``) scores higher, min-max normalized across candidates."""

    name = "queue"

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        return _min_max_inverse({p.name: float(p.waiting) for p in pods})


class KVUtilizationScorer:
    """Lower KV-cache usage scores higher (``1 - kv_usage``): room to admit without preemption."""

    name = "kv-utilization"

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        return {p.name: min(1.0, max(0.0, 1.0 - p.kv_usage)) for p in pods}


class LoadScorer:
    """Fewer requests on the pod (router-counted in-flight plus engine-reported running) scores higher."""

    name = "load"

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        return _min_max_inverse({p.name: float(p.load) for p in pods})


class CapacityAwarePrefixScorer:
    """Prefix affinity until saturated: score each pod by the KV work that sending it there costs.

    Plain cache-aware routing sends every request to the pod with the longest cached prefix; since
    unrelated prompts share a few leading blocks (chat template, common preamble), one pod wins them
    all, its working set outgrows its KV cache, LRU thrashes and the hit rate falls below round robin.

    Here the cost of pod p is the blocks it must compute now (``new``) plus the live blocks that adding
    them would evict (``overflow``: how far its recent working set plus this request's blocks exceed
    ``fill`` x capacity; they will be recomputed later). A pod with the prefix and room costs little;
    a pod with the prefix but full of live data costs about twice the request, so a *new* prefix goes
    to a pod with room and the working set partitions across engines, while a follow-up that adds only
    a few blocks still sticks to its pod. A pod whose KV usage is over ``kv_threshold`` (busy running,
    new work would preempt) scores 0 while another pod is under it, so load scorers spread the prefix.

    score = 1 - (new + w * overflow) / (2 * blocks): 1 full hit with room, 0.5 full miss with room, and
    (1 - w) / 2 for a miss that thrashes (0 with the default w = ``overflow_weight`` = 1; negative above,
    which keeps a follow-up on its full prefix holder even when load scorers favour another full pod).
    """

    name = "capacity-aware-prefix"
    uses_tracker = True

    def __init__(self, tracker: PodBlockTracker, kv_threshold: float = 0.9, fill: float = 0.9,
                 overflow_weight: float = 1.0) -> None:
        self.tracker = tracker
        self.kv_threshold = kv_threshold
        self.fill = fill
        self.overflow_weight = overflow_weight

    def cost(self, request: SchedRequest, pod: PodState) -> tuple[int, int]:
        """(new blocks to compute, live blocks evicted) if ``request`` goes to ``pod``."""
        total = request_blocks(request, pod)
        new = total - matched_blocks(request, pod, self.tracker)
        keys = request.approx_prefix_key
        if keys:
            active, grows = self.tracker.live(pod, keys)
        else:
            # No block keys: fall back to the indexer's block count, which only says "full or not".
            active, grows = pod.cached_blocks, new
        over = active + grows - self.fill * self.tracker.capacity(pod)
        overflow = int(min(new, max(0.0, over)))
        return new, overflow

    def score(self, request: SchedRequest, pods: list[PodState]) -> dict[str, float]:
        # ``cost`` inlined: this runs for every pod on every request, on the router's only thread.
        threshold = self.kv_threshold
        some_room = any(p.kv_usage < threshold for p in pods)
        keys = request.approx_prefix_key
        prefix = request.prefix_scores
        tracker = self.tracker
        scores: dict[str, float] = {}
        for pod in pods:
            if some_room and pod.kv_usage >= threshold:
                scores[pod.name] = 0.0
                continue
            if keys:
                total = len(keys)
                matched = prefix.get(pod.name, 0) if prefix else tracker.match(pod, keys)
                new = total - min(matched, total)
                active, grows = tracker.live(pod, keys)
            else:
                total = max(1, request.token_count // max(1, pod.block_size))
                new = total - min(prefix.get(pod.name, 0) if prefix else 0, total)
                active, grows = pod.cached_blocks, new
            over = active + grows - self.fill * tracker.capacity(pod)
            overflow = min(new, int(over)) if over > 0 else 0
            scores[pod.name] = 1.0 - (new + self.overflow_weight * overflow) / (2.0 * total)
        return scores
