"""Flow control as a pure state machine: ordering, quotas, deadlines, shedding."""

from serving.llmd.scheduler import (
    Admit,
    FlowControlConfig,
    FlowController,
    PodState,
    Priority,
    Queue,
    Reject,
    SchedRequest,
    free_slots,
    is_saturated,
)


def req(priority=Priority.INTERACTIVE, tenant="t", deadline=None, rid=""):
    return SchedRequest(priority=priority, tenant=tenant, deadline=deadline, id=rid)


def test_priority_parse_from_header_or_tier():
    assert Priority.parse("Batch") is Priority.BATCH
    assert Priority.parse(None) is Priority.INTERACTIVE
    assert Priority.parse("", default=Priority.STREAMING) is Priority.STREAMING
    try:
        Priority.parse("urgent")
    except ValueError as exc:
        assert "interactive" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_admits_when_not_saturated_and_releases():
    fc = FlowController()
    r = req()
    assert fc.admit(r, now=0) == Admit()
    assert fc.in_flight == 1 and fc.tenant_in_flight("t") == 1
    fc.release(r)
    assert fc.in_flight == 0 and fc.tenant_in_flight("t") == 0


def test_batch_is_shed_when_saturated_and_others_queue():
    fc = FlowController()
    verdict = fc.admit(req(Priority.BATCH), now=0, saturated=True)
    assert isinstance(verdict, Reject) and verdict.reason == "saturated" and verdict.status == 429
    assert isinstance(fc.admit(req(Priority.INTERACTIVE), now=0, saturated=True), Queue)
    assert fc.queue_depth == 1


def test_queue_orders_by_priority_then_arrival():
    fc = FlowController()
    s1, b_i1, s2, i2 = req(Priority.STREAMING, rid="s1"), req(rid="i1"), req(Priority.STREAMING, rid="s2"), req(rid="i2")
    for r in (s1, b_i1, s2, i2):
        assert isinstance(fc.admit(r, now=0, saturated=True), Queue)
    assert [r.id for r in fc.queued()] == ["i1", "i2", "s1", "s2"]
    assert [r.id for r in fc.next_ready(now=1, capacity_fn=lambda: 3)] == ["i1", "i2", "s1"]
    assert [r.id for r in fc.queued()] == ["s2"]
    assert fc.in_flight == 3


def test_capacity_fn_is_not_called_with_an_empty_queue():
    fc = FlowController()

    def boom():
        raise AssertionError("called")

    assert fc.next_ready(now=0, capacity_fn=boom) == []


def test_new_arrival_does_not_overtake_queued_peers():
    fc = FlowController()
    waiting = req(rid="first")
    fc.admit(waiting, now=0, saturated=True)
    # Capacity is back, but an equal-priority request is already waiting: queue behind it.
    late = req(rid="late")
    assert isinstance(fc.admit(late, now=1, saturated=False), Queue)
    assert [r.id for r in fc.next_ready(now=1, capacity_fn=lambda: 1)] == ["first"]


def test_tenant_quota_queues_interactive_and_rejects_batch():
    fc = FlowController(FlowControlConfig(tenant_quotas={"small": 1}))
    a, b = req(tenant="small", rid="a"), req(tenant="small", rid="b")
    assert fc.admit(a, now=0) == Admit()
    assert isinstance(fc.admit(b, now=0), Queue)
    verdict = fc.admit(req(Priority.BATCH, tenant="small"), now=0)
    assert isinstance(verdict, Reject) and verdict.reason == "quota"
    # Another tenant is not blocked by small's queued request.
    assert fc.admit(req(tenant="big"), now=0) == Admit()
    # b cannot start until a releases, however much capacity there is.
    assert fc.next_ready(now=1, capacity_fn=lambda: 10) == []
    fc.release(a)
    assert [r.id for r in fc.next_ready(now=1, capacity_fn=lambda: 10)] == ["b"]


def test_default_tenant_quota_applies_to_unlisted_tenants():
    fc = FlowController(FlowControlConfig(default_tenant_quota=2))
    assert fc.admit(req(tenant="x"), 0) == Admit()
    assert fc.admit(req(tenant="x"), 0) == Admit()
    assert isinstance(fc.admit(req(tenant="x"), 0), Queue)


def test_deadlines_expire_queued_requests():
    fc = FlowController(FlowControlConfig(default_queue_timeout_s=5))
    own = req(deadline=2.0, rid="own")
    default = req(rid="default")
    fc.admit(own, now=0, saturated=True)
    fc.admit(default, now=0, saturated=True)
    assert fc.next_ready(now=3, capacity_fn=lambda: 0) == []
    expired = fc.expire(now=3)
    assert [(r.id, why.reason, why.status) for r, why in expired] == [("own", "deadline", 503)]
    # An expired request is never handed out as ready.
    assert fc.next_ready(now=6, capacity_fn=lambda: 5) == []
    assert [r.id for r, _ in fc.expire(now=6)] == ["default"]
    assert fc.queue_depth == 0


def test_already_expired_request_is_rejected_on_arrival():
    verdict = FlowController().admit(req(deadline=1.0), now=2.0)
    assert isinstance(verdict, Reject) and verdict.reason == "deadline"


def test_queue_full_rejects():
    fc = FlowController(FlowControlConfig(max_queue=1))
    fc.admit(req(), now=0, saturated=True)
    verdict = fc.admit(req(), now=0, saturated=True)
    assert isinstance(verdict, Reject) and verdict.reason == "queue_full" and verdict.status == 429


def test_release_of_queued_request_cancels_it():
    fc = FlowController()
    r = req()
    fc.admit(r, now=0, saturated=True)
    fc.release(r)
    assert fc.queue_depth == 0 and fc.in_flight == 0


def test_saturation_and_free_slots_from_pods():
    cfg = FlowControlConfig(saturation_max_waiting=4, saturation_kv_threshold=0.9)
    busy = [PodState("a", waiting=4), PodState("b", kv_usage=0.95), PodState("c", healthy=False)]
    assert is_saturated(busy, cfg)
    assert free_slots(busy, cfg) == 0
    mixed = busy + [PodState("d", waiting=1)]
    assert not is_saturated(mixed, cfg)
    assert free_slots(mixed, cfg) == 3
