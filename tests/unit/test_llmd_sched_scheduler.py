"""The composed scheduler: profiles, errors, P/D threshold, session affinity."""

import random

import pytest
import yaml

from serving.llmd.scheduler import NoCapacity, NoPods, PodState, SchedRequest, Scheduler, load_config
from serving.llmd.scheduler.config import DEFAULT_CONFIG_PATH


def make(**overrides):
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for key, value in overrides.items():
        data[key] = value
    return Scheduler(load_config(data), rng=random.Random(0), clock=lambda: 0.0)


def test_prefers_the_pod_holding_the_prefix():
    sched = make()
    pods = [PodState("a", num_blocks=1000), PodState("b", num_blocks=1000)]
    req = SchedRequest(token_count=320, prefix_scores={"b": 18})
    decision = sched.schedule(req, pods)
    assert decision.pod == "b" and decision.prefill_pod is None and set(decision.scores) == {"a", "b"}


def test_load_breaks_even_prefix():
    sched = make()
    pods = [PodState("a", waiting=8, in_flight=5), PodState("b")]
    assert sched.schedule(SchedRequest(token_count=64), pods).pod == "b"


def test_approximate_mode_learns_from_its_own_decisions():
    sched = make()
    pods = [PodState(n, num_blocks=1000) for n in "abcd"]
    keys = list(range(40))
    first = sched.schedule(SchedRequest(approx_prefix_key=keys), pods).pod
    for _ in range(5):
        assert sched.schedule(SchedRequest(approx_prefix_key=keys + [99]), pods).pod == first
    sched.forget_pod(first)
    # Its cache is gone: the prefix no longer pins it (a random tie among equals now).
    scores = sched.schedule(SchedRequest(approx_prefix_key=keys), [p for p in pods if p.name != first]).scores
    assert len(set(scores.values())) == 1


def test_errors_name_the_reason():
    sched = make()
    with pytest.raises(NoPods, match="no pods"):
        sched.schedule(SchedRequest(), [])
    with pytest.raises(NoPods, match="healthy"):
        sched.schedule(SchedRequest(), [PodState("a", healthy=False)])
    with pytest.raises(NoPods, match="role"):
        sched.schedule(SchedRequest(), [PodState("p", role="prefill")])
    hard = make(profiles={"decode": {"filters": ["healthy", {"type": "capacity", "max_kv_usage": 0.9}], "scorers": ["load"]}})
    with pytest.raises(NoCapacity, match="capacity"):
        hard.schedule(SchedRequest(), [PodState("a", kv_usage=0.95)])


PD_PODS = [
    PodState("d1", role="decode", block_size=16),
    PodState("d2", role="decode", block_size=16),
    PodState("p1", role="prefill", block_size=16),
]


def test_pd_threshold_on_uncached_tokens():
    sched = make(pd={"enabled": True, "threshold_tokens": 256, "profile": "prefill"})
    long_cold = sched.schedule(SchedRequest(token_count=2000), PD_PODS)
    assert long_cold.pod in {"d1", "d2"} and long_cold.prefill_pod == "p1"
    short = sched.schedule(SchedRequest(token_count=200), PD_PODS)
    assert short.prefill_pod is None
    # Long, but mostly cached on the decode pod: only 2000 - 120*16 = 80 tokens to prefill.
    warm = sched.schedule(SchedRequest(token_count=2000, prefix_scores={"d1": 120}), PD_PODS)
    assert warm.pod == "d1" and warm.prefill_pod is None


def test_pd_without_prefill_pods_degrades_to_aggregated():
    sched = make(pd={"enabled": True, "threshold_tokens": 0, "profile": "prefill"})
    decision = sched.schedule(SchedRequest(token_count=5000), [PodState("a"), PodState("p", role="prefill", healthy=False)])
    assert decision.pod == "a" and decision.prefill_pod is None


def test_pd_disabled_never_splits():
    sched = make()
    assert sched.schedule(SchedRequest(token_count=100_000), PD_PODS).prefill_pod is None


def test_session_affinity_sticks_until_saturated_or_gone():
    sched = make(session_affinity={"enabled": True, "kv_threshold": 0.9, "max_waiting": 4})
    pods = [PodState("a"), PodState("b"), PodState("c")]
    first = sched.schedule(SchedRequest(session_id="s1"), pods)
    for _ in range(10):
        decision = sched.schedule(SchedRequest(session_id="s1"), pods)
        assert decision.pod == first.pod and decision.reason == "session"
    # Saturated: it moves, and then sticks to the new pod.
    saturated = [PodState(p.name, kv_usage=0.95 if p.name == first.pod else 0.1) for p in pods]
    moved = sched.schedule(SchedRequest(session_id="s1"), saturated)
    assert moved.pod != first.pod and moved.reason == "scored"
    assert sched.schedule(SchedRequest(session_id="s1"), pods).pod == moved.pod
    # Unhealthy: filtered out, so the session re-routes.
    sick = [PodState(p.name, healthy=p.name != moved.pod) for p in pods]
    assert sched.schedule(SchedRequest(session_id="s1"), sick).pod != moved.pod


def test_session_affinity_off_by_default():
    sched = make()
    pods = [PodState("a"), PodState("b")]
    assert all(sched.schedule(SchedRequest(session_id="s"), pods).reason == "scored" for _ in range(5))


def test_flow_controller_is_built_from_config():
    sched = make(flow_control={"max_queue": 3, "tenant_quotas": {"x": 2}})
    assert sched.flow.config.max_queue == 3 and sched.flow.config.tenant_quotas == {"x": 2}
