"""The gateway's route table: routing rules and least-outstanding picking, without sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from serving.platform.local.routes import Backend, Endpoint, RouteTable, RouteTarget

A = Endpoint("127.0.0.1", 9001)
B = Endpoint("127.0.0.1", 9002)
C = Endpoint("127.0.0.1", 9003)


@pytest.fixture
def table() -> RouteTable:
    t = RouteTable()
    t.set("default", "iris", [A])
    t.set("team", "iris", [B])
    t.set("team", "wine", [C])
    return t


# -- rule 1: /serving/{namespace}/{name}/... --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/serving/team/iris/v1/models/iris:predict", "/v1/models/iris:predict"),
        ("/serving/team/iris/v2/models/iris/infer", "/v2/models/iris/infer"),
        ("/serving/team/iris", "/"),
        ("/serving/team/iris/", "/"),
        ("/serving/team/iris?x=1", "/?x=1"),
        ("/serving/team/iris/v2/health/ready?verbose=true", "/v2/health/ready?verbose=true"),
    ],
)
def test_prefix_is_stripped(table: RouteTable, path: str, upstream: str) -> None:
    target, rest = table.resolve(path, "127.0.0.1:8080")
    assert target is not None and target.key == "team/iris"
    assert rest == upstream


def test_prefix_of_unknown_service_is_not_routed(table: RouteTable) -> None:
    assert table.resolve("/serving/team/nope/v2/models/nope/infer", None)[0] is None
    assert table.resolve("/serving/team", None)[0] is None
    assert table.resolve("/serving/team/irisx/v1/models/iris:predict", None)[0] is None


# -- rule 2: Host {name}.{namespace}.anything ------------------------------------------------------


@pytest.mark.parametrize("host", ["wine.team.example.com", "wine.team.svc.cluster.local:80", "wine.team.", "WINE.team.x"])
def test_host_routes_with_path_unchanged(table: RouteTable, host: str) -> None:
    target, rest = table.resolve("/v1/models/wine:predict", host)
    assert target is not None and target.key == "team/wine"
    assert rest == "/v1/models/wine:predict"


@pytest.mark.parametrize("host", ["wine.team", "127.0.0.1:8080", "localhost", "wine.other.example.com"])
def test_host_without_match_falls_through(table: RouteTable, host: str) -> None:
    # Falls through to rule 3: "wine" exists once, so the name routes it anyway.
    target, _ = table.resolve("/v1/models/wine:predict", host)
    assert target is not None and target.key == "team/wine"
    assert table.resolve("/other", host)[0] is None


def test_prefix_wins_over_host(table: RouteTable) -> None:
    target, rest = table.resolve("/serving/default/iris/v1/models/iris:predict", "wine.team.example.com")
    assert target is not None and target.key == "default/iris"
    assert rest == "/v1/models/iris:predict"


# -- rule 3: by model name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/models/wine", "/v1/models/wine:predict", "/v1/models/wine:explain", "/v2/models/wine",
     "/v2/models/wine/ready", "/v2/models/wine/infer", "/v2/models/wine/versions/1/infer", "/v2/models/wine?x"],
)
def test_model_name_routes_unique_service(table: RouteTable, path: str) -> None:
    target, rest = table.resolve(path, None)
    assert target is not None and target.key == "team/wine"
    assert rest == path


def test_model_name_tie_goes_to_default_namespace(table: RouteTable) -> None:
    target, _ = table.resolve("/v2/models/iris/infer", None)
    assert target is not None and target.key == "default/iris"
    table.remove("default", "iris")
    target, _ = table.resolve("/v2/models/iris/infer", None)
    assert target is not None and target.key == "team/iris"


def test_model_name_ambiguous_without_default_is_not_routed() -> None:
    t = RouteTable()
    t.set("a", "m", [A])
    t.set("b", "m", [B])
    assert t.resolve("/v2/models/m/infer", None)[0] is None
    t.remove("b", "m")
    assert t.resolve("/v2/models/m/infer", None)[0] is not None


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/models/", "/v1/models", "/v1/chat/completions", "/", "/healthz"])
def test_unroutable_paths(table: RouteTable, path: str) -> None:
    assert table.resolve(path, None)[0] is None


def test_remove_forgets_route(table: RouteTable) -> None:
    table.remove("team", "wine")
    assert table.resolve("/v1/models/wine:predict", None)[0] is None
    assert table.resolve("/serving/team/wine/v1/models/wine:predict", None)[0] is None
    assert "team/wine" not in table.snapshot()
    table.remove("team", "wine")  # idempotent


def test_known_service_without_ready_replica_resolves_to_empty_target(table: RouteTable) -> None:
    table.set("team", "wine", [])
    target, _ = table.resolve("/serving/team/wine/v1/models/wine:predict", None)
    assert target is not None and target.endpoints == ()


def test_snapshot(table: RouteTable) -> None:
    table.set("team", "wine", [C, A])
    assert table.snapshot() == {
        "default/iris": ["127.0.0.1:9001"],
        "team/iris": ["127.0.0.1:9002"],
        "team/wine": ["127.0.0.1:9003", "127.0.0.1:9001"],
    }


# -- picking ---------------------------------------------------------------------------------------


def test_pick_least_outstanding() -> None:
    target = RouteTarget("ns", "m", [A, B, C])
    first = [target.pick() for _ in range(3)]
    assert sorted(first, key=str) == [A, B, C]  # one each before anyone gets a second
    target.release(B)
    assert target.pick() == B  # the only one with fewer in flight
    target.release(A)
    target.release(A)  # releasing past zero is harmless
    assert target.outstanding[A] == 0


def test_pick_round_robins_ties() -> None:
    target = RouteTarget("ns", "m", [A, B, C])
    picks = []
    for _ in range(30):
        ep = target.pick()
        assert ep is not None
        picks.append(ep)
        target.release(ep)  # always idle again: every pick is a tie
    assert Counter(picks) == {A: 10, B: 10, C: 10}
    assert picks[:3] != [picks[0]] * 3


def test_pick_prefers_the_fast_endpoint() -> None:
    """A slow endpoint that keeps requests in flight gets fewer new ones."""
    target = RouteTarget("ns", "m", [A, B])
    slow_in_flight = []
    counts: Counter[Endpoint] = Counter()
    for _ in range(100):
        ep = target.pick()
        assert ep is not None
        counts[ep] += 1
        if ep == A:
            slow_in_flight.append(ep)  # A holds its requests...
            if len(slow_in_flight) > 3:
                target.release(slow_in_flight.pop(0))
        else:
            target.release(ep)  # ...B answers at once
    assert counts[B] > 90


def test_pick_excludes_tried_endpoints() -> None:
    target = RouteTarget("ns", "m", [A, B])
    assert target.pick(exclude=[A]) == B
    assert target.pick(exclude=[A, B]) is None
    assert RouteTarget("ns", "m", []).pick() is None


def test_update_keeps_counts_of_remaining_endpoints() -> None:
    table = RouteTable()
    table.set("ns", "m", [A, B])
    target = table.get("ns", "m")
    assert target is not None
    target.pick()
    target.pick()
    table.set("ns", "m", [B, C])
    assert table.get("ns", "m") is target
    assert target.outstanding == {B: 1, C: 0}
    assert target.pick() == C
    target.release(A)  # a request on a replica that left finishes: nothing to count down
    assert A not in target.outstanding


def test_duplicate_endpoints_collapse() -> None:
    assert RouteTarget("ns", "m", [A, A, B]).endpoints == (A, B)


def test_endpoint_str() -> None:
    assert str(Endpoint("10.0.0.1", 80)) == "10.0.0.1:80"


# -- revisions, traffic split and tags (set_split) --------------------------------------------------


def split(*backends: Backend, table: RouteTable | None = None) -> RouteTable:
    t = table if table is not None else RouteTable()
    t.set_split("ns", "iris", backends)
    return t


def chosen(t: RouteTable, n: int, path: str = "/serving/ns/iris/v2/models/iris/infer") -> Counter[str]:
    route, _ = t.resolve(path, None)
    assert route is not None
    counts: Counter[str] = Counter()
    for _ in range(n):
        target = route.choose()
        assert target is not None
        counts[target.name] += 1
    return counts


def test_split_is_exact_over_1000_requests() -> None:
    t = split(Backend("iris-00002", 20, (A,)), Backend("iris-00001", 80, (B,)))
    assert chosen(t, 1000) == {"iris-00001": 800, "iris-00002": 200}


def test_split_interleaves_rather_than_bursts() -> None:
    """Smooth weighted round robin: a 20 % canary gets one in every five, never five in a row."""
    t = split(Backend("v2", 20, (A,)), Backend("v1", 80, (B,)))
    route = t.route("ns", "iris")
    assert route is not None
    names = []
    for _ in range(100):
        target = route.choose()
        assert target is not None
        names.append(target.name)
    for start in range(0, 100, 5):
        assert names[start:start + 5].count("v2") == 1


@pytest.mark.parametrize("percents", [(1, 99), (33, 33, 34), (50, 50), (5, 15, 80), (100,)])
def test_split_shares_are_exact_per_hundred(percents: tuple[int, ...]) -> None:
    t = split(*(Backend(f"r{i}", p, (Endpoint("127.0.0.1", 9000 + i),)) for i, p in enumerate(percents)))
    assert chosen(t, 1000) == {f"r{i}": 10 * p for i, p in enumerate(percents)}


def test_change_of_split_takes_effect_on_the_next_request() -> None:
    t = split(Backend("v2", 20, (A,)), Backend("v1", 80, (B,)))
    chosen(t, 7)  # mid-cycle
    split(Backend("v2", 0, (A,)), Backend("v1", 100, (B,)), table=t)  # rollback
    assert chosen(t, 50) == {"v1": 50}
    split(Backend("v2", 100, (A,)), Backend("v1", 0, (B,)), table=t)  # promotion
    assert chosen(t, 50) == {"v2": 50}


def test_revision_listed_twice_is_one_target_with_the_summed_share() -> None:
    t = split(Backend("v2", 60, (A,)), Backend("v2", 20, (A,), tag="latest"), Backend("v1", 20, (B,), tag="prev"))
    assert chosen(t, 100) == {"v2": 80, "v1": 20}
    assert len(t.targets()) == 2


def test_route_with_no_share_anywhere_chooses_nothing() -> None:
    t = split(Backend("v1", 0, (A,), tag="prev"))
    route = t.route("ns", "iris")
    assert route is not None and route.choose() is None
    assert split(table=RouteTable()).route("ns", "iris") is not None  # known, with no backend


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ((Backend("v1", 80, (A,)),), "sum to 80"),
        ((Backend("v1", 80, (A,)), Backend("v2", 30, (B,))), "sum to 110"),
        ((Backend("v1", 101, (A,)),), r"backends\[0\].percent is 101"),
        ((Backend("v1", 100, (A,)), Backend("v2", -1, (B,))), r"backends\[1\].percent is -1"),
        ((Backend("", 100, (A,)),), r"backends\[0\].revision is empty"),
        ((Backend("v1", 50, (A,), tag="latest"), Backend("v2", 50, (B,), tag="latest")), r"backends\[1\].tag 'latest'"),
        ((Backend("v1", 100, (A,), tag="a.b"),), r"backends\[0\].tag 'a.b'"),
    ],
)
def test_bad_split_is_refused_naming_the_field(backends: tuple[Backend, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(*backends)


def test_tag_routes_reach_their_revision_alone() -> None:
    t = split(Backend("v2", 20, (A,), tag="latest"), Backend("v1", 80, (B,), tag="prev"))
    for path, host in [
        ("/serving/ns/latest-iris/v1/models/iris:predict", None),
        ("/v1/models/iris:predict", "latest-iris.ns.example.com"),
        ("/v1/models/iris:predict", "latest-iris-predictor.ns.example.com"),
    ]:
        route, rest = t.resolve(path, host)
        assert route is not None and route.key == "ns/latest-iris"
        assert rest == "/v1/models/iris:predict"
        assert {route.choose().name for _ in range(10)} == {"v2"}  # type: ignore[union-attr]
    assert chosen(t, 10, "/serving/ns/prev-iris/v2/models/iris/infer") == {"v1": 10}
    # The main route stays split; the Knative Service's own host reaches it too.
    route, _ = t.resolve("/v1/models/iris:predict", "iris-predictor.ns.example.com")
    assert route is not None and route.key == "ns/iris"


def test_tag_routes_are_not_routed_by_model_name_and_go_with_their_route() -> None:
    t = split(Backend("v1", 100, (A,), tag="latest"))
    assert t.resolve("/v1/models/latest-iris:predict", None)[0] is None
    assert t.snapshot() == {"ns/iris": ["127.0.0.1:9001"]}  # tag routes are not InferenceServices
    split(Backend("v1", 100, (A,)), table=t)  # the tag is gone
    assert t.resolve("/serving/ns/latest-iris/", None)[0] is None
    split(Backend("v1", 100, (A,), tag="latest"), table=t)
    t.remove("ns", "iris")
    assert t.resolve("/serving/ns/latest-iris/", None)[0] is None
    assert t.targets() == []


def test_a_route_of_its_own_wins_over_a_tag_route() -> None:
    t = split(Backend("v1", 100, (A,), tag="latest"))
    t.set("ns", "latest-iris", [C])
    route, _ = t.resolve("/serving/ns/latest-iris/x", None)
    assert route is not None and route.endpoints == (C,)


def test_revision_targets_are_shared_and_dropped_when_nothing_points_at_them() -> None:
    t = split(Backend("v2", 20, (A,), tag="latest"), Backend("v1", 80, (B,), tag="prev"))
    v1 = t.get("ns", "v1")
    assert v1 is not None
    route = t.route("ns", "prev-iris")
    assert route is not None and route.choose() is v1  # one target for the main and the tag route
    split(Backend("v2", 100, (A,), tag="latest"), Backend("v1", 0, (B,), tag="prev"), table=t)
    assert t.get("ns", "v1") is v1  # still reachable by its tag: kept, counters and all
    split(Backend("v2", 100, (A,)), table=t)
    assert t.get("ns", "v1") is None and v1.dropped


def test_set_is_one_revision_named_after_the_route_that_does_not_hold() -> None:
    t = RouteTable()
    t.set("ns", "m", [A])
    target = t.get("ns", "m")
    assert target is not None and not target.hold and target.name == "m"
    t.set_split("ns", "m", [Backend("m", 100, (A,))])
    assert t.get("ns", "m") is target and target.hold


# -- meters, waiters and activation ------------------------------------------------------------------


class Waiting:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def wake(self) -> None:
        self.log.append(f"wake {self.name}")

    def drop(self) -> None:
        self.log.append(f"drop {self.name}")


def test_meter_is_the_targets_and_lives_with_it() -> None:
    t = RouteTable()
    early = t.meter("ns", "v1")  # the daemon may ask before the route exists
    split(Backend("v1", 100, ()), table=t)
    target = t.get("ns", "v1")
    assert target is not None and target.meter is early is t.meter("ns", "v1")
    early.started(1.0)
    early.finished(1.5)
    assert early.requests_total == 1
    t.remove("ns", "iris")
    assert t.meter("ns", "v1") is not early  # dropped with its target: a new revision of that name starts at 0


def test_waiters_are_woken_in_order_when_endpoints_appear() -> None:
    log: list[str] = []
    t = split(Backend("v1", 100, ()))
    target = t.get("ns", "v1")
    assert target is not None
    for name in "abc":
        assert target.enqueue(Waiting(log, name), limit=3)
    assert not target.enqueue(Waiting(log, "d"), limit=3)  # the bound
    split(Backend("v1", 100, ()), table=t)  # still none: they wait
    assert log == []
    split(Backend("v1", 100, (A,)), table=t)
    assert log == ["wake a", "wake b", "wake c"] and not target.held


def test_waiters_are_dropped_when_the_revision_goes_or_fails() -> None:
    log: list[str] = []
    t = split(Backend("v2", 100, ()), Backend("v1", 0, (B,), tag="prev"))
    v2 = t.get("ns", "v2")
    assert v2 is not None
    v2.enqueue(Waiting(log, "a"), limit=10)
    split(Backend("v2", 100, (), hold=False), Backend("v1", 0, (B,), tag="prev"), table=t)  # failed
    assert log == ["drop a"]
    v2.enqueue(Waiting(log, "b"), limit=10)
    split(Backend("v1", 100, (B,)), table=t)  # v2 no longer referenced
    assert log == ["drop a", "drop b"] and v2.dropped


def test_dequeue_removes_one_waiter() -> None:
    log: list[str] = []
    target = RouteTarget("ns", "v1")
    a, b = Waiting(log, "a"), Waiting(log, "b")
    target.enqueue(a, 5)
    target.enqueue(b, 5)
    assert target.dequeue(a) and not target.dequeue(a)
    assert target.take_held() == [b]


def test_on_activate_once_per_transition_from_no_endpoint() -> None:
    calls: list[tuple[str, str]] = []
    t = split(Backend("v1", 100, ()))
    t.on_activate = lambda ns, rev: calls.append((ns, rev))
    target = t.get("ns", "v1")
    assert target is not None
    for _ in range(5):
        t.activate(target)
    assert calls == [("ns", "v1")]
    split(Backend("v1", 100, ()), table=t)  # no endpoint yet: the same transition
    t.activate(target)
    assert calls == [("ns", "v1")]
    split(Backend("v1", 100, (A,)), table=t)
    split(Backend("v1", 100, ()), table=t)  # scaled to zero again
    t.activate(target)
    assert calls == [("ns", "v1"), ("ns", "v1")]


def test_a_replaced_route_says_so() -> None:
    """The gateway follows a route resolved before a change (a pipelined request) to its replacement."""
    t = split(Backend("v1", 100, (A,), tag="latest"))
    old, old_tag = t.route("ns", "iris"), t.route("ns", "latest-iris")
    assert old is not None and old.installed and old_tag is not None and old_tag.installed
    split(Backend("v2", 100, (B,)), table=t)
    new = t.route("ns", "iris")
    assert new is not None and new.installed and new is not old
    assert not old.installed and not old_tag.installed
    t.remove("ns", "iris")
    assert not new.installed


# -- the activator's limits --------------------------------------------------------------------------


def test_activator_limits_default_and_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.platform.local.limits import PlatformLimits

    limits = PlatformLimits()
    assert (limits.activator_queue, limits.activator_wait_s) == (1000, 60.0)
    monkeypatch.setenv("ODH_ACTIVATOR_QUEUE", "5")
    monkeypatch.setenv("ODH_ACTIVATOR_WAIT_S", "2.5")
    limits = PlatformLimits.from_env()
    assert (limits.activator_queue, limits.activator_wait_s) == (5, 2.5)
    monkeypatch.setenv("ODH_ACTIVATOR_QUEUE", "many")
    with pytest.raises(ValueError, match="ODH_ACTIVATOR_QUEUE='many': expected a whole number"):
        PlatformLimits.from_env()
    monkeypatch.setenv("ODH_ACTIVATOR_QUEUE", "5")
    monkeypatch.setenv("ODH_ACTIVATOR_WAIT_S", "0")
    with pytest.raises(ValueError, match="ODH_ACTIVATOR_WAIT_S='0': must be positive"):
        PlatformLimits.from_env()
