"""Serverless mode end to end as pure functions: InferenceService -> Knative Service -> Revisions ->
statuses -> InferenceService status, through KServe's canary sequences; rendered objects validate
against Knative's and KServe's CRD schemas."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from schemas import CRDS, assert_valid, sample_files

from serving.errors import AdmissionError, RuntimeResolutionError
from serving.knative import RevisionObservation, desired_revision, revision_status, service_status
from serving.kserve import (
    ReconcileConfig,
    ServerlessObservation,
    admit_inference_service,
    builtin_runtimes,
    load_runtimes,
    observe_serverless,
    reconcile,
    render,
    resolve_runtime,
)
from serving.kserve.types import InferenceService

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SERVERLESS = {"serving.kserve.io/deploymentMode": "Serverless"}
FIXTURES_RUNTIMES = CRDS.parent / "runtimes"


def _manifest(predictor: dict[str, Any] | None = None, annotations: dict[str, str] | None = None, uri: str = "gs://b/v1") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "isvc-uid", "annotations": {**SERVERLESS, **(annotations or {})}},
        "spec": {"predictor": {"sklearn": {"storageUri": uri}, **(predictor or {})}},
    }


def _ksvc(manifest: dict[str, Any], previous_status: dict[str, Any] | None = None) -> dict[str, Any]:
    isvc = admit_inference_service(manifest)
    (ksvc,) = reconcile(isvc, resolve_runtime(isvc, [], builtin_runtimes()), ReconcileConfig(), previous_status)
    return ksvc


# --------------------------------------------------------------------------- the Knative Service


def test_ksvc_carries_kserve_metadata_autoscaling_and_the_standard_pod():
    manifest = _manifest({"minReplicas": 0, "maxReplicas": 3, "scaleTarget": 5, "scaleMetric": "rps", "containerConcurrency": 2,
                          "timeout": 30, "labels": {"team": "a"}, "annotations": {"serving.knative.dev/rollout-duration": "60s"}},
                         {"autoscaling.knative.dev/min-scale": "7", "note": "kept"})
    ksvc = _ksvc(manifest)
    assert ksvc["apiVersion"] == "serving.knative.dev/v1" and ksvc["kind"] == "Service"
    assert ksvc["metadata"]["name"] == "iris-predictor" and ksvc["metadata"]["namespace"] == "ml"
    assert ksvc["metadata"]["labels"] == {"team": "a", "serving.kserve.io/inferenceservice": "iris", "component": "predictor"}
    # rollout-duration belongs on the Service itself, not on its revisions (KServe's managedKsvcAnnotations).
    assert ksvc["metadata"]["annotations"] == {"serving.knative.dev/rollout-duration": "60s"}
    assert ksvc["metadata"]["ownerReferences"][0]["uid"] == "isvc-uid"
    template = ksvc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    # minReplicas wins over a user's min-scale annotation (it is on KServe's disallowed list).
    assert {k: annotations[k] for k in annotations if k.startswith("autoscaling.")} == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev", "autoscaling.knative.dev/target": "5",
        "autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": "3"}
    assert annotations["note"] == "kept"
    assert annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == "gs://b/v1"
    spec = template["spec"]
    assert (spec["timeoutSeconds"], spec["responseStartTimeoutSeconds"], spec["containerConcurrency"]) == (30, 30, 2)
    # The same pod as Standard mode: the storage initializer fills the emptyDir the server reads.
    assert spec["initContainers"][0]["args"] == ["gs://b/v1", "/mnt/models"]
    assert spec["containers"][0]["volumeMounts"][0]["mountPath"] == "/mnt/models"
    standard_manifest = copy.deepcopy(manifest)
    standard_manifest["metadata"]["annotations"] = {}
    del standard_manifest["spec"]["predictor"]["scaleMetric"], standard_manifest["spec"]["predictor"]["scaleTarget"]
    standard = admit_inference_service(standard_manifest)
    deployment = reconcile(standard, resolve_runtime(standard, [], builtin_runtimes()), ReconcileConfig())[0]
    assert spec["containers"] == deployment["spec"]["template"]["spec"]["containers"]


def test_autoscaler_defaults_min_scale_one_no_max_and_a_chosen_class_is_kept():
    ksvc = _ksvc(_manifest(annotations={"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}))
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert "autoscaling.knative.dev/max-scale" not in annotations and "autoscaling.knative.dev/target" not in annotations


def test_configured_disallowed_lists_keep_annotations_and_labels_off_the_template():
    config = ReconcileConfig(service_annotation_disallowed=("secret/a",), service_label_disallowed=("private",))
    isvc = admit_inference_service({**_manifest(annotations={"secret/a": "x"}), "metadata": {
        "name": "iris", "labels": {"private": "1"}, "annotations": {**SERVERLESS, "secret/a": "x"}}})
    (ksvc,) = reconcile(isvc, resolve_runtime(isvc, [], builtin_runtimes()), config)
    assert "secret/a" not in ksvc["spec"]["template"]["metadata"]["annotations"]
    assert "private" not in ksvc["spec"]["template"]["metadata"]["labels"] and ksvc["metadata"]["labels"]["private"] == "1"


ROLLED_OUT = {"components": {"predictor": {"latestRolledoutRevision": "iris-predictor-00001"}}}


@pytest.mark.parametrize(
    ("predictor", "annotations", "status", "traffic"),
    [
        # First rollout: a canary percentage means nothing without a rolled-out revision.
        ({"canaryTrafficPercent": 20}, {}, None, [{"latestRevision": True, "percent": 100}]),
        ({"canaryTrafficPercent": 20}, {}, ROLLED_OUT,
         [{"latestRevision": True, "percent": 20},
          {"revisionName": "iris-predictor-00001", "latestRevision": False, "percent": 80, "tag": "prev"}]),
        ({"canaryTrafficPercent": 20}, {"serving.kserve.io/enable-tag-routing": "true"}, ROLLED_OUT,
         [{"latestRevision": True, "percent": 20, "tag": "latest"},
          {"revisionName": "iris-predictor-00001", "latestRevision": False, "percent": 80, "tag": "prev"}]),
        # Rollback: everything to the previous rolled-out revision.
        ({"canaryTrafficPercent": 0}, {}, ROLLED_OUT,
         [{"latestRevision": True, "percent": 0},
          {"revisionName": "iris-predictor-00001", "latestRevision": False, "percent": 100, "tag": "prev"}]),
        # Promotion: 100, or the field removed.
        ({"canaryTrafficPercent": 100}, {}, ROLLED_OUT, [{"latestRevision": True, "percent": 100}]),
        ({}, {"serving.kserve.io/enable-tag-routing": "true"}, ROLLED_OUT, [{"latestRevision": True, "percent": 100, "tag": "latest"}]),
    ],
)
def test_canary_traffic_follows_kserve(predictor, annotations, status, traffic):
    assert _ksvc(_manifest(predictor, annotations), status)["spec"]["traffic"] == traffic


SERVERLESS_SAMPLES = [
    (f"{path.name}:{doc['metadata']['name']}", doc)
    for path, docs in sample_files()
    for doc in docs or []
    if any(key in path.name for key in ("autoscaling__", "rollout", "canary", "v1beta1__sklearn", "v1beta1__custom__simple"))
]


@pytest.mark.parametrize("manifest", [m for _, m in SERVERLESS_SAMPLES], ids=[i for i, _ in SERVERLESS_SAMPLES])
def test_serverless_samples_render_valid_knative_services(manifest):
    doc = copy.deepcopy(manifest)
    doc.setdefault("metadata", {}).setdefault("annotations", {})["serving.kserve.io/deploymentMode"] = "Serverless"
    try:
        objects = render(doc, load_runtimes(FIXTURES_RUNTIMES))
    except (AdmissionError, RuntimeResolutionError) as exc:  # rejections are test_kserve_admission's and _runtimes' subject
        pytest.skip(str(exc))
    previous = {"components": {"predictor": {"latestRolledoutRevision": "x-predictor-00001"}}}
    for status in (None, previous):
        for obj in render(doc, load_runtimes(FIXTURES_RUNTIMES), previous_status=status) if status else objects:
            assert obj["kind"] == "Service" and obj["apiVersion"] == "serving.knative.dev/v1"
            assert_valid(obj, "knative_service.yaml", "v1")


def test_enough_serverless_samples_are_checked():
    assert len(SERVERLESS_SAMPLES) >= 8


def test_schema_check_catches_a_bad_ksvc():
    ksvc = _ksvc(_manifest())
    ksvc["spec"]["traffic"][0]["percent"] = "all"
    with pytest.raises(AssertionError):
        assert_valid(ksvc, "knative_service.yaml", "v1")


# --------------------------------------------------------------------------- the controller loop


class Cluster:
    """The daemon's part, by hand: store what the pure functions return, feed back what 'ran'."""

    def __init__(self) -> None:
        self.revisions: list[dict[str, Any]] = []
        self.ksvc_status: dict[str, Any] = {}
        self.isvc_status: dict[str, Any] = {}
        self.now = T0
        self.generation = 0

    def apply(self, manifest: dict[str, Any]) -> InferenceService:
        self.generation += 1
        manifest = copy.deepcopy(manifest)
        manifest["metadata"]["generation"] = self.generation
        isvc = admit_inference_service(manifest)
        ksvc = reconcile(isvc, resolve_runtime(isvc, [], builtin_runtimes()), ReconcileConfig(), self.isvc_status)[0]
        ksvc["metadata"].update(uid="ksvc-uid", generation=self.generation)
        revision, created = desired_revision(ksvc, self.revisions, now=self.now)
        if created:
            revision["metadata"].update(generation=1, creationTimestamp="2026-01-01T00:00:00Z")
            self.revisions.append(revision)
        self.ksvc, self.isvc = ksvc, isvc
        return isvc

    def observe(self, ready: dict[str, RevisionObservation]) -> dict[str, Any]:
        self.now += timedelta(seconds=1)
        for revision in self.revisions:
            name = revision["metadata"]["name"]
            if name in ready:
                revision["status"] = revision_status(revision, ready[name], revision.get("status"), now=self.now)
        self.ksvc_status = service_status(self.ksvc, self.revisions, self.ksvc_status, now=self.now)
        latest = self.ksvc_status.get("latestCreatedRevisionName")
        replicas = ready.get(latest or "", RevisionObservation(0, 0)).ready_replicas
        self.isvc_status = observe_serverless(self.isvc, ServerlessObservation(self.ksvc_status, replicas, replicas),
                                              self.isvc_status, now=self.now)
        return self.isvc_status


