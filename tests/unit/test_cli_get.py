"""``odh get``'s pure parts: kubectl's names for each kind, its columns and AGE, the List it prints.

Tables are built from realistic objects (what our reconcilers store, KServe's and Knative's status
shapes) at a fixed clock, and compared with the exact text kubectl would print.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from deployments.cli import app
from serving.platform.local.listing import (
    KINDS,
    KindInfo,
    UnknownKindError,
    api_object,
    build_list,
    format_age,
    human_duration,
    json_path,
    no_resources_message,
    pod_object,
    pod_status_text,
    resolve_kind,
    select,
    table,
)

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "kserve" / "crds"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CREATED = (NOW - timedelta(minutes=5, seconds=7)).strftime("%Y-%m-%dT%H:%M:%SZ")  # AGE 5m7s


def rendered(kind: str, objects: list[dict[str, Any]], **options: bool) -> str:
    return table(resolve_kind(kind), objects, NOW, **options).render()


# -- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "store_kind"), [
    ("isvc", "InferenceService"), ("InferenceServices", "InferenceService"), ("inferenceservice", "InferenceService"),
    ("inferenceservices.serving.kserve.io", "InferenceService"), ("inferenceservices.v1beta1.serving.kserve.io", "InferenceService"),
    ("llmisvc", "LLMInferenceService"), ("LLMInferenceService", "LLMInferenceService"),
    ("servingruntimes", "ServingRuntime"), ("clusterservingruntime", "ClusterServingRuntime"),
    ("ksvc", "Service.serving.knative.dev"), ("kservice", "Service.serving.knative.dev"),
    ("services.serving.knative.dev", "Service.serving.knative.dev"), ("service.serving.knative.dev", "Service.serving.knative.dev"),
    ("revisions", "Revision.serving.knative.dev"), ("rev", "Revision.serving.knative.dev"),
    ("revisions.serving.knative.dev", "Revision.serving.knative.dev"),
    ("deployments", "Deployment"), ("deploy", "Deployment"), ("deployments.apps", "Deployment"), ("Deployment", "Deployment"),
    ("services", "Service"), ("svc", "Service"), ("service", "Service"),
    ("pods", "Pod"), ("po", "Pod"), ("POD", "Pod"),
    ("hpa", "HorizontalPodAutoscaler"), ("horizontalpodautoscalers.autoscaling", "HorizontalPodAutoscaler"),
    ("so", "ScaledObject"), ("scaledobjects.keda.sh", "ScaledObject"),
    ("inferencepools", "InferencePool"), ("httproutes", "HTTPRoute"), ("httproutes.gateway.networking.k8s.io", "HTTPRoute"),
])
def test_every_kubectl_name_of_a_kind_resolves_to_its_store_kind(name: str, store_kind: str) -> None:
    assert resolve_kind(name).store_kind == store_kind


def test_an_unknown_kind_names_every_known_kind() -> None:
    with pytest.raises(UnknownKindError) as caught:
        resolve_kind("isvcs")
    message = str(caught.value)
    assert message.startswith('the server doesn\'t have a resource type "isvcs"')
    for info in KINDS:
        assert info.resource in message
    assert "inferenceservices.serving.kserve.io (isvc)" in message and "services.serving.knative.dev (ksvc, kservice)" in message


@pytest.mark.parametrize(("kind", "expected"), [
    ("isvc", "inferenceservice.serving.kserve.io/iris"), ("ksvc", "service.serving.knative.dev/iris"),
    ("svc", "service/iris"), ("po", "pod/iris"), ("deploy", "deployment.apps/iris"),
    ("hpa", "horizontalpodautoscaler.autoscaling/iris"), ("so", "scaledobject.keda.sh/iris"),
])
def test_output_name_is_kind_dot_group_slash_name(kind: str, expected: str) -> None:
    assert resolve_kind(kind).object_name("iris") == expected


def test_not_found_is_the_apiservers_message() -> None:
    assert resolve_kind("isvc").not_found("nope") == 'inferenceservices.serving.kserve.io "nope" not found'
    assert resolve_kind("pods").not_found("x") == 'pods "x" not found'
    assert resolve_kind("deploy").not_found("x") == 'deployments.apps "x" not found'


def without_schemas(text: str) -> str:
    """A CRD's YAML less its versions' openAPIV3 schemas (25,000 lines for one of them): milliseconds to parse."""
    kept: list[str] = []
    schema_indent: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if schema_indent is not None and (not line.strip() or indent > schema_indent):
            continue
        schema_indent = indent if line.strip() == "schema:" else None
        kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("crd", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.stem)
def test_custom_resource_columns_are_the_crds_printer_columns(crd: Path) -> None:
    documents = yaml.safe_load_all(without_schemas(crd.read_text()))
    definition = next(d for d in documents if d and d.get("kind") == "CustomResourceDefinition")
    names = definition["spec"]["names"]
    matching = [k for k in KINDS if k.kind == names["kind"] and k.group == definition["spec"]["group"]]
    if not matching:
        pytest.skip(f"{names['kind']} is not a kind the platform stores")
    info = matching[0]
    version = next(v for v in definition["spec"]["versions"] if v.get("storage"))
    assert info.version == version["name"]
    assert (info.plural, info.singular, set(info.short_names)) == (names["plural"], names["singular"], set(names.get("shortNames", [])))
    assert info.namespaced == (definition["spec"]["scope"] == "Namespaced")
    printer = version.get("additionalPrinterColumns") or [{"name": "Age", "jsonPath": ".metadata.creationTimestamp"}]
    ours = [c for c in info.columns if c.header != "NAME"]
    assert [(c.header, c.wide) for c in ours] == [(p["name"].upper(), p.get("priority", 0) > 0) for p in printer]
    assert [c.json_path or ".metadata.creationTimestamp" for c in ours] == [p["jsonPath"] for p in printer]


# -- AGE ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "expected"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (599, "9m59s"),
    (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"), (47 * 3600, "47h"),
    (48 * 3600, "2d"), (50 * 3600, "2d2h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"),
    (731 * 86400, "2y1d"), (8 * 365 * 86400, "8y"),
])
def test_age_is_kubectls_human_duration(seconds: int, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_age_of_a_timestamp_and_of_none() -> None:
    assert format_age(CREATED, NOW) == "5m7s"
    assert format_age(None, NOW) == format_age("yesterday", NOW) == "<unknown>"


# -- tables per kind ---------------------------------------------------------------------------------


def serverless_isvc(name: str = "iris", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": CREATED,
                     "annotations": {"serving.kserve.io/deploymentMode": "Serverless"}},
        "spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"modelFormat": {"name": "sklearn"}}}},
        "status": {
            "url": f"http://127.0.0.1:8080/serving/{namespace}/{name}",
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "components": {"predictor": {
                "latestCreatedRevision": f"{name}-predictor-00002", "latestReadyRevision": f"{name}-predictor-00002",
                "traffic": [
                    {"tag": "latest", "revisionName": f"{name}-predictor-00002", "percent": 20, "latestRevision": True},
                    {"tag": "prev", "revisionName": f"{name}-predictor-00001", "percent": 80, "latestRevision": False},
                ]}},
        },
    }


def test_isvc_table_has_kserves_columns_with_the_canary_split() -> None:
    standard = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": "wine", "namespace": "default", "creationTimestamp": CREATED},
                "status": {"url": "http://127.0.0.1:8080/serving/default/wine",
                           "conditions": [{"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}]}}
    assert rendered("isvc", [serverless_isvc(), standard]) == (
        "NAME   URL                                          READY   PREV   LATEST   PREVROLLEDOUTREVISION   LATESTREADYREVISION    AGE\n"
        "iris   http://127.0.0.1:8080/serving/default/iris   True    80     20       iris-predictor-00001    iris-predictor-00002   5m7s\n"
        "wine   http://127.0.0.1:8080/serving/default/wine   False                                                                  5m7s\n"
    )


def test_all_namespaces_puts_namespace_first_and_wide_adds_the_priority_columns() -> None:
    llm = {"kind": "LLMInferenceService", "metadata": {"name": "chat", "namespace": "team-a", "creationTimestamp": CREATED},
           "status": {"url": "http://gw/serving/team-a/chat", "addresses": [{"url": "http://gw/serving/team-a/chat"}],
                      "conditions": [{"type": "Ready", "status": "False", "reason": "MainWorkloadNotReady"}]}}
    assert rendered("llmisvc", [llm]).splitlines()[0].split() == ["NAME", "URL", "READY", "REASON", "AGE"]
    wide = rendered("llmisvc", [llm], wide=True, all_namespaces=True).splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "URL", "READY", "REASON", "AGE", "URLS"]
    assert wide[1].split() == ["team-a", "chat", "http://gw/serving/team-a/chat", "False", "MainWorkloadNotReady", "5m7s",
                               "http://gw/serving/team-a/chat"]


def test_ksvc_and_revision_tables_have_knatives_columns() -> None:
    ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "iris-predictor", "namespace": "default"},
            "status": {"url": "http://iris-predictor.default.example.com", "latestCreatedRevisionName": "iris-predictor-00002",
                       "latestReadyRevisionName": "iris-predictor-00001",
                       "conditions": [{"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}]}}
    assert rendered("ksvc", [ksvc]) == (
        "NAME             URL                                         LATESTCREATED          LATESTREADY            READY     REASON\n"
        "iris-predictor   http://iris-predictor.default.example.com   iris-predictor-00002   iris-predictor-00001   "
        "Unknown   RevisionMissing\n"
    )
    revision = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                "metadata": {"name": "iris-predictor-00001", "namespace": "default",
                             "labels": {"serving.knative.dev/configuration": "iris-predictor",
                                        "serving.knative.dev/configurationGeneration": "1"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}], "actualReplicas": 0, "desiredReplicas": 0}}
    assert rendered("rev", [revision]) == (
        "NAME                   CONFIG NAME      GENERATION   READY   REASON   ACTUAL REPLICAS   DESIRED REPLICAS\n"
        "iris-predictor-00001   iris-predictor   1            True             0                 0\n"
    )


def deployment(name: str, replicas: int | None, ready: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}},
                            "template": {"spec": {"containers": [{"name": "kserve-container", "image": "kserve/sklearnserver"}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default", "creationTimestamp": CREATED},
            "spec": spec, "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": ready, "availableReplicas": ready}}


def test_deployment_table_and_its_wide_columns() -> None:
    # Without spec.replicas (an HPA sets the count) READY's denominator is what runs.
    objects = [deployment("iris-predictor", None, 1), deployment("wine-predictor", 3, 3)]
    assert rendered("deploy", objects) == (
        "NAME             READY   UP-TO-DATE   AVAILABLE   AGE\n"
        "iris-predictor   1/2     2            1           5m7s\n"
        "wine-predictor   3/3     2            3           5m7s\n"
    )
    wide = rendered("deployments", objects, wide=True).splitlines()
    assert wide[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["kserve-container", "kserve/sklearnserver", "app=iris-predictor"]


def test_service_table() -> None:
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "iris-predictor", "namespace": "default", "creationTimestamp": CREATED},
               "spec": {"type": "ClusterIP", "selector": {"app": "isvc.iris-predictor"},
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}
    assert rendered("svc", [service]) == (
        "NAME             TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n"
        "iris-predictor   ClusterIP   <none>       <none>        80/TCP    5m7s\n"
    )
    assert rendered("svc", [service], wide=True).splitlines()[1].split()[-1] == "app=isvc.iris-predictor"


def hpa(current: int | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "iris-predictor", "namespace": "default", "creationTimestamp": CREATED},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-predictor"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "metrics": [{"type": "Resource",
                              "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        "status": {"currentReplicas": 2},
    }
    if current is not None:
        obj["status"]["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]
    return obj


def test_hpa_table_shows_current_against_target() -> None:
    assert rendered("hpa", [hpa(45)]) == (
        "NAME             REFERENCE                   TARGETS        MINPODS   MAXPODS   REPLICAS   AGE\n"
        "iris-predictor   Deployment/iris-predictor   cpu: 45%/80%   1         3         2          5m7s\n"
    )
    assert "cpu: <unknown>/80%" in rendered("hpa", [hpa(None)])


def test_scaledobject_runtime_pool_and_route_tables() -> None:
    scaled = {"kind": "ScaledObject", "metadata": {"name": "iris-predictor", "namespace": "default", "creationTimestamp": CREATED},
              "spec": {"scaleTargetRef": {"name": "iris-predictor"}, "minReplicaCount": 1, "maxReplicaCount": 4,
                       "triggers": [{"type": "prometheus"}]},
              "status": {"scaleTargetKind": "apps/v1.Deployment", "conditions": [{"type": "Ready", "status": "True"},
                                                                                 {"type": "Active", "status": "False"}]}}
    assert rendered("so", [scaled]).splitlines()[1].split() == [
        "iris-predictor", "apps/v1.Deployment", "iris-predictor", "1", "4", "prometheus", "True", "False", "5m7s"]
    runtime = {"kind": "ClusterServingRuntime", "metadata": {"name": "kserve-sklearnserver", "namespace": "", "creationTimestamp": CREATED},
               "spec": {"supportedModelFormats": [{"name": "sklearn"}, {"name": "xgboost"}], "containers": [{"name": "kserve-container"}]}}
    assert rendered("clusterservingruntimes", [runtime], all_namespaces=True) == (
        "NAME                   DISABLED   MODELTYPE   CONTAINERS         AGE\n"
        "kserve-sklearnserver              sklearn     kserve-container   5m7s\n"
    )
    pool = {"kind": "InferencePool", "metadata": {"name": "chat-pool", "namespace": "default", "creationTimestamp": CREATED}}
    assert rendered("inferencepools", [pool]) == "NAME        AGE\nchat-pool   5m7s\n"
    route = {"kind": "HTTPRoute", "metadata": {"name": "chat", "namespace": "default"}, "spec": {"hostnames": ["chat.example.com"]}}
    # A CRD's date column with no value is blank, as the apiserver's table convertor leaves it.
    assert rendered("httproutes", [route]).splitlines()[1].split() == ["chat", '["chat.example.com"]']


# -- pods from replicas ------------------------------------------------------------------------------


def replica(state: str, ready: bool = False, restarts: int = 0, message: str = "") -> dict[str, Any]:
    return {"namespace": "default", "deployment": "iris-predictor", "name": f"iris-predictor-abc123-{state.lower()}",
            "state": state, "ready": ready, "port": 40123, "pid": 4242 if state != "Pending" else None, "restarts": restarts,
            "failures_before_ready": 0, "message": message, "created": (NOW - timedelta(seconds=42)).timestamp()}


@pytest.mark.parametrize(("state", "ready", "phase", "status", "ready_text"), [
    ("Pending", False, "Pending", "ContainerCreating", "0/1"),
    ("Initializing", False, "Pending", "Init:0/1", "0/1"),
    ("Starting", False, "Running", "Running", "0/1"),
    ("Ready", True, "Running", "Running", "1/1"),
    ("CrashLoopBackOff", False, "Running", "CrashLoopBackOff", "0/1"),
    ("Terminating", False, "Running", "Terminating", "0/1"),
    ("Stopped", False, "Succeeded", "Completed", "0/1"),
])
def test_each_replica_state_is_the_pod_kubectl_would_show(state: str, ready: bool, phase: str, status: str, ready_text: str) -> None:
    pod = pod_object(replica(state, ready), labels={"app": "isvc.iris-predictor"}, node_name="laptop")
    assert pod["status"]["phase"] == phase
    assert pod_status_text(pod) == status
    row = table(resolve_kind("pods"), [pod], NOW).rows[0]
    assert row == [f"iris-predictor-abc123-{state.lower()}", ready_text, status, "0", "42s"]


def test_a_pod_carries_kubernetes_fields_and_our_extras_as_annotations() -> None:
    pod = pod_object(replica("CrashLoopBackOff", restarts=3, message="exit code 1"),
                     labels={"app": "isvc.iris-predictor"}, node_name="laptop")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["labels"] == {"app": "isvc.iris-predictor"}
    assert pod["metadata"]["creationTimestamp"] == "2025-06-01T11:59:18Z"
    assert pod["status"]["podIP"] == "127.0.0.1"
    (container,) = pod["status"]["containerStatuses"]
    assert container["restartCount"] == 3 and container["ready"] is False
    assert container["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "exit code 1"}}
    annotations = pod["metadata"]["annotations"]
    assert annotations["serving.odh.io/port"] == "40123" and annotations["serving.odh.io/pid"] == "4242"
    assert annotations["serving.odh.io/deployment"] == "iris-predictor"
    assert annotations["serving.odh.io/replica-state"] == "CrashLoopBackOff"
    wide = table(resolve_kind("po"), [pod], NOW, wide=True)
    assert wide.headers[-4:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert wide.rows[0][-4:] == ["127.0.0.1", "laptop", "<none>", "<none>"]
    assert wide.rows[0][3] == "3"


def test_a_pod_without_a_creation_time_has_an_unknown_age() -> None:
    info = replica("Ready", True)
    del info["created"]
    assert table(resolve_kind("pods"), [pod_object(info)], NOW).rows[0][-1] == "<unknown>"


# -- List, objects, selection ------------------------------------------------------------------------


def test_build_list_is_what_kubectl_get_o_json_prints() -> None:
    assert build_list([{"kind": "Pod"}]) == {"apiVersion": "v1", "items": [{"kind": "Pod"}], "kind": "List",
                                             "metadata": {"resourceVersion": ""}}
    assert build_list([])["items"] == []


def test_api_object_gives_the_api_kind_and_version_not_the_store_key() -> None:
    knative: KindInfo = resolve_kind("ksvc")
    stored = {"kind": "Service.serving.knative.dev", "apiVersion": "serving.knative.dev/v1", "metadata": {"name": "x"}}
    assert api_object(knative, stored) == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "x"}}
    # A stored object from another group's version keeps none of it; one of its own group keeps its version.
    assert api_object(knative, {"kind": "Service", "apiVersion": "v1"})["apiVersion"] == "serving.knative.dev/v1"
    llm = api_object(resolve_kind("llmisvc"), {"kind": "LLMInferenceService", "apiVersion": "serving.kserve.io/v1alpha1"})
    assert llm["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert api_object(resolve_kind("deploy"), {"kind": "Deployment"})["apiVersion"] == "apps/v1"


def test_select_filters_by_namespace_and_name_and_sorts() -> None:
    objects = [serverless_isvc("b", "ns2"), serverless_isvc("a", "ns2"), serverless_isvc("c", "ns1")]
    assert [o["metadata"]["name"] for o in select(objects, None)] == ["c", "a", "b"]
    assert [o["metadata"]["name"] for o in select(objects, "ns2")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in select(objects, "ns2", "b")] == ["b"]
    assert select(objects, "ns1", "b") == []


def test_json_path_forms_used_by_printer_columns() -> None:
    isvc = serverless_isvc()
    assert json_path(isvc, ".status.components.predictor.traffic[?(@.tag=='prev')].percent") == [80]
    assert json_path(isvc, ".status.components.predictor.traffic[?(@.latestRevision==true)].revisionName") == ["iris-predictor-00002"]
    assert json_path(isvc, ".status.components.predictor.traffic[*].tag") == ["latest", "prev"]
    assert json_path({"metadata": {"labels": {"a.b/c": "v"}}}, ".metadata.labels['a\\.b/c']") == ["v"]
    assert json_path(isvc, ".status.missing.deeper") == []
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        json_path(isvc, "status..x")


def test_no_resources_message_is_kubectls() -> None:
    assert no_resources_message(resolve_kind("isvc"), "default") == "No resources found in default namespace."
    assert no_resources_message(resolve_kind("isvc"), None) == "No resources found"
    assert no_resources_message(resolve_kind("clusterservingruntimes"), "default") == "No resources found"


# -- the command's own checks, before any daemon is asked --------------------------------------------


def odh(*args: str, state: Path) -> Result:
    return CliRunner().invoke(app, [*args, "--state-dir", str(state)])


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_odh_get_of_an_unknown_kind_is_one_line_naming_the_known_kinds(tmp_path: Path) -> None:
    assert_one_line_error(odh("get", "widgets", state=tmp_path), '"widgets"', "inferenceservices.serving.kserve.io (isvc)", "pods (po)")


def test_odh_get_with_an_unknown_output_format_names_the_allowed_ones(tmp_path: Path) -> None:
    assert_one_line_error(odh("get", "isvc", "-o", "xml", state=tmp_path), '"xml"', "json,name,wide,yaml")


def test_odh_get_a_name_across_all_namespaces_is_refused(tmp_path: Path) -> None:
    assert_one_line_error(odh("get", "isvc", "iris", "-A", state=tmp_path), "across all namespaces")


def test_odh_get_without_a_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    assert_one_line_error(odh("get", "isvc", state=tmp_path), "odh up")
