"""Writes the Grafana dashboards in ``dashboards/`` (``python infra/grafana/generate.py``): edit here, not the JSON.

One function per dashboard; small helpers keep every panel's datasource, grid position and ids consistent.
Every PromQL expression uses only names our components export (tests/unit/test_grafana_dashboards.py checks
that against the real collectors), with prometheus_client's rendered suffixes (``_total``, ``_bucket``).
Target labels (``job``, ``namespace``, ``deployment``, ``revision``, ``pod``, ``inferenceservice``, ``role``)
come from ``<state>/prometheus/targets.json`` (serving/platform/local/scrape_targets.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12's dashboard schema
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

Panel = dict[str, Any]


class Board:
    """Lays panels out left to right in rows of 24 grid units and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": len(self.panels) + 1, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []})
        self._y += 1

    def add(self, panel: Panel, w: int = 12, h: int = 8) -> None:
        if self._x + w > 24:
            self._newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
        self._x, self._row_h = 0, 0


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref, "range": True}


def timeseries(title: str, targets: list[tuple[str, str]], unit: str = "short", description: str = "",
               stack: bool = False, max_value: float | None = None) -> Panel:
    defaults: dict[str, Any] = {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                         "showPoints": "never",
                                                         "stacking": {"mode": "normal" if stack else "none"}}}
    if max_value is not None:
        defaults["max"] = max_value
        defaults["min"] = 0
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str = "short", description: str = "", thresholds: list[tuple[float, str]] | None = None) -> Panel:
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in thresholds or []]
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": "__auto", "refId": "A", "instant": True}],
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"}}


def heatmap(title: str, expr: str, description: str = "") -> Panel:
    return {"type": "heatmap", "title": title, "description": description, "datasource": DS,
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": "{{le}}", "refId": "A", "format": "heatmap",
                         "range": True}],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                        "color": {"mode": "scheme", "scheme": "Oranges"}}}


def text(title: str, content: str) -> Panel:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content}}


def variable(name: str, query: str, label: str, include_all: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-query"}, "definition": query, "refresh": 2,
            "includeAll": include_all, "multi": include_all, "allValue": ".*", "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {}}


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {"selected": False, "text": "odh-prometheus", "value": "odh-prometheus"},
            "hide": 0, "includeAll": False, "multi": False, "refresh": 1, "regex": ""}


def dashboard(uid: str, title: str, description: str, board: Board, variables: list[dict[str, Any]],
              tags: list[str]) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["odh-serving", *tags],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-30m", "to": "now"}, "refresh": "10s", "timezone": "browser",
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"type": "dashboards", "tags": ["odh-serving"], "asDropdown": True, "title": "ODH dashboards",
                   "includeVars": False, "keepTime": True}],
        "panels": board.panels,
    }


# -- (a) platform overview ----------------------------------------------------------------------------------

REV = 'namespace=~"$namespace", revision=~"$revision"'
KPA = 'namespace_name=~"$namespace", revision_name=~"$revision"'


def quantile(q: float, bucket: str, selector: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}{{{selector}}}[{RATE}])))"