UP = RevisionObservation(desired_replicas=1, ready_replicas=1)
STARTING = RevisionObservation(desired_replicas=1, ready_replicas=0)
CRASHED = RevisionObservation(desired_replicas=1, ready_replicas=0, exit_code=1, failure_message="bad pickle")


def _split(status: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(t["revisionName"], t["percent"], t.get("tag", "")) for t in status["components"]["predictor"]["traffic"]]


def _predictor(status: dict[str, Any]) -> dict[str, Any]:
    return status["components"]["predictor"]


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def _first_rollout(cluster: Cluster) -> None:
    cluster.apply(_manifest())
    status = cluster.observe({"iris-predictor-00001": STARTING})
    assert _condition(status, "Ready")["status"] == "Unknown" and "url" not in status
    status = cluster.observe({"iris-predictor-00001": UP})
    assert _condition(status, "Ready")["status"] == "True"
    assert status["url"] == "http://iris.ml.example.com" and status["address"]["url"] == "http://iris.ml.svc.cluster.local"
    assert _predictor(status)["url"] == "http://iris-predictor.ml.example.com"
    assert _predictor(status)["latestRolledoutRevision"] == "iris-predictor-00001"
    assert _split(status) == [("iris-predictor-00001", 100, "")]
    assert status["modelStatus"]["states"] == {"activeModelState": "Loaded", "targetModelState": "Loaded"}


