"""Namespace quotas on a real daemon: a ResourceQuota refuses what would breach it, naming it, and changes
nothing (the stored object and its running replicas stay as they were); within it things deploy; its
``status.used`` follows, and ``odh get resourcequota -o json`` shows it."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import IRIS_DIR, running_platform, wait_until, write_tiny_llm_dir

from serving.config import RUNTIMES_DIR_ENV
from serving.errors import AdmissionError, NotFoundError
from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

NS = "team-a"
V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
# KServe's default resources per predictor replica (ReconcileConfig.default_resources): 1 CPU, 2Gi.
HARD = {"pods": "2", "requests.cpu": "2", "limits.memory": "4Gi", "count/inferenceservices.serving.kserve.io": "2"}


def apply_tenancy_object(platform: LocalPlatform, obj: dict[str, Any]) -> dict[str, Any]:
    """A ResourceQuota or Secret through the client `odh apply -f` uses."""
    return platform.apply(obj)


def quota(name: str, hard: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": NS}, "spec": {"hard": hard}}


def iris(name: str = "iris", **predictor: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": name, "namespace": NS},
            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}, "minReplicas": 1, "maxReplicas": 1,
                                   **predictor}}}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("odh-tenancy")


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with running_platform(state) as client:
        apply_tenancy_object(client, quota("compute", HARD))
        client.apply(iris())
        client.wait_ready("InferenceService", NS, "iris", timeout=120)
        yield client


def used(platform: LocalPlatform, name: str = "compute") -> dict[str, str]:
    return platform.get("ResourceQuota", NS, name).get("status", {}).get("used", {})


def iris_replicas(platform: LocalPlatform) -> list[tuple[str, int]]:
    return sorted((p["name"], p["pid"]) for p in platform.pods() if p["deployment"] == "iris-predictor")


def answers(platform: LocalPlatform) -> list[int]:
    url = platform.get("InferenceService", NS, "iris")["status"]["url"]
    return httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY, timeout=30).raise_for_status().json()["predictions"]


def test_within_quota_it_deploys_and_the_quota_shows_hard_and_used(platform: LocalPlatform, state: Path) -> None:
    assert answers(platform) == [1, 1]
    expected = {"pods": "1", "requests.cpu": "1", "limits.memory": "2Gi", "count/inferenceservices.serving.kserve.io": "1"}
    wait_until(lambda: used(platform) == expected, timeout=30, what=f"quota status.used {expected}")
    listing = subprocess.run([sys.executable, "-m", "deployments.cli", "get", "resourcequota", "-n", NS, "-o", "json",
                              "--state-dir", str(state)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "NO_COLOR": "1"})
    assert listing.returncode == 0, listing.stderr
    [item] = json.loads(listing.stdout)["items"]
    assert (item["apiVersion"], item["kind"], item["metadata"]["name"]) == ("v1", "ResourceQuota", "compute")
    assert item["status"] == {"hard": dict(sorted(HARD.items())), "used": dict(sorted(expected.items()))}
    table = subprocess.run([sys.executable, "-m", "deployments.cli", "get", "quota", "-n", NS, "--state-dir", str(state)],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert table.stdout.split("\n")[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert "pods: 1/2" in table.stdout and "requests.cpu: 1/2" in table.stdout and "limits.memory: 2Gi/4Gi" in table.stdout


def test_a_breach_is_refused_naming_the_quota_and_changes_nothing(platform: LocalPlatform) -> None:
    before = platform.get("InferenceService", NS, "iris")
    replicas = iris_replicas(platform)
    assert len(replicas) == 1
    with pytest.raises(AdmissionError) as refused:
        platform.apply(iris(maxReplicas=3))  # two more replicas: 3 pods and 3 CPUs against 2 and 2
    assert refused.value.errors[0].field == "spec"
    assert refused.value.errors[0].reason.startswith(
        "exceeded quota: compute, requested: limits.memory=4Gi,pods=2,requests.cpu=2, "
        "used: limits.memory=2Gi,pods=1,requests.cpu=1, limited: limits.memory=4Gi,pods=2,requests.cpu=2")
    after = platform.get("InferenceService", NS, "iris")
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert platform.get("HorizontalPodAutoscaler", NS, "iris-predictor")["spec"]["maxReplicas"] == 1
    assert iris_replicas(platform) == replicas  # the same process: nothing restarted, nothing added
    assert answers(platform) == [1, 1]


def test_a_new_object_past_the_quota_is_not_stored(platform: LocalPlatform) -> None:
    big = iris("big")
    big["spec"]["predictor"]["sklearn"]["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"},
                                                       "limits": {"cpu": "2", "memory": "1Gi"}}
    with pytest.raises(AdmissionError, match=re.escape("exceeded quota: compute, requested: requests.cpu=2, used: requests.cpu=1")):
        platform.apply(big)
    with pytest.raises(NotFoundError):
        platform.get("InferenceService", NS, "big")
    assert not [p for p in platform.pods() if p["deployment"] == "big-predictor"]


def test_a_quota_below_usage_is_accepted_and_blocks_growth_only(platform: LocalPlatform) -> None:
    apply_tenancy_object(platform, quota("frozen", {"pods": "0"}))
    try:
        wait_until(lambda: used(platform, "frozen") == {"pods": "1"}, timeout=30, what="frozen's status.used")
        platform.apply(iris())  # the same again: no growth, accepted
        with pytest.raises(AdmissionError, match=re.escape("exceeded quota: frozen, requested: pods=1, used: pods=1, limited: pods=0")):
            platform.apply(iris("second"))
    finally:
        platform.delete("ResourceQuota", NS, "frozen")
    assert answers(platform) == [1, 1]


def test_a_bad_quota_is_refused_naming_the_field_and_nothing_is_stored(platform: LocalPlatform) -> None:
    with pytest.raises(AdmissionError) as refused:
        apply_tenancy_object(platform, quota("bad", {"requests.storage": "1Gi", "pods": "many"}))
    assert {e.field for e in refused.value.errors} == {"spec.hard[requests.storage]", "spec.hard[pods]"}
    with pytest.raises(NotFoundError):
        platform.get("ResourceQuota", NS, "bad")



# -- the LLM-D router's keys come from the LLMInferenceService's Secret ----------------------------------------


def llm_with_key_secret(model_dir: Path, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
        "metadata": {"name": "chat", "namespace": "default",
                     "annotations": {"security.opendatahub.io/api-key-secret": secret}},
        "spec": {"model": {"uri": str(model_dir), "name": "tiny-llama"}, "replicas": 1,
                 "template": {"containers": [{"name": "main", "command": ["python", "-m", "serving.llmd.sim_vllm"],
                                              "args": ["--max-model-len", "1024", "--num-gpu-blocks-override", "64"]}]}},
    }


def key_secret(name: str, **keys: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "serving.odh.io/api-key",
            "metadata": {"name": name, "namespace": "default"}, "stringData": keys}


def test_the_llm_router_takes_its_keys_from_the_secret_and_follows_its_changes(tmp_path: Path) -> None:
    first, second = "llm-" + secrets.token_hex(16), "llm-" + secrets.token_hex(16)
    (tmp_path / "tiny").mkdir()
    model_dir = write_tiny_llm_dir(tmp_path / "tiny")
    with running_platform(tmp_path / "state", env={RUNTIMES_DIR_ENV: str(tmp_path / "no-runtimes")}) as platform:
        apply_tenancy_object(platform, key_secret("llm-keys", ci=first))
        platform.apply(llm_with_key_secret(model_dir, "llm-keys"))
        url = platform.wait_ready("LLMInferenceService", "default", "chat", timeout=120)["status"]["url"] + "/v1/completions"
        body = {"model": "tiny-llama", "prompt": "hello", "max_tokens": 2}

        def status(key: str | None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.post(url, json=body, headers=headers, timeout=30).status_code

        assert status(None) == 401 and status("llm-wrong-" + secrets.token_hex(8)) == 401
        assert status(first) == 200
        # No key on any command line: the router reads a 0600 file in the 0700 state directory.
        router = next(p for p in platform.pods() if p["deployment"] == "chat-kserve-router-scheduler")
        args = platform.get("Deployment", "default", "chat-kserve-router-scheduler")["spec"]["template"]["spec"]["containers"][0]["args"]
        key_file = Path(args[args.index("--api-key-file") + 1])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert first not in " ".join(args) and first.encode() not in Path(f"/proc/{router['pid']}/cmdline").read_bytes()
        # A changed Secret reaches the running router (no new router process).
        apply_tenancy_object(platform, key_secret("llm-keys", ci=second))
        wait_until(lambda: status(second) == 200 and status(first) == 401, timeout=30, what="the rotated key in the router")
        assert [p["pid"] for p in platform.pods() if p["deployment"] == "chat-kserve-router-scheduler"] == [router["pid"]]
        # The Secret gone: the router refuses everyone rather than fall open.
        assert platform.delete("Secret", "default", "llm-keys")
        wait_until(lambda: status(second) == 401 and status(None) == 401, timeout=30, what="every key refused")