def overview() -> dict[str, Any]:
    b = Board()
    req = f"odh_gateway_revision_requests_total{{{REV}}}"
    b.add(stat("Requests/s", f"sum(rate({req}[{RATE}]))", "reqps"), w=6, h=4)
    b.add(stat("5xx share", f'sum(rate(odh_gateway_revision_requests_total{{{REV}, code=~"5.."}}[{RATE}])) '
               f"/ sum(rate({req}[{RATE}]))", "percentunit", thresholds=[(0.01, "orange"), (0.05, "red")]), w=6, h=4)
    b.add(stat("p95 latency", quantile(0.95, "odh_gateway_revision_request_duration_seconds_bucket", REV), "s"), w=6, h=4)
    b.add(stat("Scrape targets down", 'count(up{job=~"odh-.*"} == 0) or vector(0)', "short",
               "Targets in prometheus.yml and <state>/prometheus/targets.json that did not answer their last scrape "
               "(a crashing replica, a stopped daemon).", thresholds=[(1, "red")]), w=6, h=4)
    b.row("Traffic (gateway, per revision)")
    b.add(timeseries("Requests/s by revision", [(f"sum by (namespace, revision) (rate({req}[{RATE}]))",
                                                "{{namespace}}/{{revision}}")], "reqps"))
    b.add(timeseries("5xx share by revision", [(
        f'sum by (namespace, revision) (rate(odh_gateway_revision_requests_total{{{REV}, code=~"5.."}}[{RATE}])) '
        f"/ sum by (namespace, revision) (rate({req}[{RATE}]))", "{{namespace}}/{{revision}}")], "percentunit",
        max_value=1))
    bucket = "odh_gateway_revision_request_duration_seconds_bucket"
    b.add(timeseries("Latency p50 / p95 by revision", [
        (quantile(0.5, bucket, REV, "namespace, revision"), "p50 {{namespace}}/{{revision}}"),
        (quantile(0.95, bucket, REV, "namespace, revision"), "p95 {{namespace}}/{{revision}}")], "s",
        "Accepted by the gateway to the end of the response, the activator's hold included."))
    b.add(timeseries("In flight by revision", [(f"sum by (namespace, revision) (odh_gateway_revision_in_flight{{{REV}}})",
                                                "{{namespace}}/{{revision}}")], "short",
                     "Held by the activator or proxied: the concurrency the KPA measures."))
    b.row("Activator (scale from zero)")
    b.add(timeseries("Held requests", [(f"sum by (namespace, revision) (odh_gateway_activator_held{{{REV}}})",
                                        "{{namespace}}/{{revision}}")], "short",
                     "Requests waiting for a revision without a ready replica."), w=8)
    b.add(timeseries("Released / timeouts / overflow per second", [
        (f"rate(odh_gateway_activator_released_total[{RATE}])", "released"),
        (f"rate(odh_gateway_activator_timeouts_total[{RATE}])", "timeouts (503 after ODH_ACTIVATOR_WAIT_S)"),
        (f"rate(odh_gateway_activator_overflow_total[{RATE}])", "overflow (503, queue full)")], "reqps"), w=16)
    b.row("Replicas")
    b.add(timeseries("Serverless: desired vs ready pods (KPA)", [
        (f"sum by (namespace_name, revision_name) (odh_autoscaler_desired_pods{{{KPA}}})",
         "desired {{namespace_name}}/{{revision_name}}"),
        (f"sum by (namespace_name, revision_name) (odh_autoscaler_actual_pods{{{KPA}}})",
         "ready {{namespace_name}}/{{revision_name}}")], "short"))
    b.add(timeseries("Replicas answering scrapes, by Deployment", [(
        'sum by (namespace, deployment, job) (up{job=~"odh-model-server|odh-llm-engine|odh-llmd-router", '
        'namespace=~"$namespace", revision=~"$revision"})', "{{job}} {{namespace}}/{{deployment}}")], "short",
        "Every replica the daemon runs is a target; up is 1 while its /metrics answers. Standard Deployments "
        "(HPA or fixed replicas) show here: the platform exports no HPA series."))
    return dashboard("odh-overview", "ODH serving: platform overview",
                     "Requests, errors, latency and replicas of every deployment, from the gateway's /metrics.", b,
                     [variable("namespace", "label_values(odh_gateway_revision_requests_total, namespace)", "Namespace"),
                      variable("revision", 'label_values(odh_gateway_revision_requests_total{namespace=~"$namespace"}, revision)',
                               "Revision")], ["overview"])


# -- (b) gateway detail -------------------------------------------------------------------------------------