def test_canary_v1_then_v2_at_20_percent_then_promote():
    cluster = Cluster()
    _first_rollout(cluster)
    cluster.apply(_manifest({"canaryTrafficPercent": 20}, uri="gs://b/v2"))
    assert [r["metadata"]["name"] for r in cluster.revisions] == ["iris-predictor-00001", "iris-predictor-00002"]
    status = cluster.observe({"iris-predictor-00002": STARTING})
    # latestRevision means the latest *ready* revision: until v2 is up, all traffic stays on v1.
    assert _split(status) == [("iris-predictor-00001", 20, ""), ("iris-predictor-00001", 80, "prev")]
    assert _predictor(status)["latestCreatedRevision"] == "iris-predictor-00002"
    assert _predictor(status)["latestReadyRevision"] == "iris-predictor-00001"
    status = cluster.observe({"iris-predictor-00002": UP})
    assert _split(status) == [("iris-predictor-00002", 20, ""), ("iris-predictor-00001", 80, "prev")]
    assert _predictor(status)["latestRolledoutRevision"] == "iris-predictor-00001"
    assert _condition(status, "Ready")["status"] == "True"

    cluster.apply(_manifest(uri="gs://b/v2"))  # promotion: the field removed
    assert len(cluster.revisions) == 2  # a traffic-only change stamps no revision
    status = cluster.observe({})
    assert _split(status) == [("iris-predictor-00002", 100, "")]
    assert (_predictor(status)["latestRolledoutRevision"], _predictor(status)["previousRolledoutRevision"]) == (
        "iris-predictor-00002", "iris-predictor-00001")


