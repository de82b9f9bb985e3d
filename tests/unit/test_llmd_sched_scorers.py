"""Each scorer alone, and the pure block structures behind the prefix scorers."""

import pytest

from serving.llmd.scheduler import (
    ApproximatePrefixScorer,
    BlockLRU,
    CapacityAwarePrefixScorer,
    KVUtilizationScorer,
    LoadScorer,
    PodBlockTracker,
    PodState,
    PrecisePrefixScorer,
    QueueScorer,
    SchedRequest,
    WorkingSet,
)


def test_block_lru_matches_consecutive_prefix_and_evicts_least_recent():
    lru = BlockLRU(4)
    lru.touch([1, 2, 3])
    assert lru.match_prefix([1, 2, 3, 4]) == 3
    assert lru.match_prefix([2, 3]) == 2
    assert lru.match_prefix([9, 1]) == 0  # a hole at the start hides everything after it
    lru.touch([1])  # 1 is now most recent; 2 is least recent
    lru.touch([7, 8])
    assert 2 not in lru and 1 in lru and len(lru) == 4
    lru.resize(2)
    assert len(lru) == 2 and 8 in lru


def test_working_set_counts_recent_distinct_blocks():
    ws = WorkingSet(window=10)
    ws.touch([1, 2, 3], now=0)
    ws.touch([3, 4], now=5)
    assert ws.size(now=5) == 4
    assert ws.size(now=12) == 2  # 1 and 2 were last touched at 0, outside the window
    assert ws.missing([3, 4, 5], now=12) == 1


def test_working_set_is_bounded_and_repruned_after_touches_at_the_same_time():
    ws = WorkingSet(window=10, max_size=3)
    ws.touch([1, 2, 3, 4], now=0)
    assert ws.size(now=0) == 3 and ws.missing([1], now=0) == 1  # the oldest went over the bound
    assert ws.size(now=11) == 0
    ws.touch([5, 6], now=11)  # same ``now`` as the last prune: the new keys still count
    assert ws.size(now=11) == 2 and ws.missing([5, 6, 7], now=11) == 1


def test_precise_prefix_scorer_is_cached_share():
    pods = [PodState("a", block_size=16), PodState("b", block_size=16)]
    req = SchedRequest(token_count=160, prefix_scores={"a": 5})
    assert PrecisePrefixScorer().score(req, pods) == {"a": 0.5, "b": 0.0}


def test_approximate_prefix_scorer_uses_routing_history():
    tracker = PodBlockTracker()
    a, b = PodState("a", num_blocks=100), PodState("b", num_blocks=100)
    tracker.record(a, [1, 2, 3, 4])
    tracker.record(b, [1, 9])
    req = SchedRequest(approx_prefix_key=[1, 2, 3, 5])
    assert ApproximatePrefixScorer(tracker).score(req, [a, b]) == {"a": 0.75, "b": 0.25}
    tracker.forget("a")
    assert ApproximatePrefixScorer(tracker).score(req, [a, b])["a"] == 0.0


def test_approximate_lru_capacity_follows_num_blocks():
    tracker = PodBlockTracker()
    small = PodState("s", num_blocks=2)
    tracker.record(small, [1, 2, 3])
    assert tracker.match(small, [1]) == 0 and tracker.match(small, [2, 3]) == 2


def test_queue_kv_and_load_scorers_prefer_idle_pods():
    pods = [
        PodState("a", waiting=0, kv_usage=0.2, in_flight=1, running=1),
        PodState("b", waiting=10, kv_usage=0.8, in_flight=4, running=4),
        PodState("c", waiting=5, kv_usage=0.5, in_flight=2, running=3),
    ]
    req = SchedRequest()
    assert QueueScorer().score(req, pods) == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert KVUtilizationScorer().score(req, pods) == pytest.approx({"a": 0.8, "b": 0.2, "c": 0.5})
    assert LoadScorer().score(req, pods) == {"a": 1.0, "b": 0.0, "c": 0.5}
    # All equal: no preference.
    assert QueueScorer().score(req, [PodState("x"), PodState("y")]) == {"x": 1.0, "y": 1.0}


def _capacity_fixture():
    tracker = PodBlockTracker(window=100)
    holder = PodState("holder", num_blocks=40)
    empty = PodState("empty", num_blocks=40)
    tracker.advance(10)
    return tracker, holder, empty


def test_capacity_aware_prefers_holder_while_it_has_room():
    tracker, holder, empty = _capacity_fixture()
    tracker.record(holder, list(range(10)))
    scorer = CapacityAwarePrefixScorer(tracker)
    req = SchedRequest(approx_prefix_key=list(range(12)))
    scores = scorer.score(req, [holder, empty])
    assert scores["holder"] > scores["empty"]
    assert scores["empty"] == pytest.approx(0.5)  # a full miss with room


