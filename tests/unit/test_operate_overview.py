"""The serving overview's markdown: one row per deployment with mode, version, replicas, split, SLO and health."""

from __future__ import annotations

from serving.operate.alerts import Delivery, transitions
from serving.operate.assess import Assessment
from serving.operate.health import Health
from serving.operate.inventory import Served, TrafficTarget
from serving.operate.overview import COLUMNS, render_overview, traffic_split
from serving.operate.slo import SloState
from serving.operate.window import TrafficFigures


def rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in markdown.splitlines() if line.startswith("| ")]


def test_overview_rows() -> None:
    sless = Served("InferenceService", "default", "iris", "Serverless", "iris", "3", traffic=(
        TrafficTarget("iris-predictor-00002", 80, None, True), TrafficTarget("iris-predictor-00001", 20, "prev")))
    broken = Served("InferenceService", "team", "broken", "Standard", traffic=(TrafficTarget("broken-predictor", 100),))
    llm = Served("LLMInferenceService", "default", "tiny", "LLM-D", "tiny", "1")
    assessments = [
        Assessment(sless, TrafficFigures(10.0, 25, 1, 0, 4.2, 9.87), Health(True, "", 2, 2, 0, 0, False), SloState("ok")),
        Assessment(broken, TrafficFigures(10.0), Health(False, "CrashLoopBackOff: exit 1", 0, 1, 4, 2, True), SloState("no-traffic")),
        Assessment(llm, TrafficFigures(10.0, 10, 0, 0, 900.0, 1500.0), Health(True, "", 1, 1, 0, 0, False),
                   SloState("breached", ("p95 1500 ms > 1000 ms",))),
    ]
    alerts = transitions(assessments, {})
    text = render_overview(assessments, taken_at=0.0, window_seconds=10.0, alerts=alerts,
                           deliveries=[Delivery("webhook", True, "HTTP 200"), Delivery("custom-webhook/ops", False, "refused")])
    header, *body = rows(text)
    assert tuple(header) == COLUMNS
    assert body[0] == ["default/iris", "InferenceService", "Serverless", "iris v3", "2/2",
                       "iris-predictor-00002: 80% (latest), iris-predictor-00001: 20% [prev]", "2.50", "4.0%", "4.2 ms",
                       "9.9 ms", "ok", "Ready"]
    assert body[1][:6] == ["team/broken", "InferenceService", "Standard", "-", "0/1", "broken-predictor: 100%"]
    assert body[1][10:] == ["no-traffic", "crash-loop: CrashLoopBackOff: exit 1 (restarts 4, +2)"]
    assert body[2][2] == "LLM-D" and body[2][5] == "-" and body[2][10] == "breached (p95 1500 ms > 1000 ms)"
    assert text.startswith("# Serving overview: 3 deployment(s), 2 need attention")
    assert "1970-01-01 00:00:00 UTC, all namespaces" in text
    assert "- [critical] team/broken: ok -> crash-loop" in text and "- [warning] default/tiny (tiny v1)" in text
    assert "- webhook: delivered (HTTP 200)" in text and "- custom-webhook/ops: FAILED (refused)" in text


def test_empty_platform_and_pipes_in_reasons() -> None:
    assert "No deployments." in render_overview([], taken_at=0.0, window_seconds=5.0, namespace="team")
    assert traffic_split(()) == "-"
    odd = Served("InferenceService", "default", "x", "Standard")
    text = render_overview([Assessment(odd, TrafficFigures(1.0), Health(False, "a|b", 0, 1, 0, 0, False), SloState("no-traffic"))],
                           taken_at=0.0, window_seconds=1.0)
    assert "not-ready: a\\|b" in text and "None: no deployment changed state." in text