def gateway() -> dict[str, Any]:
    b = Board()
    route = 'route=~"$route"'
    b.add(stat("Gateway up", 'min(up{job="odh-gateway"})', "bool", thresholds=[]), w=6, h=4)
    b.add(stat("Requests/s", f"sum(rate(odh_gateway_requests_total{{{route}}}[{RATE}]))", "reqps"), w=6, h=4)
    b.add(stat("Upstream errors/s", f"sum(rate(odh_gateway_upstream_errors_total{{{route}}}[{RATE}])) or vector(0)",
               "reqps", thresholds=[(0.01, "orange"), (1, "red")]), w=6, h=4)
    b.add(stat("In flight", f"sum(odh_gateway_in_flight{{{route}}})", "short"), w=6, h=4)
    b.row("Per route (namespace/name)")
    b.add(timeseries("Requests/s by route and code", [(
        f"sum by (route, code) (rate(odh_gateway_requests_total{{{route}}}[{RATE}]))", "{{route}} {{code}}")], "reqps"))
    b.add(timeseries("Non-2xx share by route", [(
        f'sum by (route) (rate(odh_gateway_requests_total{{{route}, code!~"2.."}}[{RATE}])) '
        f"/ sum by (route) (rate(odh_gateway_requests_total{{{route}}}[{RATE}]))", "{{route}}")], "percentunit",
        max_value=1))
    b.add(timeseries("Upstream errors by kind", [(
        f"sum by (route, kind) (rate(odh_gateway_upstream_errors_total{{{route}}}[{RATE}]))", "{{route}} {{kind}}")],
        "reqps", "connect, reset, timeout, protocol, desync (bytes answering no request), stale (a reused "
        "keep-alive connection redialled)."))
    b.add(timeseries("In flight by route", [(f"odh_gateway_in_flight{{{route}}}", "{{route}}")], "short"))
    b.row("Per revision")
    bucket = "odh_gateway_revision_request_duration_seconds_bucket"
    rev = 'namespace=~"$namespace"'
    b.add(heatmap("Request duration (all revisions of the namespace)",
                  f"sum by (le) (increase({bucket}{{{rev}}}[{RATE}]))"))
    b.add(timeseries("p99 by revision", [(quantile(0.99, bucket, rev, "namespace, revision"),
                                          "{{namespace}}/{{revision}}")], "s"))
    b.add(timeseries("Responses/s by revision and code", [(
        f"sum by (namespace, revision, code) (rate(odh_gateway_revision_requests_total{{{rev}}}[{RATE}]))",
        "{{namespace}}/{{revision}} {{code}}")], "reqps"))
    b.add(timeseries("Mean duration by revision", [(
        f"sum by (namespace, revision) (rate(odh_gateway_revision_request_duration_seconds_sum{{{rev}}}[{RATE}])) "
        f"/ sum by (namespace, revision) (rate(odh_gateway_revision_request_duration_seconds_count{{{rev}}}[{RATE}]))",
        "{{namespace}}/{{revision}}")], "s"))
    return dashboard("odh-gateway", "ODH serving: gateway", "The gateway's routes, status codes, upstream errors "
                     "and per-revision latency.", b,
                     [variable("route", "label_values(odh_gateway_requests_total, route)", "Route"),
                      variable("namespace", "label_values(odh_gateway_revision_requests_total, namespace)", "Namespace")],
                     ["gateway"])


# -- (c) model servers --------------------------------------------------------------------------------------

MS = 'job="odh-model-server", namespace=~"$namespace", deployment=~"$deployment"'