def test_canary_v2_at_20_percent_then_rollback_to_zero_sends_everything_to_v1():
    cluster = Cluster()
    _first_rollout(cluster)
    cluster.apply(_manifest({"canaryTrafficPercent": 20}, {"serving.kserve.io/enable-tag-routing": "true"}, uri="gs://b/v2"))
    status = cluster.observe({"iris-predictor-00002": UP})
    assert _split(status) == [("iris-predictor-00002", 20, "latest"), ("iris-predictor-00001", 80, "prev")]
    urls = {t["tag"]: t["url"] for t in _predictor(status)["traffic"]}
    assert urls == {"latest": "http://latest-iris-predictor.ml.example.com", "prev": "http://prev-iris-predictor.ml.example.com"}
    cluster.apply(_manifest({"canaryTrafficPercent": 0}, {"serving.kserve.io/enable-tag-routing": "true"}, uri="gs://b/v2"))
    status = cluster.observe({})
    assert _split(status) == [("iris-predictor-00002", 0, "latest"), ("iris-predictor-00001", 100, "prev")]
    assert _predictor(status)["latestRolledoutRevision"] == "iris-predictor-00001"


def test_a_failing_latest_revision_leaves_the_previous_one_serving_and_says_so():
    cluster = Cluster()
    _first_rollout(cluster)
    cluster.apply(_manifest(uri="gs://b/broken"))
    status = cluster.observe({"iris-predictor-00002": CRASHED})
    assert _split(status) == [("iris-predictor-00001", 100, "")]
    assert _predictor(status)["latestReadyRevision"] == "iris-predictor-00001"
    assert _predictor(status)["latestRolledoutRevision"] == "iris-predictor-00001"
    ready = _condition(status, "PredictorReady")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert "iris-predictor-00002" in ready["message"] and "bad pickle" in ready["message"]
    assert _condition(status, "LatestDeploymentReady")["status"] == "False"
    assert status["url"] == "http://iris.ml.example.com"  # the route still answers on v1


def test_scaled_to_zero_stays_ready():
    cluster = Cluster()
    _first_rollout(cluster)
    status = cluster.observe({"iris-predictor-00001": RevisionObservation(desired_replicas=0, ready_replicas=0)})
    revision = cluster.revisions[0]["status"]
    assert revision["actualReplicas"] == 0 and revision["desiredReplicas"] == 0
    active = next(c for c in revision["conditions"] if c["type"] == "Active")
    assert (active["status"], active["reason"]) == ("False", "NoTraffic")
    assert _condition(status, "Ready")["status"] == "True"
    assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"


def test_serverless_status_validates_against_the_isvc_crd():
    cluster = Cluster()
    _first_rollout(cluster)
    cluster.apply(_manifest({"canaryTrafficPercent": 20}, {"serving.kserve.io/enable-tag-routing": "true"}, uri="gs://b/v2"))
    status = cluster.observe({"iris-predictor-00002": UP})
    obj = cluster.isvc.to_dict()
    obj["status"] = status
    assert_valid(obj, "serving.kserve.io_inferenceservices.yaml", "v1beta1")
    ksvc = {**cluster.ksvc, "status": cluster.ksvc_status}
    assert_valid(ksvc, "knative_service.yaml", "v1")

