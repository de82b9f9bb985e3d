"""The daemon's Serverless wiring that needs no process: the platform default mode and a revision's Deployment."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving.kserve import admit_inference_service, builtin_runtimes, reconcile, resolve_runtime
from serving.platform.local.daemon import Daemon
from serving.platform.local.deployments import template_hash
from serving.platform.local.pods import plan_pod
from serving.platform.local.serverless import revision_deployment
from serving.platform.local.store import KNATIVE_SERVICE, store_kind


def iris(annotations: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "default", "uid": "u-1", "annotations": annotations or {}},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://bucket/iris"}}}}


def children_of(daemon: Daemon, manifest: dict) -> list[dict]:
    isvc = admit_inference_service(manifest, config=daemon.admission)
    return reconcile(isvc, resolve_runtime(isvc, [], builtin_runtimes()), daemon.config)


def test_the_platform_default_mode_comes_from_config_yaml(tmp_path: Path) -> None:
    standard = Daemon(tmp_path / "standard")
    assert {c["kind"] for c in children_of(standard, iris())} >= {"Deployment", "Service"}
    standard.store.close()

    state = tmp_path / "serverless"
    state.mkdir()
    (state / "config.yaml").write_text(yaml.safe_dump({"deployment": {"defaultDeploymentMode": "Serverless"}}))
    serverless = Daemon(state)
    try:
        (ksvc,) = children_of(serverless, iris())
        assert store_kind(ksvc) == KNATIVE_SERVICE
        # The annotation still wins over the platform default.
        kinds = {c["kind"] for c in children_of(serverless, iris({"serving.kserve.io/deploymentMode": "Standard"}))}
        assert "Deployment" in kinds
    finally:
        serverless.store.close()


def test_a_revision_runs_as_its_own_deployment_with_the_revision_as_its_template_hash(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "state")
    try:
        (ksvc,) = children_of(daemon, iris({"serving.kserve.io/deploymentMode": "Serverless"}))
    finally:
        daemon.store.close()
    revision = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                "metadata": {"name": "iris-predictor-00001", "namespace": "default", "uid": "r-1",
                             "labels": {"serving.kserve.io/inferenceservice": "iris"},
                             "annotations": ksvc["spec"]["template"]["metadata"]["annotations"]},
                "spec": {**ksvc["spec"]["template"]["spec"], "containerConcurrency": 0, "timeoutSeconds": 300}}
    deployment = revision_deployment(revision)
    assert deployment["metadata"]["name"] == "iris-predictor-00001-deployment"
    assert template_hash(deployment) == "iris-predictor-00001"  # immutable: one replica set per revision
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "Revision"
    assert "containerConcurrency" not in deployment["spec"]["template"]["spec"]  # Knative's fields, not a PodSpec's
    plan = plan_pod(deployment["spec"]["template"])
    assert plan.storage_uri == "gs://bucket/iris"  # the storage initializer still fetches the model


def test_standard_traffic_weights_always_sum_to_100_for_the_gateway() -> None:
    from serving.platform.local.daemon import _whole_percents

    assert _whole_percents({"iris-predictor": 80, "iris-canary": 20}, "iris-predictor") == {"iris-predictor": 80, "iris-canary": 20}
    # The canary's Deployment is not running yet: the stable one takes all.
    assert _whole_percents({"iris-predictor": 80}, "iris-predictor") == {"iris-predictor": 100}
    # One Deployment and no weights (no canary): all of it.
    assert _whole_percents({"iris-predictor": 0}, "iris-predictor") == {"iris-predictor": 100}
    # A Deployment being removed after a promotion keeps 0.
    assert _whole_percents({"iris-predictor": 100, "iris-old-canary": 0}, "iris-predictor") == {"iris-predictor": 100, "iris-old-canary": 0}
    assert _whole_percents({"a": 1, "b": 1, "c": 1}, "x") == {"a": 34, "b": 33, "c": 33}
    assert _whole_percents({}, "x") == {}