def model_servers() -> dict[str, Any]:
    b = Board()
    req = f'odh_model_server_requests_total{{{MS}, model=~"$model", protocol!="health"}}'
    b.add(timeseries("Requests/s by model and protocol", [(
        f"sum by (namespace, model, protocol) (rate({req}[{RATE}]))", "{{namespace}}/{{model}} {{protocol}}")],
        "reqps", "KServe V1 and V2 requests answered by every replica (health probes left out)."))
    b.add(timeseries("Error share by model (4xx, 5xx)", [
        (f'sum by (namespace, model) (rate(odh_model_server_requests_total{{{MS}, model=~"$model", status=~"5.."}}[{RATE}])) '
         f"/ sum by (namespace, model) (rate({req}[{RATE}]))", "5xx {{namespace}}/{{model}}"),
        (f'sum by (namespace, model) (rate(odh_model_server_requests_total{{{MS}, model=~"$model", status=~"4.."}}[{RATE}])) '
         f"/ sum by (namespace, model) (rate({req}[{RATE}]))", "4xx {{namespace}}/{{model}}")], "percentunit",
        max_value=1))
    lat = "odh_model_server_request_duration_seconds_bucket"
    b.add(timeseries("Request latency p50 / p95 by route", [
        (quantile(0.5, lat, MS, "route"), "p50 {{route}}"), (quantile(0.95, lat, MS, "route"), "p95 {{route}}")], "s",
        "Inside the model server, by route template (the gateway's figure adds the proxy hop)."))
    pred = "odh_model_server_predict_duration_seconds_bucket"
    b.add(timeseries("Time in the model p50 / p95", [
        (quantile(0.5, pred, f'{MS}, model=~"$model"', "model"), "p50 {{model}}"),
        (quantile(0.95, pred, f'{MS}, model=~"$model"', "model"), "p95 {{model}}")], "s",
        "Preprocess, predict and postprocess."))
    b.row("Replicas")
    b.add(timeseries("Admitted prediction requests by pod", [(f"odh_model_server_admitted_requests{{{MS}}}", "{{pod}}")],
                     "short", "Running on a predict thread or waiting for one."), w=8)
    b.add(timeseries("Admitted body bytes by pod", [(f"odh_model_server_admitted_body_bytes{{{MS}}}", "{{pod}}")],
                     "bytes"), w=8)
    b.add(timeseries("Replica up", [(f"up{{{MS}}}", "{{pod}}")], "short",
                     "0 while a replica does not answer (starting, crashing)."), w=8)
    b.add(timeseries("CPU by pod", [(f"rate(process_cpu_seconds_total{{{MS}}}[{RATE}])", "{{pod}}")], "percentunit"), w=12)
    b.add(timeseries("Resident memory by pod", [(f"process_resident_memory_bytes{{{MS}}}", "{{pod}}")], "bytes"), w=12)
    return dashboard("odh-model-servers", "ODH serving: model servers", "Per model request rate, errors and latency "
                     "from every model-server replica's /metrics.", b,
                     [variable("namespace", 'label_values(up{job="odh-model-server"}, namespace)', "Namespace"),
                      variable("deployment", 'label_values(up{job="odh-model-server", namespace=~"$namespace"}, deployment)',
                               "Deployment"),
                      variable("model", 'label_values(odh_model_server_requests_total{job="odh-model-server", '
                               'namespace=~"$namespace"}, model)', "Model")], ["model-server"])


# -- (d) autoscalers ----------------------------------------------------------------------------------------


def autoscalers() -> dict[str, Any]:
    b = Board()
    by = "namespace_name, revision_name"
    legend = "{{namespace_name}}/{{revision_name}}"
    b.add(timeseries("Desired vs ready pods", [
        (f"sum by ({by}) (odh_autoscaler_desired_pods{{{KPA}}})", f"desired {legend}"),
        (f"sum by ({by}) (odh_autoscaler_actual_pods{{{KPA}}})", f"ready {legend}")], "short"))
    b.add(timeseries("Panic mode", [(f"max by ({by}) (odh_autoscaler_panic_mode{{{KPA}}})", legend)], "bool",
                     "1 while the KPA is in panic mode (the panic window's concurrency passed the panic threshold)."))
    b.add(timeseries("Stable vs panic window concurrency, and the per-pod target", [
        (f"sum by ({by}) (odh_autoscaler_stable_request_concurrency{{{KPA}}})", f"stable {legend}"),
        (f"sum by ({by}) (odh_autoscaler_panic_request_concurrency{{{KPA}}})", f"panic {legend}"),
        (f"sum by ({by}) (odh_autoscaler_target_concurrency_per_pod{{{KPA}}})", f"target/pod {legend}")], "short",
        "Averages over the stable (60 s) and panic (6 s) windows of concurrency, or rps for an rps target."))
    b.add(timeseries("Excess burst capacity", [(f"sum by ({by}) (odh_autoscaler_excess_burst_capacity{{{KPA}}})",
                                                legend)], "short",
                     "Negative: the activator stays in the path (Knative's target-burst-capacity)."))
    b.add(timeseries("Measured concurrency at the gateway", [(
        'sum by (namespace, revision) (odh_gateway_revision_in_flight{namespace=~"$namespace", revision=~"$revision"})',
        "{{namespace}}/{{revision}}")], "short", "What the KPA is fed every second."))
    b.add(timeseries("Standard and LLM Deployments: replicas answering", [(
        'sum by (namespace, deployment, job) (up{job=~"odh-model-server|odh-llm-engine", namespace=~"$namespace"})',
        "{{job}} {{namespace}}/{{deployment}}")], "short",
        "HPA, ScaledObject and the LLM engine scaler export no series of their own: their result is the number "
        "of replicas the daemon runs, each a scrape target."))
    return dashboard("odh-autoscalers", "ODH serving: autoscalers", "Each Serverless revision's KPA (Knative's "
                     "autoscaler), from the gateway's /metrics, and the replica counts of the other autoscalers.", b,
                     [variable("namespace", "label_values(odh_autoscaler_desired_pods, namespace_name)", "Namespace"),
                      variable("revision", 'label_values(odh_autoscaler_desired_pods{namespace_name=~"$namespace"}, '
                               "revision_name)", "Revision")], ["autoscaling"])


