"""The canary verdict from gateway metric snapshots: every verdict, fail fast, promote late, never blind."""

from __future__ import annotations

import pytest

from serving.operate.scrape import Scrape, parse_metrics
from serving.rollout import RevisionFigures, Thresholds, figures, judge

LIMITS = Thresholds(max_error_rate=0.05, max_latency_ratio=2.0, min_requests=20)


def page(rows: dict[str, dict[str, int]], latency: dict[str, dict[str, int]]) -> str:
    """A gateway /metrics page as the collector writes it (counter with _total, cumulative histogram)."""
    lines = ["# HELP odh_gateway_revision_requests_total Requests answered.",
             "# TYPE odh_gateway_revision_requests_total counter"]
    for revision, codes in rows.items():
        lines += [f'odh_gateway_revision_requests_total{{code="{c}",namespace="default",revision="{revision}"}} {n}.0'
                  for c, n in codes.items()]
    lines += ["# HELP odh_gateway_revision_request_duration_seconds Time.",
              "# TYPE odh_gateway_revision_request_duration_seconds histogram"]
    for revision, buckets in latency.items():
        total = 0
        for le, n in buckets.items():
            total = n
            lines.append(f'odh_gateway_revision_request_duration_seconds_bucket{{le="{le}",namespace="default",'
                         f'revision="{revision}"}} {n}.0')
        lines.append(f'odh_gateway_revision_request_duration_seconds_count{{namespace="default",revision="{revision}"}} {total}.0')
        lines.append(f'odh_gateway_revision_request_duration_seconds_sum{{namespace="default",revision="{revision}"}} 1.0')
    lines.append("# HELP other_metric x\n# TYPE other_metric gauge\nother_metric 3.0")
    return "\n".join(lines) + "\n"


def side(revision: str, requests: int, errors: int = 0, p95: float | None = 0.01) -> RevisionFigures:
    return RevisionFigures(revision, requests, errors, p95)


def test_figures_are_the_difference_between_two_snapshots() -> None:
    before = parse_metrics(page({"r1": {"200": 10}, "r2": {"200": 1}},
                                {"r1": {"0.01": 10, "0.1": 10, "+Inf": 10}, "r2": {"0.01": 1, "0.1": 1, "+Inf": 1}}), 0.0)
    after = parse_metrics(page({"r1": {"200": 110}, "r2": {"200": 31, "500": 20, "404": 3}},
                               {"r1": {"0.01": 100, "0.1": 110, "+Inf": 110}, "r2": {"0.01": 1, "0.1": 54, "+Inf": 54}}), 0.0)
    stable, canary = figures(before, after, "default", "r1"), figures(before, after, "default", "r2")
    assert (stable.requests, stable.errors) == (100, 0)
    assert (canary.requests, canary.errors) == (53, 20)  # 404 is the client's: not a 5xx
    assert canary.error_rate == pytest.approx(20 / 53)
    assert stable.p95_seconds is not None and 0.01 < stable.p95_seconds < 0.1
    assert canary.p95_seconds is not None and canary.p95_seconds > stable.p95_seconds
    unseen = figures(before, after, "default", "nobody")
    assert (unseen.requests, unseen.p95_seconds) == (0, None)
    assert figures(Scrape(taken_at=0.0), after, "other-ns", "r1").requests == 0


def test_a_failing_canary_is_rolled_back_as_soon_as_it_has_enough_requests() -> None:
    decision = judge(side("s", 200), side("c", 57, errors=23), LIMITS, elapsed=3, window=60)
    assert decision.verdict == "rollback"
    assert decision.reason == "canary 5xx 40.4 % > 5 % over 57 requests"


def test_errors_on_too_few_requests_keep_watching_until_the_window_ends() -> None:
    decision = judge(side("s", 50), side("c", 5, errors=5), LIMITS, elapsed=3, window=60)
    assert decision.verdict == "watch"


def test_a_healthy_canary_is_watched_until_the_end_of_the_window_then_promoted() -> None:
    healthy = side("c", 80, errors=1, p95=0.015)
    assert judge(side("s", 300), healthy, LIMITS, elapsed=30, window=60).verdict == "watch"
    decision = judge(side("s", 300, p95=0.010), healthy, LIMITS, elapsed=60.5, window=60)
    assert decision.verdict == "promote"
    assert "canary 5xx 1.2 % <= 5 % over 80 requests" in decision.reason
    assert "x1.50 <= x2" in decision.reason


def test_a_slow_canary_is_rolled_back_at_the_end_of_the_window() -> None:
    decision = judge(side("s", 300, p95=0.010), side("c", 80, p95=0.050), LIMITS, elapsed=61, window=60)
    assert decision.verdict == "rollback"
    assert decision.reason == "canary p95 50.0 ms vs stable 10.0 ms (x5.00 > x2)"


def test_too_little_canary_traffic_extends_the_window_once_then_rolls_back() -> None:
    thin = side("c", 7)
    extended = judge(side("s", 40), thin, LIMITS, elapsed=61, window=60)
    assert extended.verdict == "watch" and "extended" in extended.reason
    decision = judge(side("s", 40), thin, LIMITS, elapsed=120, window=60)
    assert decision.verdict == "rollback"
    assert decision.reason.startswith("not enough canary traffic: 7 requests < 20 in 120 s")
    # Enough traffic during the extension: promoted then.
    assert judge(side("s", 40), side("c", 25), LIMITS, elapsed=90, window=60).verdict == "promote"


def test_without_stable_traffic_latency_is_not_compared_and_the_reason_says_so() -> None:
    decision = judge(side("s", 0, p95=None), side("c", 30), LIMITS, elapsed=60, window=60)
    assert decision.verdict == "promote"
    assert "p95 not compared" in decision.reason


@pytest.mark.parametrize(("kwargs", "field"), [({"max_error_rate": 1.5}, "max_error_rate"),
                                               ({"max_latency_ratio": 0}, "max_latency_ratio"),
                                               ({"min_requests": 0}, "min_requests")])
def test_bad_thresholds_are_refused_by_name(kwargs: dict[str, float], field: str) -> None:
    values: dict[str, float] = {"max_error_rate": 0.05, "max_latency_ratio": 2.0, "min_requests": 20, **kwargs}
    with pytest.raises(ValueError, match=field):
        Thresholds(values["max_error_rate"], values["max_latency_ratio"], int(values["min_requests"]))
