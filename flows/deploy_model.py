"""``deploy_model``: phases 1-6, from a model file or URI to a live, registered KServe endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.naming import name_run, run_name
from serving.decisions import (
    Autoscaler,
    DecisionInputs,
    ModelKind,
    ModeOverride,
    PrimaryMetric,
    Sharing,
    Target,
    TrafficPattern,
)
from serving.errors import AdmissionError, FieldError
from serving.lifecycle import (
    ANALYSIS_WINDOW,
    CANARY_PERCENT,
    MAX_ERROR_RATE,
    MAX_LATENCY_RATIO,
    ROLLOUT_STRATEGY,
    SLO_ERROR_RATE,
    SLO_P95_MS,
    WATCH_ALIAS,
    LifecyclePolicy,
    Strategy,
)
from serving.policy import DEPLOYMENT_MODE_ANNOTATION, ServingPolicy
from tasks.configure import configure, measure_model
from tasks.deploy import deploy
from tasks.initialize import initialize
from tasks.register import register
from tasks.register_service import register_service
from tasks.upload import upload


@dataclass(frozen=True)
class Deployment:
    """What a deploy run leaves behind."""

    name: str
    namespace: str
    url: str
    model_name: str
    model_version: str
    storage_uri: str
    ready: bool


@flow(name="deploy-model", flow_run_name="deploy-{name}", log_prints=False)
def deploy_model(
    model_uri: str,
    name: str,
    namespace: str = "default",
    model_format: str | None = None,
    registered_model_name: str | None = None,
    alias: str | None = "champion",
    min_replicas: int = 1,
    max_replicas: int = 1,
    timeout_seconds: float | None = None,
    engine_args: list[str] | None = None,
    engine_env: dict[str, str] | None = None,
    traffic_pattern: TrafficPattern = "steady",
    scale_to_zero: bool = False,
    cache_optimization: bool = True,
    simple_setup: bool = True,
    complex_pipeline: bool = False,
    primary_metric: PrimaryMetric | None = None,
    scale_target: int | None = None,
    scale_down_delay_seconds: int | None = None,
    custom_metric: str | None = None,
    model_kind: ModelKind | None = None,
    deployment_mode: ModeOverride | None = None,
    autoscaler: Autoscaler | None = None,
    exposed: bool = True,
    token_auth: bool = False,
    target: Target = "embedded",
    accelerator_memory_gb: float | None = None,
    accelerator_sharing: Sharing = "whole",
    rollout_strategy: Strategy | None = None,
    canary_percent: int | None = None,
    analysis_seconds: float | None = None,
    max_error_rate: float | None = None,
    max_latency_ratio: float | None = None,
    slo_error_rate: float | None = None,
    slo_p95_ms: float | None = None,
    watch_alias: str | None = None,
    state_dir: str | None = None,
) -> Deployment:
    """Upload, register, configure, deploy, initialize and register the service of one model.

    Running it again for the same model bytes creates no second registry version and no second
    deployment. ``configure`` follows the serving decision trees; its artifact
    (``configure-{namespace}-{name}``) shows every input, branch taken and result.

    Args:
        model_uri: A local file or directory, file://, s3://, pvc://, http(s)://, hf://ORG/NAME[:REVISION],
            models:/NAME@ALIAS or models:/NAME/VERSION.
        name: The InferenceService (or LLMInferenceService) name.
        namespace: Namespace of the deployment.
        model_format: sklearn, mlflow or huggingface; detected from the files when empty.
        registered_model_name: MLflow registered model name (default: name).
        alias: Registry alias pointed at the version.
        min_replicas: Fewest replicas (LLMs: vLLM engines); scale_to_zero makes it 0.
        max_replicas: Most replicas; above min_replicas the autoscaler picks the count.
        timeout_seconds: Seconds to wait for Ready (default 300; 900 for an LLM).
        engine_args: LLMs: extra vLLM flags for every engine.
        engine_env: LLMs: environment for every engine.
        traffic_pattern: variable (unpredictable), steady (predictable) or bursty.
        scale_to_zero: Scale to zero replicas when idle (Serverless, KPA).
        cache_optimization: LLMs: route by shared prefixes (LLM-D); off picks Serverless on vLLM for a small LLM.
        simple_setup: Prefer the simplest mode (Standard) for steady traffic.
        complex_pipeline: The model runs in a graph or with a transformer/explainer.
        primary_metric: The scaling metric: concurrency, rps, cpu, memory or custom (default by mode).
        scale_target: Target per replica for the metric (cpu/memory: percent; default by metric).
        scale_down_delay_seconds: KPA scale-down delay, or the HPA/KEDA scale-down window.
        custom_metric: With primary_metric custom: the PromQL query to scale on.
        model_kind: llm or traditional; overrides what the format says.
        deployment_mode: Standard, Serverless or LLM-D; wins over the decision tree (ModelMesh is refused).
        autoscaler: kpa, hpa, keda, llm-d or none; wins over the decision tree.
        exposed: Reachable through the gateway; off labels it cluster-local.
        token_auth: Require an API key of the namespace.
        target: embedded (this machine's platform) or kubernetes (render the cluster manifest, deploy nothing here).
        accelerator_memory_gb: Kubernetes: one accelerator's memory in GB (default 80).
        accelerator_sharing: Kubernetes: whole GPUs, a MIG slice or a time-sliced share.
        rollout_strategy: How new versions go in: canary, direct or manual (default canary).
        canary_percent: The canary's traffic share while watched, 1-99 (default 20).
        analysis_seconds: Seconds a canary is watched (default 60).
        max_error_rate: Canary 5xx share that rolls it back, 0-1 (default 0.05).
        max_latency_ratio: Canary p95 / stable p95 that rolls it back (default 2).
        slo_error_rate: 5xx share past which operate alerts, 0-1 (default 0.05).
        slo_p95_ms: p95 latency in ms past which operate alerts (default 1000).
        watch_alias: Registry alias whose moves start a rollout (default: any new version).
        state_dir: The embedded platform's state directory (default ~/.odh).
    """
    decision_parameters = {k: v for k, v in locals().items() if k in DECISION_PARAMETERS}  # the parameters, as passed
    logger = get_run_logger()
    lifecycle = lifecycle_policy(rollout_strategy=rollout_strategy, canary_percent=canary_percent,
                                 analysis_seconds=analysis_seconds, max_error_rate=max_error_rate,
                                 max_latency_ratio=max_latency_ratio, slo_error_rate=slo_error_rate,
                                 slo_p95_ms=slo_p95_ms, watch_alias=watch_alias)
    uploaded = upload(model_uri, model_format, state=state_dir)
    logger.info("upload: %s (sha256 %s, format %s)", uploaded.uri, uploaded.digest[:12], uploaded.model_format)
    version = register(registered_model_name or name, uploaded, alias, state=state_dir)
    logger.info("register: %s version %s", version.name, version.version)
    name_run(run_name(name, version.version))
    inputs = decision_inputs(uploaded.model_format, measure_model(uploaded, state=state_dir), decision_parameters)
    policy = ServingPolicy(min_replicas=min_replicas, max_replicas=max(max_replicas, min_replicas),
                           engine_args=tuple(engine_args or ()), engine_env=dict(engine_env or {}))
    manifest = configure(name, namespace, version, uploaded.model_format, policy, inputs, lifecycle)
    llm = manifest["kind"] == "LLMInferenceService"
    mode = manifest["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE_ANNOTATION, "LLM-D")
    logger.info("configure: %s %s/%s (%s)", manifest["kind"], namespace, name, mode)
    if target == "kubernetes":
        # No Kubernetes API server here: the validated manifest is the result (in the configure artifact).
        logger.info("target kubernetes: nothing deployed here; apply the manifest from artifact configure-%s-%s",
                    namespace, name)
        return Deployment(name, namespace, "", version.name, version.version, version.source, False)
    applied = deploy(manifest, state=state_dir)
    logger.info("deploy: applied generation %s", applied["metadata"].get("generation"))
    live = initialize(applied, timeout_seconds or (900.0 if llm else 300.0), state=state_dir)
    logger.info("initialize: model fetched and loaded, %s replica(s) ready",
                live.get("status", {}).get("modelStatus", {}).get("copies", {}).get("totalCopies", "all"))
    url = register_service(version, live, state=state_dir)
    logger.info("register-service: %s is Ready at %s", name, url)
    result = Deployment(name, namespace, url, version.name, version.version, version.source, True)
    create_markdown_artifact(key=f"deploy-{namespace}-{name}".lower(), markdown=_summary(result, uploaded.digest, llm),
                             description=f"deploy-model {namespace}/{name}")
    return result


# The flow parameters that are inputs of the decision trees (serving/decisions.py DecisionInputs).
DECISION_PARAMETERS = frozenset(f.name for f in fields(DecisionInputs)) - {"model_format", "size_bytes", "metrics_server"}


def decision_inputs(model_format: str, size_bytes: int, parameters: Mapping[str, Any]) -> DecisionInputs:
    """The decision trees' inputs from deploy-model's parameters (unset ones keep the trees' defaults)."""
    values = {k: v for k, v in parameters.items() if k in DECISION_PARAMETERS}
    values["max_replicas"] = max(values.get("max_replicas", 1), values.get("min_replicas", 1))
    return DecisionInputs(model_format=model_format, size_bytes=size_bytes, **values)


_LIFECYCLE_PARAMETERS = {ROLLOUT_STRATEGY: "rollout_strategy", CANARY_PERCENT: "canary_percent",
                         ANALYSIS_WINDOW: "analysis_seconds", MAX_ERROR_RATE: "max_error_rate",
                         MAX_LATENCY_RATIO: "max_latency_ratio", SLO_ERROR_RATE: "slo_error_rate",
                         SLO_P95_MS: "slo_p95_ms", WATCH_ALIAS: "watch_alias"}


def lifecycle_policy(**values: Any) -> LifecyclePolicy:
    """The LifecyclePolicy of the flow's parameters (None: the default), checked as the annotations will be
    read back; an error names the parameter."""
    policy = LifecyclePolicy(**{k: v for k, v in values.items() if v is not None})
    try:
        return LifecyclePolicy.from_annotations(policy.annotations())
    except AdmissionError as exc:
        errors = []
        for error in exc.errors:
            annotation = error.field.removeprefix("metadata.annotations[").removesuffix("]")
            errors.append(FieldError(_LIFECYCLE_PARAMETERS.get(annotation, error.field), error.reason))
        raise AdmissionError(errors, kind="deploy-model parameters") from None


def _summary(result: Deployment, digest: str, llm: bool = False) -> str:
    try_it = (f"Try it: `openai.OpenAI(base_url=\"{result.url}/v1\", api_key=\"none\")` with model `{result.name}`"
              if llm else f"Try it: `odh predict {result.name} --namespace {result.namespace} --input request.json`")
    return "\n".join([
        f"# {result.namespace}/{result.name} is Ready",
        "",
        "| | |",
        "|---|---|",
        f"| URL | `{result.url}` |",
        f"| Model | `{result.model_name}` version {result.model_version} |",
        f"| Storage | `{result.storage_uri}` |",
        f"| sha256 | `{digest}` |",
        "",
        try_it,
    ])
