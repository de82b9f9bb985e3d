"""Runtime resolution by KServe's rules, and loading runtimes from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import RuntimeResolutionError
from serving.kserve import (
    ClusterServingRuntime,
    ServingRuntime,
    admit_inference_service,
    builtin_runtimes,
    load_runtimes,
    resolve_runtime,
)

UPSTREAM_RUNTIMES = Path(__file__).resolve().parents[1] / "fixtures" / "kserve" / "runtimes"


def _rt(name, formats, protocols=("v1",), created=None, cluster=True, **spec):
    cls = ClusterServingRuntime if cluster else ServingRuntime
    metadata = {"name": name}
    if created:
        metadata["creationTimestamp"] = created
    return cls.model_validate(
        {
            "metadata": metadata,
            "spec": {
                "supportedModelFormats": formats,
                "protocolVersions": list(protocols) if protocols is not None else None,
                "containers": [{"name": "kserve-container", "image": f"{name}:1"}],
                **spec,
            },
        }
    )


def _fmt(name="sklearn", version=None, auto=True, priority=None):
    out = {"name": name, "autoSelect": auto}
    if version is not None:
        out["version"] = version
    if priority is not None:
        out["priority"] = priority
    return out


def _isvc(fmt="sklearn", version=None, protocol=None, runtime=None):
    model = {"modelFormat": {"name": fmt}, "storageUri": "gs://b/m"}
    if version:
        model["modelFormat"]["version"] = version
    if protocol:
        model["protocolVersion"] = protocol
    if runtime:
        model["runtime"] = runtime
    return admit_inference_service(
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "m"},
         "spec": {"predictor": {"model": model}}}
    )


# ---------------------------------------------------------------- auto-selection ordering


def test_priority_beats_protocol_and_name():
    runtimes = [
        _rt("a-v1", [_fmt(priority=1)], protocols=("v1",)),
        _rt("z-v2", [_fmt(priority=5)], protocols=("v1", "v2")),
    ]
    chosen = resolve_runtime(_isvc(), [], runtimes)
    assert (chosen.name, chosen.kind) == ("z-v2", "ClusterServingRuntime")


def test_lowest_protocol_wins_among_equal_priorities():
    runtimes = [_rt("a", [_fmt(priority=1)], protocols=("v2",)), _rt("b", [_fmt(priority=1)], protocols=("v2", "v1"))]
    assert resolve_runtime(_isvc(protocol="v2"), [], runtimes).name == "b"


def test_newest_then_name_break_ties():
    runtimes = [
        _rt("b-old", [_fmt()], created="2024-01-01T00:00:00Z"),
        _rt("c-new", [_fmt()], created="2025-01-01T00:00:00Z"),
        _rt("a-new", [_fmt()], created="2025-01-01T00:00:00Z"),
    ]
    assert resolve_runtime(_isvc(), [], runtimes).name == "a-new"
    assert resolve_runtime(_isvc(), [], runtimes[:2]).name == "c-new"


def test_runtime_with_priority_beats_one_without():
    runtimes = [_rt("a", [_fmt()]), _rt("b", [_fmt(priority=0)])]
    assert resolve_runtime(_isvc(), [], runtimes).name == "b"


def test_namespace_runtimes_come_before_cluster_runtimes_whatever_the_priority():
    namespaced = [_rt("ns-rt", [_fmt(priority=1)], cluster=False)]
    cluster = [_rt("cluster-rt", [_fmt(priority=100)])]
    chosen = resolve_runtime(_isvc(), namespaced, cluster)
    assert (chosen.name, chosen.kind) == ("ns-rt", "ServingRuntime")


@pytest.mark.parametrize(
    "skipped",
    [
        _rt("disabled", [_fmt(priority=9)], disabled=True),
        _rt("multi", [_fmt(priority=9)], multiModel=True),
        _rt("manual", [_fmt(auto=False, priority=9)]),
        _rt("other-format", [_fmt("xgboost", priority=9)]),
        _rt("grpc-only", [_fmt(priority=9)], protocols=("grpc-v1",)),
        _rt("multinode", [_fmt(priority=9)], workerSpec={"containers": []}),
    ],
    ids=lambda rt: rt.name,
)
def test_ineligible_runtimes_are_skipped(skipped):
    assert resolve_runtime(_isvc(), [], [skipped, _rt("fallback", [_fmt()])]).name == "fallback"


def test_version_must_match_a_listed_version():
    runtimes = [_rt("v0", [_fmt(version="0")]), _rt("v1", [_fmt(version="1")])]
    assert resolve_runtime(_isvc(version="1"), [], runtimes).name == "v1"
    assert resolve_runtime(_isvc(), [], runtimes).name in {"v0", "v1"}  # no version asked: any
    with pytest.raises(RuntimeResolutionError) as caught:
        resolve_runtime(_isvc(version="2"), [], runtimes)
    assert caught.value.reason == "NoSupportingRuntime"
    assert "'sklearn'" in caught.value.message and "version 2" in caught.value.message and "protocol v1" in caught.value.message


def test_runtime_without_protocols_speaks_v1_and_v2_only():
    runtimes = [_rt("plain", [_fmt()], protocols=None)]
    assert resolve_runtime(_isvc(protocol="v2"), [], runtimes).name == "plain"
    with pytest.raises(RuntimeResolutionError):
        resolve_runtime(_isvc(protocol="grpc-v2"), [], runtimes)


def test_no_runtime_names_format_version_and_protocol():
    with pytest.raises(RuntimeResolutionError) as caught:
        resolve_runtime(_isvc("onnx", version="1", protocol="v2"), [], [])
    assert caught.value.reason == "NoSupportingRuntime"
    assert caught.value.message == "no runtime found to support model format 'onnx' version 1 with protocol v2"


# ---------------------------------------------------------------- explicit runtime


def test_explicit_runtime_prefers_the_namespace_and_ignores_auto_select():
    namespaced = [_rt("mine", [_fmt(auto=False)], cluster=False)]
    cluster = [_rt("mine", [_fmt()]), _rt("better", [_fmt(priority=9)])]
    chosen = resolve_runtime(_isvc(runtime="mine"), namespaced, cluster)
    assert (chosen.name, chosen.kind) == ("mine", "ServingRuntime")
    assert resolve_runtime(_isvc(runtime="mine"), [], cluster).kind == "ClusterServingRuntime"


@pytest.mark.parametrize(
    ("runtime", "isvc_kwargs", "reason", "words"),
    [
        (None, {}, "RuntimeNotRecognized", "'named'"),
        (_rt("named", [_fmt()], disabled=True), {}, "RuntimeDisabled", "disabled"),
        (_rt("named", [_fmt("xgboost")]), {}, "NoSupportingRuntime", "does not support mt:sklearn"),
        (_rt("named", [_fmt(version="1")]), {"version": "2"}, "NoSupportingRuntime", "mt:sklearn:2"),
        (_rt("named", [_fmt()], protocols=("v1",)), {"protocol": "v2"}, "NoSupportingRuntime", "protocol v2"),
        (_rt("named", [_fmt()], multiModel=True), {}, "NoSupportingRuntime", "multi-model"),
    ],
)
def test_explicit_runtime_errors(runtime, isvc_kwargs, reason, words):
    with pytest.raises(RuntimeResolutionError) as caught:
        resolve_runtime(_isvc(runtime="named", **isvc_kwargs), [], [runtime] if runtime else [])
    assert caught.value.reason == reason
    assert words in caught.value.message


# ---------------------------------------------------------------- loading


def test_upstream_runtimes_pick_kserve_defaults():
    cluster = load_runtimes(UPSTREAM_RUNTIMES)
    assert len(cluster) >= 15 and all(isinstance(rt, ClusterServingRuntime) for rt in cluster)
    assert resolve_runtime(_isvc("sklearn"), [], cluster).name == "kserve-sklearnserver"
    assert resolve_runtime(_isvc("xgboost"), [], cluster).name == "kserve-xgbserver"
    assert resolve_runtime(_isvc("tensorflow", version="2"), [], cluster).name == "kserve-tensorflow-serving"
    assert resolve_runtime(_isvc("triton"), [], cluster).name == "kserve-tritonserver"


def test_load_runtimes_reads_multi_document_files_and_skips_other_kinds(tmp_path):
    path = tmp_path / "rts.yaml"
    path.write_text(
        """
apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {name: ns-rt, namespace: team, creationTimestamp: "2024-05-01T10:00:00Z"}
spec:
  supportedModelFormats: [{name: sklearn, autoSelect: true}]
  containers: [{name: kserve-container, image: a}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: c-rt}
spec:
  supportedModelFormats: [{name: sklearn, autoSelect: true}]
  containers: [{name: kserve-container, image: b}]
"""
    )
    loaded = load_runtimes(path)
    assert [(type(rt).__name__, rt.name) for rt in loaded] == [("ServingRuntime", "ns-rt"), ("ClusterServingRuntime", "c-rt")]
    assert loaded[0].to_dict()["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"


def test_builtin_runtimes_serve_sklearn_and_mlflow():
    runtimes = builtin_runtimes()
    assert {rt.name for rt in runtimes} == {"odh-sklearnserver", "odh-mlflowserver"}
    assert resolve_runtime(_isvc("sklearn"), [], runtimes).name == "odh-sklearnserver"
    assert resolve_runtime(_isvc("sklearn", version="1", protocol="v2"), [], runtimes).name == "odh-sklearnserver"
    for version in ("1", "2", "3"):
        assert resolve_runtime(_isvc("mlflow", version=version, protocol="v2"), [], runtimes).name == "odh-mlflowserver"
    with pytest.raises(RuntimeResolutionError):
        resolve_runtime(_isvc("mlflow"), [], runtimes)  # protocol unset means v1, which it does not speak
    container = runtimes[0].spec.containers[0]
    assert container.name == "kserve-container" and container.image == "odh-serving/modelserver:0.1.0"
    assert container.command == ["python", "-m", "serving.runtimes.server"]
