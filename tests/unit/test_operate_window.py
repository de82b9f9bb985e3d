"""Window math: Prometheus' histogram_quantile by hand, counter increases with resets, per-deployment figures."""

from __future__ import annotations

import math

import pytest

from serving.operate.inventory import build_inventory
from serving.operate.scrape import Histogram, Scrape, parse_metrics
from serving.operate.window import (
    counter_increases,
    histogram_increase,
    histogram_quantile,
    increase,
    route_owner,
    traffic_figures,
)


def test_quantile_interpolates_inside_the_bucket_the_rank_falls_in() -> None:
    # 10 observations: 2 <= 0.1, 8 more <= 0.5. p50: rank 5 is in (0.1, 0.5]: 0.1 + 0.4 * (5 - 2) / 8 = 0.25.
    buckets = {"0.1": 2, "0.5": 10, "+Inf": 10}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.25)
    # p95: rank 9.5: 0.1 + 0.4 * 7.5 / 8 = 0.475
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.475)


def test_quantile_in_the_first_bucket_starts_at_zero() -> None:
    # 4 observations all <= 0.2: p50 rank 2 -> 0 + 0.2 * 2 / 4 = 0.1
    assert histogram_quantile(0.5, {"0.2": 4, "1": 4, "+Inf": 4}) == pytest.approx(0.1)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.95, {"0.1": 1, "0.5": 2, "+Inf": 10}) == pytest.approx(0.5)


def test_quantile_skips_empty_buckets_and_takes_the_first_that_reaches_the_rank() -> None:
    # rank 3 of 4: bucket (0.05, 0.1] holds 0 (cumulative 2), (0.1, 0.25] reaches 4: 0.1 + 0.15 * (3 - 2) / 2
    buckets = {"0.05": 2, "0.1": 2, "0.25": 4, "+Inf": 4}
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.175)


def test_quantile_without_observations_or_inf_bucket_is_none() -> None:
    assert histogram_quantile(0.5, {"0.1": 0, "+Inf": 0}) is None
    assert histogram_quantile(0.5, {"0.1": 3, "0.5": 4}) is None
    assert histogram_quantile(0.5, {"+Inf": 4}) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, {"0.1": 1, "+Inf": 1})


def test_quantile_repairs_non_monotonic_buckets_as_prometheus_does() -> None:
    # a bucket lower than the one below it is taken as equal to it
    assert histogram_quantile(0.5, {"0.1": 4, "0.5": 3, "+Inf": 4}) == pytest.approx(0.05)


def test_counter_increase_handles_new_series_and_resets() -> None:
    assert increase(10, 15) == 5
    assert increase(None, 7) == 7  # new since the last scrape
    assert increase(100, 3) == 3  # the gateway restarted: it counted 3 since
    assert counter_increases({"200": 10, "503": 2}, {"200": 12, "503": 2, "500": 1}) == {"200": 2, "503": 0, "500": 1}


def test_histogram_increase_resets_when_the_count_goes_down() -> None:
    before = Histogram(buckets={"0.1": 5, "+Inf": 6}, sum=1.0, count=6)
    after = Histogram(buckets={"0.1": 7, "+Inf": 10}, sum=2.5, count=10)
    delta = histogram_increase(before, after)
    assert delta.buckets == {"0.1": 2, "+Inf": 4} and delta.count == 4 and delta.sum == pytest.approx(1.5)
    restarted = Histogram(buckets={"0.1": 1, "+Inf": 2}, sum=0.1, count=2)
    assert histogram_increase(after, restarted) == restarted


def _isvc(name: str, **status: object) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "default"}, "status": status}


def test_traffic_figures_per_deployment_with_reset_and_tag_route() -> None:
    text_before = """
odh_gateway_requests_total{route="default/iris",code="200"} 100
odh_gateway_requests_total{route="default/iris",code="503"} 10
odh_gateway_requests_total{route="default/other",code="200"} 5
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00001",le="0.1"} 50
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00001",le="+Inf"} 110
odh_gateway_revision_request_duration_seconds_count{namespace="default",revision="iris-predictor-00001"} 110
odh_gateway_revision_request_duration_seconds_sum{namespace="default",revision="iris-predictor-00001"} 20
"""
    # 10 s later: iris answered 20 more 200s and 5 more 500s (a new series), plus 5 on its tag route; the
    # other route's counter was reset (the gateway came back) and counts 2.
    text_after = """
odh_gateway_requests_total{route="default/iris",code="200"} 120
odh_gateway_requests_total{route="default/iris",code="503"} 10
odh_gateway_requests_total{route="default/iris",code="500"} 5
odh_gateway_requests_total{route="default/prev-iris",code="200"} 5
odh_gateway_requests_total{route="default/other",code="200"} 2
odh_gateway_upstream_errors_total{route="default/iris",kind="reset"} 3
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00001",le="0.1"} 60
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00001",le="+Inf"} 120
odh_gateway_revision_request_duration_seconds_count{namespace="default",revision="iris-predictor-00001"} 120
odh_gateway_revision_request_duration_seconds_sum{namespace="default",revision="iris-predictor-00001"} 25
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00002",le="0.1"} 10
odh_gateway_revision_request_duration_seconds_bucket{namespace="default",revision="iris-predictor-00002",le="+Inf"} 10
odh_gateway_revision_request_duration_seconds_count{namespace="default",revision="iris-predictor-00002"} 10
odh_gateway_revision_request_duration_seconds_sum{namespace="default",revision="iris-predictor-00002"} 0.5
"""
    traffic = [{"revisionName": "iris-predictor-00002", "percent": 50, "latestRevision": True},
               {"revisionName": "iris-predictor-00001", "percent": 50, "tag": "prev"}]
    inventory = build_inventory(inference_services=[
        _isvc("iris", deploymentMode="Serverless", components={"predictor": {"traffic": traffic}}), _isvc("other")])
    figures = traffic_figures(parse_metrics(text_before, 1000.0), parse_metrics(text_after, 1010.0), inventory)
    iris = figures["default/iris"]
    assert iris.requests == 30 and iris.errors == 5 and iris.upstream_errors == 3
    assert iris.request_rate == pytest.approx(3.0) and iris.error_rate == pytest.approx(5 / 30)
    # both revisions' new observations: 10 + 10 under 0.1 s, 0 + 0 above -> everything in (0, 0.1]
    assert iris.p50_ms == pytest.approx(50.0) and iris.p95_ms == pytest.approx(95.0)
    other = figures["default/other"]
    assert other.requests == 2 and other.errors == 0 and other.p95_ms is None and other.error_rate == 0.0


def test_route_owner_matches_own_route_and_tag_routes_only() -> None:
    inventory = build_inventory(inference_services=[_isvc("iris", components={"predictor": {"traffic": [
        {"revisionName": "iris-predictor-00001", "percent": 100, "tag": "prev"}]}})])
    served = inventory.served[0]
    assert route_owner("default/iris", served)
    assert route_owner("default/prev-iris", served)
    assert not route_owner("default/latest-iris", served)
    assert not route_owner("other/iris", served)


def test_parse_keeps_the_families_the_window_reads() -> None:
    scrape = parse_metrics('odh_gateway_in_flight{route="default/iris"} 3\n'
                           'odh_gateway_requests_total{route="default/iris",code="200"} 4\n', 5.0)
    assert scrape == Scrape(taken_at=5.0, route_requests={"default/iris": {"200": 4}}, route_in_flight={"default/iris": 3})
    assert not math.isnan(scrape.taken_at)
