"""A small deterministic simulation: shared-prefix multi-turn chat over 4 pods with bounded LRU caches.

Groups of users share a long system document; every prompt starts with the same 2-block preamble
(think chat template). The documents plus live conversations exceed one pod's cache but fit in all
four. "Longest prefix" sends everything to the pod with the preamble and thrashes its LRU; round robin
copies every document to every pod and thrashes all of them; capacity-aware affinity partitions the
groups across pods and stays near the ideal (an unbounded cache).
"""

import random

import yaml

from serving.llmd.scheduler import BlockLRU, PodState, SchedRequest, Scheduler, load_config
from serving.llmd.scheduler.config import DEFAULT_CONFIG_PATH

PODS, CAPACITY, BLOCK = 4, 150, 16


def workload(seed, n=1200, groups=10, users=2, doc=30, preamble=2, turns=3, turn_blocks=2):
    """Chained block keys per request (a key depends on every block before it, as in vLLM)."""
    rng = random.Random(seed)
    conversation: dict[tuple[int, int], tuple[int, int]] = {}
    requests = []
    for _ in range(n):
        g, u = rng.randrange(groups), rng.randrange(users)
        cid, turn = conversation.get((g, u), (0, 0))
        if turn >= turns:
            cid, turn = cid + 1, 0  # the user starts a new conversation on the same document
        conversation[(g, u)] = (cid, turn + 1)
        content = [(0, i) for i in range(preamble)] + [(1, g, i) for i in range(doc)]
        content += [(2, g, u, cid, k) for k in range((turn + 1) * turn_blocks)]
        keys, prev = [], 0
        for block in content:
            prev = hash((prev, block))  # ints and tuples of ints hash deterministically
            keys.append(prev)
        requests.append(keys)
    return requests


def simulate(policy, requests, seed=1, kv_events=True):
    caches = [BlockLRU(CAPACITY) for _ in range(PODS)]
    names = [f"pod{i}" for i in range(PODS)]
    rng = random.Random(seed)
    scheduler = None
    if policy == "capacity-aware":
        data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        data["tracker"]["window_s"] = 40  # one simulated second per request
        scheduler = Scheduler(load_config(data), rng=random.Random(seed))
    hits = total = 0
    for tick, keys in enumerate(requests):
        cached = {names[i]: caches[i].match_prefix(keys) for i in range(PODS)}  # the precise indexer
        if policy == "round-robin":
            chosen = names[tick % PODS]
        elif policy == "longest-prefix":
            best = max(cached.values())
            chosen = rng.choice([n for n, c in cached.items() if c == best])
        else:
            pods = [PodState(n, num_blocks=CAPACITY, block_size=BLOCK, cached_blocks=len(caches[i])) for i, n in enumerate(names)]
            # Without KV events the scheduler only knows what it sent where (its approximate index).
            scores = cached if kv_events else {}
            request = SchedRequest(token_count=len(keys) * BLOCK, prefix_scores=scores, approx_prefix_key=keys)
            chosen = scheduler.schedule(request, pods, now=float(tick)).pod
        i = names.index(chosen)
        hits += cached[chosen]
        total += len(keys)
        caches[i].touch(keys)
    return hits / total


def ideal(requests):
    cache = BlockLRU(1 << 30)
    hits = total = 0
    for keys in requests:
        hits += cache.match_prefix(keys)
        total += len(keys)
        cache.touch(keys)
    return hits / total


def test_working_set_exceeds_one_pod_but_fits_in_all():
    requests = workload(seed=1)
    distinct = len({k for keys in requests for k in keys})
    documents = 2 + 10 * 30
    assert documents > CAPACITY and documents < PODS * CAPACITY
    assert distinct > CAPACITY


def test_capacity_aware_beats_longest_prefix_and_round_robin():
    for seed in (1, 2):
        requests = workload(seed)
        best = ideal(requests)
        rr = simulate("round-robin", requests)
        longest = simulate("longest-prefix", requests)
        ours = simulate("capacity-aware", requests)
        assert ours > longest + 0.2 and ours > rr + 0.2, (ours, longest, rr)
        assert ours >= 0.9 * best, (ours, best)


def test_capacity_aware_without_kv_events_uses_its_own_routing_history():
    requests = workload(seed=1)
    ours = simulate("capacity-aware", requests, kv_events=False)
    assert ours >= 0.9 * ideal(requests) and ours > simulate("longest-prefix", requests) + 0.2


def test_simulation_is_deterministic():
    requests = workload(seed=3, n=300)
    assert simulate("capacity-aware", requests) == simulate("capacity-aware", requests)