def test_capacity_aware_spills_new_prefix_off_a_full_holder():
    tracker, holder, empty = _capacity_fixture()
    # The holder's live working set fills its cache; it shares only a 2-block preamble with the request.
    tracker.record(holder, [0, 1] + list(range(100, 136)))
    scorer = CapacityAwarePrefixScorer(tracker)
    new_prefix = SchedRequest(approx_prefix_key=[0, 1] + list(range(500, 520)))
    scores = scorer.score(new_prefix, [holder, empty])
    assert scores["empty"] > scores["holder"]
    # A follow-up on a prefix the full holder already has still sticks: it adds only 2 blocks.
    follow_up = SchedRequest(approx_prefix_key=[0, 1] + list(range(100, 120)) + [900, 901])
    scores = scorer.score(follow_up, [holder, empty])
    assert scores["holder"] > scores["empty"]


def test_capacity_aware_working_set_ages_out():
    tracker, holder, empty = _capacity_fixture()
    tracker.record(holder, [0, 1] + list(range(100, 136)), now=0)
    tracker.advance(500)  # long idle: those blocks are cached but no longer live
    scorer = CapacityAwarePrefixScorer(tracker)
    req = SchedRequest(approx_prefix_key=[0, 1] + list(range(500, 520)))
    scores = scorer.score(req, [holder, empty])
    assert scores["holder"] > scores["empty"]  # the 2-block preamble hit, and room again


def test_capacity_aware_zeroes_kv_saturated_holder_while_others_have_room():
    tracker, holder, empty = _capacity_fixture()
    tracker.record(holder, list(range(10)))
    busy = PodState("holder", num_blocks=40, kv_usage=0.95)
    req = SchedRequest(approx_prefix_key=list(range(10)))
    scores = CapacityAwarePrefixScorer(tracker, kv_threshold=0.9).score(req, [busy, empty])
    assert scores["holder"] == 0.0 and scores["empty"] > 0
    # When every pod is saturated, affinity still applies.
    both_busy = [busy, PodState("empty", num_blocks=40, kv_usage=0.97)]
    scores = CapacityAwarePrefixScorer(tracker, kv_threshold=0.9).score(req, both_busy)
    assert scores["holder"] > scores["empty"]


def test_capacity_aware_uses_precise_prefix_scores_when_given():
    tracker, holder, empty = _capacity_fixture()
    req = SchedRequest(token_count=320, prefix_scores={"empty": 20})
    scores = CapacityAwarePrefixScorer(tracker).score(req, [holder, empty])
    assert scores["empty"] == pytest.approx(1.0) and scores["holder"] == pytest.approx(0.5)


def test_capacity_aware_overflow_weight_makes_thrashing_negative():
    tracker, holder, empty = _capacity_fixture()
    tracker.record(holder, list(range(100, 138)))  # holder's live set fills its cache
    tracker.record(empty, list(range(200, 238)))  # so does the other pod's
    follow_up = SchedRequest(approx_prefix_key=list(range(100, 120)) + [900, 901])
    plain = CapacityAwarePrefixScorer(tracker).score(follow_up, [holder, empty])
    weighted = CapacityAwarePrefixScorer(tracker, overflow_weight=2.0).score(follow_up, [holder, empty])
    assert plain["empty"] == pytest.approx(0.0)  # a full miss that thrashes: floor 0 by default
    assert weighted["empty"] == pytest.approx(-0.5)  # (1 - w) / 2
    # the holder adds 2 blocks and evicts 2 live ones either way
    assert plain["holder"] == pytest.approx(1 - 4 / 44) and weighted["holder"] == pytest.approx(1 - 6 / 44)


def test_capacity_aware_score_is_the_documented_formula_over_cost():
    """``score`` inlines ``cost``; over random pods and requests both must give the same numbers."""
    import random

    rng = random.Random(5)
    for _ in range(200):
        tracker = PodBlockTracker(window=10, default_capacity=64)
        pods = [PodState(f"p{i}", num_blocks=rng.choice([0, 16, 48]), kv_usage=rng.random(), block_size=16,
                         cached_blocks=rng.randrange(40)) for i in range(4)]
        for pod in pods:
            tracker.record(pod, [rng.randrange(60) for _ in range(rng.randrange(30))], now=rng.uniform(0, 10))
        tracker.advance(rng.uniform(5, 15))
        keys = [rng.randrange(60) for _ in range(rng.randrange(0, 20))]
        scores_given = rng.random() < 0.5
        req = SchedRequest(token_count=rng.randrange(1, 400), approx_prefix_key=keys,
                           prefix_scores={p.name: rng.randrange(25) for p in pods} if scores_given else {})
        scorer = CapacityAwarePrefixScorer(tracker, kv_threshold=0.8, fill=0.9, overflow_weight=2.0)
        some_room = any(p.kv_usage < 0.8 for p in pods)
        for pod in pods:
            if some_room and pod.kv_usage >= 0.8:
                expected = 0.0
            else:
                new, overflow = scorer.cost(req, pod)
                total = len(keys) or max(1, req.token_count // 16)
                expected = 1.0 - (new + 2.0 * overflow) / (2.0 * total)
            assert scorer.score(req, pods)[pod.name] == pytest.approx(expected)
