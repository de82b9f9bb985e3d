"""LLM-D mode: an LLMInferenceService in, the objects that serve it out (pure).

- ``{name}-kserve``: a Deployment of vLLM engines (prefix caching on, KV events over ZMQ), and
  ``{name}-kserve-prefill`` for prefill engines when ``spec.prefill`` asks for P/D disaggregation;
- ``{name}-kserve-workload-svc``: the engines' Service;
- ``{name}-inference-pool``: the Gateway API InferencePool selecting the engines, with our router/scheduler
  as its endpoint picker;
- ``{name}-kserve-router-scheduler`` + ``{name}-epp-service``: our router (``odh llmd serve``);
- ``{name}-kserve-route``: an HTTPRoute from the gateway to the pool.
Names follow KServe's LLMInferenceService controller so existing tooling finds them.

``spec.template`` is KServe's pod template for the engines: its ``main`` container's ``args`` are appended
to ours (e.g. ``--max-model-len``), its ``env`` added (e.g. ``VLLM_CPU_KVCACHE_SPACE``), and its
``command``/``image``, when given, replace vLLM's (e.g. ``python -m serving.llmd.sim_vllm``). The router's
engines are the ready pods its ``serving.odh.io/engine-selector`` selects: a platform lists them with
``with_engines``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

ENGINE_PORT = 8000
KV_EVENTS_PORT = 5557
ROUTER_PORT = 8080
MODEL_DIR = "/mnt/models"
RUNTIME_ENV_ANNOTATION = "serving.odh.io/runtime-env"
ROLE_LABEL = "llm-d.ai/role"
ENGINE_SELECTOR_ANNOTATION = "serving.odh.io/engine-selector"


@dataclass(frozen=True)
class LLMReconcileConfig:
    engine_image: str = "vllm/vllm-openai:latest"
    router_image: str = "odh-serving/llmd:0.1.0"
    storage_initializer_image: str = "kserve/storage-initializer:latest"
    runtime_env: str = "vllm-cpu"  # the local platform runs engines with this runtime environment's python
    block_size: int = 32
    gateway_name: str = "kserve-ingress-gateway"
    gateway_namespace: str = "kserve"


def reconcile_llm(llmisvc: dict[str, Any], config: LLMReconcileConfig | None = None) -> list[dict[str, Any]]:
    """The desired children of an admitted LLMInferenceService."""
    config = config or LLMReconcileConfig()
    name, namespace = llmisvc["metadata"]["name"], llmisvc["metadata"]["namespace"]
    spec = llmisvc["spec"]
    owner = _owner(llmisvc)
    workload = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llminferenceservice",
                "kserve.io/component": "workload"}
    prefill = spec.get("prefill")
    decode_role = "decode" if prefill else "both"
    children = [_engines(f"{name}-kserve", namespace, spec, spec["replicas"], {**workload, ROLE_LABEL: decode_role},
                         owner, config, prefill is not None)]
    if prefill:
        children.append(_engines(f"{name}-kserve-prefill", namespace, spec, prefill["replicas"],
                                 {**workload, ROLE_LABEL: "prefill"}, owner, config, True))
    children += [
        _service(f"{name}-kserve-workload-svc", namespace, workload, ENGINE_PORT, owner),
        _router(name, namespace, spec, workload, owner, config),
        _service(f"{name}-epp-service", namespace, _router_labels(name), ROUTER_PORT, owner),
        _pool(name, namespace, workload, owner),
        _route(name, namespace, owner, config),
    ]
    return children


def with_engines(router: dict[str, Any], engines: list[str]) -> dict[str, Any]:
    """The router Deployment with one ``--engine URL[=ZMQ][,role=ROLE]`` flag per engine (a new copy)."""
    out = copy.deepcopy(router)
    container = out["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], *(arg for engine in engines for arg in ("--engine", engine))]
    return out


def engine_flag(url: str, kv_events: str | None, role: str) -> str:
    """One ``--engine`` value as ``odh llmd serve`` reads it."""
    flag = f"{url}={kv_events}" if kv_events else url
    return f"{flag},role={role}" if role != "both" else flag


def _user_main_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = (spec.get("template") or {}).get("containers") or []
    return next((c for c in containers if c.get("name") == "main"), {})


def _engines(deployment: str, namespace: str, spec: dict[str, Any], replicas: int, labels: dict[str, str],
             owner: list[dict[str, Any]], config: LLMReconcileConfig, disaggregated: bool) -> dict[str, Any]:
    served = spec["model"]["name"]
    user = _user_main_container(spec)
    kv_events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{KV_EVENTS_PORT}",
                 "topic": f"kv@$(POD_IP):{ENGINE_PORT}@{served}"}
    args = ["--model", MODEL_DIR, "--served-model-name", served, "--port", str(ENGINE_PORT),
            "--enable-prefix-caching", "--block-size", str(config.block_size),
            "--kv-events-config", json.dumps(kv_events, separators=(",", ":"))]
    if disaggregated:
        args += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                                                    separators=(",", ":"))]
    args += [str(a) for a in user.get("args") or []]
    container: dict[str, Any] = {
        "name": "main",
        "image": user.get("image", config.engine_image),
        "command": list(user.get("command") or ["python", "-m", "vllm.entrypoints.openai.api_server"]),
        "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                *(e for e in user.get("env") or [] if e.get("name") != "POD_IP")],
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"},
                  {"name": "kv-events", "containerPort": KV_EVENTS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": ENGINE_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/health", "port": ENGINE_PORT}, "periodSeconds": 10,
                          "failureThreshold": 3},
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_DIR, "readOnly": True}],
    }
    # The runtime environment carries vLLM; a user's own command (another server, the simulator) brings its own.
    annotations = {} if user.get("command") else {RUNTIME_ENV_ANNOTATION: config.runtime_env}
    pod = {
        "metadata": {"labels": dict(labels), "annotations": annotations},
        "spec": _with_model(container, spec["model"]["uri"], config),
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(deployment, namespace, owner, labels=dict(labels)),
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)}, "template": pod}}


def _router(name: str, namespace: str, spec: dict[str, Any], workload: dict[str, str], owner: list[dict[str, Any]],
            config: LLMReconcileConfig) -> dict[str, Any]:
    labels = _router_labels(name)
    selector = ",".join(f"{k}={v}" for k, v in workload.items())
    container = {
        "name": "router",
        "image": config.router_image,
        "command": ["python", "-m", "serving.llmd.serve"],
        # The model's own tokenizer and chat template give the engine's token ids (prefix keys).
        "args": ["--port", str(ROUTER_PORT), "--host", "0.0.0.0", "--model", spec["model"]["name"],
                 "--block-size", str(config.block_size), "--tokenizer", MODEL_DIR],
        "ports": [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}],
        # Ready while at least one engine is in the pool; alive while it answers at all.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ROUTER_PORT}},
        "livenessProbe": {"httpGet": {"path": "/health", "port": ROUTER_PORT}},
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_DIR, "readOnly": True}],
    }
    # The platform turns the pods this selector matches into the router's --engine flags.
    annotations = {ENGINE_SELECTOR_ANNOTATION: selector}
    pod_spec = _with_model(container, spec["model"]["uri"], config)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(f"{name}-kserve-router-scheduler", namespace, owner, labels=labels, annotations=annotations),
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}


def _with_model(container: dict[str, Any], uri: str, config: LLMReconcileConfig) -> dict[str, Any]:
    """A pod spec running ``container`` with the model at ``MODEL_DIR``, fetched by KServe's storage initializer."""
    return {
        "initContainers": [{"name": "storage-initializer", "image": config.storage_initializer_image,
                            "args": [uri, MODEL_DIR],
                            "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_DIR}]}],
        "containers": [container],
        "volumes": [{"name": "model-cache", "emptyDir": {}}],
    }


def _router_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "llminferenceservice",
            "kserve.io/component": "router-scheduler"}


def _service(name: str, namespace: str, selector: dict[str, str], port: int, owner: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, owner),
            "spec": {"selector": dict(selector),
                     "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]}}


def _pool(name: str, namespace: str, workload: dict[str, str], owner: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": _meta(f"{name}-inference-pool", namespace, owner),
            "spec": {"selector": {"matchLabels": dict(workload)},
                     "targetPorts": [{"number": ENGINE_PORT}],
                     "endpointPickerRef": {"name": f"{name}-epp-service", "port": {"number": ROUTER_PORT}}}}


def _route(name: str, namespace: str, owner: list[dict[str, Any]], config: LLMReconcileConfig) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": _meta(f"{name}-kserve-route", namespace, owner),
            "spec": {
                "parentRefs": [{"name": config.gateway_name, "namespace": config.gateway_namespace}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": f"/{namespace}/{name}"}}],
                    "filters": [{"type": "URLRewrite",
                                 "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
                    "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                     "name": f"{name}-inference-pool", "port": ENGINE_PORT}],
                }],
            }}


def _owner(llmisvc: dict[str, Any]) -> list[dict[str, Any]]:
    uid = llmisvc["metadata"].get("uid")
    if not uid:  # Kubernetes requires a uid; a rendered manifest has none yet
        return []
    return [{"apiVersion": llmisvc["apiVersion"], "kind": "LLMInferenceService", "name": llmisvc["metadata"]["name"],
             "uid": uid, "controller": True, "blockOwnerDeletion": True}]


def _meta(name: str, namespace: str, owner: list[dict[str, Any]], **extra: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, **extra}
    if owner:
        meta["ownerReferences"] = owner
    return meta
