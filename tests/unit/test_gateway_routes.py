"""The gateway's route table: routing rules and least-outstanding picking, without sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from serving.platform.local.routes import Endpoint, RouteTable, RouteTarget

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
        picks.append(ep)
        target.release(ep)  # always idle again: every pick is a tie
    assert Counter(picks) == {A: 10, B: 10, C: 10}
    assert picks[:3] != [picks[0]] * 3


def test_pick_prefers_the_fast_endpoint() -> None:
    """A slow endpoint that keeps requests in flight gets fewer new ones."""
    target = RouteTarget("ns", "m", [A, B])
    slow_in_flight = []
    counts: Counter[Endpoint] = Counter()
    for step in range(100):
        ep = target.pick()
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
