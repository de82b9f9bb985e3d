"""Each scheduler filter alone."""

import pytest

from serving.llmd.scheduler import CapacityFilter, HealthyFilter, LowQueueFilter, PodState, RoleFilter, SchedRequest

REQ = SchedRequest(token_count=64)


def names(pods):
    return [p.name for p in pods]


def test_healthy_filter_drops_unhealthy_and_draining():
    pods = [PodState("a"), PodState("b", healthy=False), PodState("c", draining=True)]
    assert names(HealthyFilter().filter(REQ, pods)) == ["a"]


def test_role_filter_keeps_named_roles():
    pods = [PodState("a", role="both"), PodState("p", role="prefill"), PodState("d", role="decode")]
    assert names(RoleFilter(["decode", "both"]).filter(REQ, pods)) == ["a", "d"]
    assert names(RoleFilter(["prefill"]).filter(REQ, pods)) == ["p"]


def test_role_filter_rejects_unknown_role():
    with pytest.raises(ValueError, match="unknown role"):
        RoleFilter(["encode"])


def test_low_queue_filter_drops_long_queues_but_never_all():
    pods = [PodState("a", waiting=2), PodState("b", waiting=50)]
    assert names(LowQueueFilter(10).filter(REQ, pods)) == ["a"]
    busy = [PodState("a", waiting=20), PodState("b", waiting=50)]
    assert names(LowQueueFilter(10).filter(REQ, busy)) == ["a", "b"]


def test_capacity_filter_is_hard():
    pods = [PodState("a", kv_usage=0.99), PodState("b", waiting=9)]
    assert names(CapacityFilter(max_kv_usage=0.95, max_waiting=10).filter(REQ, pods)) == ["b"]
    assert CapacityFilter(max_kv_usage=0.5, max_waiting=5).filter(REQ, pods) == []