# -- (e) LLM-D ----------------------------------------------------------------------------------------------

RT = 'job="odh-llmd-router", namespace=~"$namespace", inferenceservice=~"$llm"'
EN = 'job="odh-llm-engine", namespace=~"$namespace", inferenceservice=~"$llm"'


def llmd() -> dict[str, Any]:
    b = Board()
    b.row("Router and scheduler")
    b.add(timeseries("Router requests/s by endpoint and status", [(
        f"sum by (inferenceservice, endpoint, status) (rate(llmd_router_requests_total{{{RT}}}[{RATE}]))",
        "{{inferenceservice}} {{endpoint}} {{status}}")], "reqps"))
    dec = "llmd_router_decision_seconds_bucket"
    b.add(timeseries("Scheduling decision latency p50 / p99", [
        (quantile(0.5, dec, RT, "inferenceservice"), "p50 {{inferenceservice}}"),
        (quantile(0.99, dec, RT, "inferenceservice"), "p99 {{inferenceservice}}")], "s",
        "Filters, scorers and picker: the router's time to choose an engine."))
    b.add(timeseries("Decisions/s by pod and reason", [(
        f"sum by (engine_pod, reason) (rate(llmd_router_decisions_total{{{RT}}}[{RATE}]))", "{{engine_pod}} {{reason}}")], "reqps",
        "engine_pod: the engine chosen (the router's pod label, renamed by prometheus.yml: the target's pod is the router)."))
    b.add(timeseries("Flow control: queue depth and in flight", [
        (f"sum by (inferenceservice) (llmd_router_queue_depth{{{RT}}})", "queued {{inferenceservice}}"),
        (f"sum by (inferenceservice) (llmd_router_in_flight{{{RT}}})", "in flight {{inferenceservice}}")], "short"))
    b.add(timeseries("Rejected by flow control, by reason", [(
        f"sum by (reason) (rate(llmd_router_rejected_total{{{RT}}}[{RATE}]))", "{{reason}}")], "reqps"), w=8)
    b.add(timeseries("Retries and upstream errors", [
        (f"sum(rate(llmd_router_retries_total{{{RT}}}[{RATE}]))", "retries"),
        (f"sum by (engine_pod, kind) (rate(llmd_router_upstream_errors_total{{{RT}}}[{RATE}]))", "error {{engine_pod}} {{kind}}")],
        "reqps"), w=8)
    b.add(timeseries("Response cache hit ratio", [
        (f"sum(rate(llmd_router_cache_hits_total{{{RT}}}[{RATE}])) / (sum(rate(llmd_router_cache_hits_total{{{RT}}}[{RATE}])) "
         f"+ sum(rate(llmd_router_cache_misses_total{{{RT}}}[{RATE}])))", "hit ratio")], "percentunit", max_value=1), w=8)
    b.row("Engines as the router sees them (per pod)")
    b.add(timeseries("Router requests in flight per engine", [(f"llmd_router_pod_in_flight{{{RT}}}", "{{engine_pod}}")]), w=8)
    b.add(timeseries("Engine queue (scraped by the router)", [(f"llmd_router_pod_waiting{{{RT}}}", "{{engine_pod}}")]), w=8)
    b.add(timeseries("Engine KV usage (scraped by the router)", [(f"llmd_router_pod_kv_usage{{{RT}}}", "{{engine_pod}}")],
                     "percentunit", max_value=1), w=8)
    b.add(timeseries("Engines in the pool", [(f"llmd_router_pod_healthy{{{RT}}}", "{{engine_pod}}")], "bool",
                     "1 while the router's monitor keeps the engine in the pool."), w=24, h=6)
    b.row("Engines (vLLM /metrics)")
    b.add(timeseries("Running and waiting requests", [
        (f"vllm:num_requests_running{{{EN}}}", "running {{pod}}"),
        (f"vllm:num_requests_waiting{{{EN}}}", "waiting {{pod}}")]), w=8)
    b.add(timeseries("KV cache usage", [(f"vllm:kv_cache_usage_perc{{{EN}}}", "{{pod}}")], "percentunit",
                     max_value=1), w=8)
    b.add(timeseries("Prefix cache hit ratio (tokens)", [(
        f"sum by (pod) (rate(vllm:prefix_cache_hits_total{{{EN}}}[{RATE}])) / "
        f"sum by (pod) (rate(vllm:prefix_cache_queries_total{{{EN}}}[{RATE}]))", "{{pod}}")], "percentunit",
        "What prefix-aware routing buys: prompt tokens found in the engine's cache.", max_value=1), w=8)
    b.add(timeseries("Tokens/s", [
        (f"sum by (pod) (rate(vllm:prompt_tokens_total{{{EN}}}[{RATE}]))", "prompt {{pod}}"),
        (f"sum by (pod) (rate(vllm:generation_tokens_total{{{EN}}}[{RATE}]))", "generated {{pod}}")]), w=8)
    ttft = "vllm:time_to_first_token_seconds_bucket"
    b.add(timeseries("Time to first token p50 / p95", [
        (quantile(0.5, ttft, EN, "inferenceservice"), "p50 {{inferenceservice}}"),
        (quantile(0.95, ttft, EN, "inferenceservice"), "p95 {{inferenceservice}}")], "s"), w=8)
    b.add(timeseries("Finished requests/s", [(
        f"sum by (pod) (rate(vllm:request_success_total{{{EN}}}[{RATE}]))", "{{pod}}")], "reqps"), w=8)
    e2e = "vllm:e2e_request_latency_seconds_bucket"
    b.add(timeseries("End-to-end request latency p95 (vLLM)", [(quantile(0.95, e2e, EN, "inferenceservice"),
                                                              "{{inferenceservice}}")], "s",
                     "vLLM only: the simulator does not export it."), w=8)
    b.add(timeseries("Inter-token latency p95 (vLLM)", [(quantile(0.95, "vllm:inter_token_latency_seconds_bucket", EN,
                                                                 "inferenceservice"), "{{inferenceservice}}")], "s",
                     "vLLM only."), w=8)
    b.add(timeseries("Preemptions/s (vLLM)", [(f"sum by (pod) (rate(vllm:num_preemptions_total{{{EN}}}[{RATE}]))",
                                              "{{pod}}")], "reqps", "vLLM only: requests evicted for KV space."), w=8)
    return dashboard("odh-llmd", "ODH serving: LLM-D", "The LLM-D router and scheduler (llmd_router_*) and the "
                     "vLLM engines behind it (vllm:*). The KV-cache indexer runs inside the router and exports "
                     "no series of its own.", b,
                     [variable("namespace", 'label_values(up{job=~"odh-llmd-router|odh-llm-engine"}, namespace)',
                               "Namespace"),
                      variable("llm", 'label_values(up{job=~"odh-llmd-router|odh-llm-engine", namespace=~"$namespace"}, '
                               "inferenceservice)", "LLMInferenceService")], ["llm-d"])


DASHBOARDS = {"platform-overview.json": overview, "gateway.json": gateway, "model-servers.json": model_servers,
              "autoscalers.json": autoscalers, "llm-d.json": llmd}


def render_all() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    """Write every dashboard; ``--check``: exit 1 when a file differs from what this script writes."""
    stale = []
    for name, content in render_all().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != content:
                stale.append(name)
        else:
            path.write_text(content)
    if stale:
        print(f"out of date: {', '.join(stale)}: run python infra/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
