"""The serving decision trees (``docs/decision-trees.md``) as one pure function, ``decide``.

``configure`` asks four questions about a model and how it will be used: which deployment mode, which
autoscaling strategy, which resources, which networking. ``decide`` walks the document's branches in the
order it writes them and records every step as (input, value, branch taken, result), so the run's
artifact can show why. An explicit override (``deployment_mode``, ``autoscaler``) wins over the tree and
the step says so; inputs that contradict each other are refused with an error naming both and the fix.

Every leaf has a stable id (``LEAVES``): the table tests assert each one is reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from serving.errors import AdmissionError, FieldError
from serving.lifecycle import LifecyclePolicy
from serving.policy import LLM_FORMATS, MODEL_FORMATS, ServingPolicy

ModelKind = Literal["llm", "traditional"]
TrafficPattern = Literal["variable", "steady", "bursty"]
PrimaryMetric = Literal["concurrency", "rps", "cpu", "memory", "custom"]
ModeOverride = Literal["Standard", "Serverless", "LLM-D", "ModelMesh"]
Mode = Literal["Standard", "Serverless", "LLM-D", "LLM-D distributed"]
Autoscaler = Literal["kpa", "hpa", "keda", "llm-d", "none"]
Target = Literal["embedded", "kubernetes"]
Sharing = Literal["whole", "mig", "time-sliced"]
Decision = Literal["model", "mode", "autoscaling", "resources", "networking"]

GB = 1_000_000_000  # accelerator memory is sold in decimal gigabytes
GIB = 1024**3
# Weights plus room for the KV cache and activations: what an engine needs beyond the bytes on disk.
LLM_MEMORY_FACTOR = 1.2
DEFAULT_ACCELERATOR_GB = 80.0  # an A100/H100 80 GB when the Kubernetes target does not say
ACCELERATORS_PER_NODE = 8
SMALL_LLM_GB = 20.0  # the flowchart: under ~20 GB Serverless (or Standard) is acceptable without cache optimization
# MIG profiles of one GPU: compute slices and the share of its memory each gets (1g.10gb ... 7g.80gb on 80 GB).
MIG_PROFILES = ((1, 1 / 8), (2, 2 / 8), (3, 4 / 8), (7, 1.0))
# Knative's and Kubernetes' defaults, written out so the artifact shows the numbers in force.
DEFAULT_TARGETS: dict[str, int] = {"concurrency": 100, "rps": 200, "cpu": 80, "memory": 80, "custom": 1}
KEDA_RPS_TARGET = 50  # requests per second per replica before KEDA adds one (a model server's comfortable load)
BURSTY_SCALE_DOWN_DELAY_S = 60  # keep capacity between bursts instead of scaling down and cold-starting again
HPA_SCALE_DOWN_WINDOW_S = 300  # Kubernetes' default scale-down stabilization window
K8S_METRICS_SERVER = "http://prometheus-operated.monitoring.svc:9090"
EMBEDDED_METRICS_SERVER = "http://127.0.0.1:8080"  # the gateway's /metrics (the embedded autoscaler reads it directly)
LLMD_TARGET_WAITING = 2  # queued requests per engine (serving.autoscaling.llm.EngineThresholds' default)
LLMD_TARGET_KV = 0.75

VISIBILITY_LABEL = "networking.kserve.io/visibility"
CLUSTER_LOCAL = "cluster-local"
AUTH_ANNOTATION = "security.opendatahub.io/enable-auth"
KNATIVE_CLASS = "autoscaling.knative.dev/class"
KNATIVE_METRIC = "autoscaling.knative.dev/metric"
KNATIVE_TARGET = "autoscaling.knative.dev/target"
KNATIVE_SCALE_DOWN_DELAY = "autoscaling.knative.dev/scale-down-delay"
KPA_CLASS = "kpa.autoscaling.knative.dev"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"

LEAVES: dict[str, str] = {
    "mode.override": "deployment_mode given: it wins over the tree",
    "mode.llm.several.one-node": "LLM needing several accelerators within one node -> LLM-D distributed (tensor parallel)",
    "mode.llm.several.multi-node": "LLM exceeding one node -> LLM-D distributed (multi-node)",
    "mode.llm.one.cache": "LLM fitting one accelerator, cache optimization wanted -> LLM-D",
    "mode.llm.one.no-cache": "LLM fitting one accelerator, no cache optimization, under ~20 GB -> Serverless with an accelerator",
    "mode.llm.one.no-cache.large": "LLM fitting one accelerator, no cache optimization, 20-70 GB -> LLM-D single node",
    "mode.traditional.variable.scale-to-zero": "variable traffic, scale to zero -> Serverless",
    "mode.traditional.variable.always-on": "variable traffic, no scale to zero -> Standard",
    "mode.traditional.steady.simple": "steady traffic, simple setup -> Standard",
    "mode.traditional.steady.pipeline.scale-to-zero": "steady traffic, complex pipeline, scale to zero -> Serverless",
    "mode.traditional.steady.pipeline": "steady traffic, complex pipeline -> Standard (preferred)",
    "mode.traditional.steady.other": "steady traffic, neither simple nor a pipeline -> Standard",
    "mode.traditional.bursty": "bursty traffic -> Serverless",
    "mode.scale-to-zero.serverless": "the tree chose Standard but scale to zero must be Serverless",
    "autoscaling.llm-d": "LLM-D: the engine scaler on queue depth and KV-cache use",
    "autoscaling.scale-to-zero.kpa": "scale to zero -> Serverless -> KPA (target, scale-down delay, min 0/max)",
    "autoscaling.rps.kpa": "request rate on Serverless -> KPA on rps",
    "autoscaling.rps.keda": "request rate on Standard -> HPA on requests per second (a KEDA ScaledObject)",
    "autoscaling.resource.hpa": "cpu or memory -> HPA (target %, min/max)",
    "autoscaling.custom.keda": "custom metric -> HPA on a custom metric (KEDA, metric, target, metrics source)",
    "autoscaling.concurrency.kpa": "concurrency on Serverless -> KPA on concurrency",
    "autoscaling.override": "autoscaler given: it wins over the tree",
    "resources.traditional": "CPU and memory sized from the format and size on disk",
    "resources.llm.cpu": "embedded target: no accelerator, vLLM on CPU",
    "resources.llm.gpu": "one whole GPU",
    "resources.llm.tensor-parallel": "several GPUs in one node, tensor parallel",
    "resources.llm.multi-node": "several nodes: tensor parallel within, pipeline parallel across",
    "resources.llm.mig": "a MIG slice of one GPU",
    "resources.llm.time-sliced": "a time-sliced share of one GPU",
    "networking.exposed": "exposed through the gateway",
    "networking.cluster-local": "cluster-local: not exposed",
    "networking.auth.on": "token auth on",
    "networking.auth.off": "token auth off",
}

# "What each mode gives" (decision-trees.md), for the artifact's explanation of the chosen mode.
MODE_FEATURES: dict[str, dict[str, str]] = {
    "scale to zero": {"Standard": "no", "Serverless": "yes", "LLM-D": "yes"},
    "accelerators": {"Standard": "yes", "Serverless": "yes", "LLM-D": "yes"},
    "autoscaling": {"Standard": "HPA", "Serverless": "KPA", "LLM-D": "custom (queue, KV cache)"},
    "cache-aware routing": {"Standard": "no", "Serverless": "no", "LLM-D": "yes"},
    "distributed inference": {"Standard": "manual", "Serverless": "manual", "LLM-D": "built in"},
    "traffic splitting": {"Standard": "manual (raw canary)", "Serverless": "built in", "LLM-D": "built in"},
    "InferenceGraph": {"Standard": "yes", "Serverless": "yes", "LLM-D": "no"},
    "multi-model serving": {"Standard": "yes", "Serverless": "yes", "LLM-D": "limited"},
    "prefill/decode disaggregation": {"Standard": "no", "Serverless": "no", "LLM-D": "yes"},
    "setup": {"Standard": "simple", "Serverless": "moderate", "LLM-D": "advanced"},
    "best for": {"Standard": "traditional ML, steady traffic", "Serverless": "variable traffic", "LLM-D": "large LLMs"},
}


@dataclass(frozen=True)
class DecisionInputs:
    """The "Inputs" table of decision-trees.md, plus the explicit overrides and the target."""

    model_format: str
    size_bytes: int
    model_kind: ModelKind | None = None  # None: detected from the format
    target: Target = "embedded"
    accelerator_memory_gb: float | None = None  # None: none on embedded, 80 GB on Kubernetes
    accelerator_sharing: Sharing = "whole"
    traffic_pattern: TrafficPattern = "steady"
    scale_to_zero: bool = False
    cache_optimization: bool = True
    simple_setup: bool = True
    complex_pipeline: bool = False
    primary_metric: PrimaryMetric | None = None  # None: by mode
    scale_target: int | None = None
    scale_down_delay_seconds: int | None = None
    custom_metric: str | None = None  # a PromQL query, with primary_metric="custom"
    metrics_server: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    deployment_mode: ModeOverride | None = None
    autoscaler: Autoscaler | None = None
    exposed: bool = True
    token_auth: bool = False


@dataclass(frozen=True)
class Step:
    """One branch taken: which decision, on which input (and its value), the branch, what it gave."""

    decision: Decision
    input: str
    value: str
    branch: str
    result: str
    leaf: str | None = None


@dataclass(frozen=True)
class Autoscaling:
    strategy: Autoscaler
    metric: str  # concurrency | rps | cpu | memory | custom | queue+kv
    target: float | None
    min_replicas: int
    max_replicas: int
    scale_down_seconds: int | None = None  # KPA scale-down delay, or the HPA's scale-down stabilization window
    query: str | None = None
    metrics_server: str | None = None


@dataclass(frozen=True)
class Resources:
    requests: dict[str, str]
    limits: dict[str, str]
    accelerator: str | None = None  # the extended resource name (nvidia.com/gpu, nvidia.com/mig-1g.10gb, ...)
    accelerators: int = 0  # per replica (per node when multi-node)
    tensor_parallel: int = 1
    pipeline_parallel: int = 1  # nodes


@dataclass(frozen=True)
class ServingDecision:
    inputs: DecisionInputs
    model_kind: ModelKind
    mode: Mode
    autoscaling: Autoscaling
    resources: Resources
    exposed: bool
    token_auth: bool
    steps: tuple[Step, ...]
    blocked: str | None = None  # why the target cannot run it (None: it can)
    accelerated_isvc: bool = False  # an LLM as an InferenceService on the vLLM runtime

    @property
    def leaves(self) -> frozenset[str]:
        return frozenset(s.leaf for s in self.steps if s.leaf)

    @property
    def kind(self) -> Literal["InferenceService", "LLMInferenceService"]:
        return "LLMInferenceService" if self.mode.startswith("LLM-D") else "InferenceService"

    @property
    def mode_label(self) -> str:
        return "Serverless with an accelerator" if self.accelerated_isvc and self.mode == "Serverless" else self.mode

    def labels(self) -> dict[str, str]:
        return {} if self.exposed else {VISIBILITY_LABEL: CLUSTER_LOCAL}

    def annotations(self) -> dict[str, str]:
        """Networking and Knative autoscaling annotations (the deployment mode is written by the policy)."""
        out: dict[str, str] = {AUTH_ANNOTATION: "true"} if self.token_auth else {}
        scaling = self.autoscaling
        if self.mode == "Serverless":
            out[KNATIVE_CLASS] = KPA_CLASS if scaling.strategy == "kpa" else KNATIVE_HPA_CLASS
            out[KNATIVE_METRIC] = scaling.metric
            if scaling.target is not None:
                out[KNATIVE_TARGET] = _number(scaling.target)
            if scaling.strategy == "kpa" and scaling.scale_down_seconds:
                out[KNATIVE_SCALE_DOWN_DELAY] = f"{scaling.scale_down_seconds}s"
        return out

    def serving_policy(self, *, lifecycle: LifecyclePolicy | None = None, engine_args: tuple[str, ...] = (),
                       engine_env: dict[str, str] | None = None) -> ServingPolicy:
        """The ServingPolicy that writes this decision into a manifest (``serving.policy``)."""
        scaling = self.autoscaling
        annotations = {**(lifecycle.annotations() if lifecycle else {}), **self.annotations()}
        common = {"min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
                  "requests": dict(self.resources.requests), "limits": dict(self.resources.limits),
                  "annotations": annotations, "labels": self.labels()}
        if self.kind == "LLMInferenceService":
            parallelism = ({"tensor": self.resources.tensor_parallel} if self.resources.tensor_parallel > 1 else {})
            if self.resources.pipeline_parallel > 1:
                parallelism["pipeline"] = self.resources.pipeline_parallel
            engine_scaling: dict[str, object] | None = None
            if scaling.strategy == "llm-d" and (scaling.max_replicas > max(scaling.min_replicas, 1) or scaling.min_replicas == 0):
                # KServe's WVA actuator; idleReplicaCount 0 is its scale to zero (minReplicas stays >= 1).
                actuator: dict[str, object] = {"keda": {"idleReplicaCount": 0}} if scaling.min_replicas == 0 else {"hpa": {}}
                engine_scaling = {"minReplicas": max(scaling.min_replicas, 1), "maxReplicas": scaling.max_replicas,
                                  "wva": actuator}
            common["min_replicas"] = max(scaling.min_replicas, 1)  # zero engines is spec.scaling's idle count
            return ServingPolicy(deployment_mode="LLM-D", engine_args=engine_args, engine_env=dict(engine_env or {}),
                                 engine_resources=True, parallelism=parallelism, engine_scaling=engine_scaling,
                                 multi_node=self.resources.pipeline_parallel > 1, **common)  # type: ignore[arg-type]
        policy = ServingPolicy(deployment_mode=self.mode, **common)  # type: ignore[arg-type]
        return _isvc_scaling(policy, self)

    def rows(self) -> list[dict[str, str]]:
        """Every step as a row (for a table artifact)."""
        return [{"decision": s.decision, "input": s.input, "value": s.value, "branch taken": s.branch,
                 "result": s.result} for s in self.steps]

    def markdown(self, title: str = "Serving decision") -> str:
        lines = [f"# {title}", "", "| Decision | Result |", "|---|---|",
                 f"| deployment mode | {self.mode_label} ({self.kind}) |",
                 f"| autoscaling | {_describe_scaling(self.autoscaling)} |",
                 f"| resources | {_describe_resources(self.resources)} |",
                 f"| networking | {'exposed' if self.exposed else 'cluster-local'}, token auth "
                 f"{'on' if self.token_auth else 'off'} |", ""]
        if self.blocked:
            lines += [f"> **Cannot run on the {self.inputs.target} platform:** {self.blocked}", ""]
        for decision in ("model", "mode", "autoscaling", "resources", "networking"):
            steps = [s for s in self.steps if s.decision == decision]
            lines += [f"## {decision}", "", "| Input | Value | Branch taken | Result |", "|---|---|---|---|"]
            lines += [f"| {_cell(s.input)} | {_cell(s.value)} | {_cell(s.branch)} | {_cell(s.result)} |" for s in steps]
            lines.append("")
        column = "LLM-D" if self.mode.startswith("LLM-D") else self.mode
        lines += [f"## What {column} gives", "", f"| | {column} |", "|---|---|"]
        lines += [f"| {feature} | {values[column]} |" for feature, values in MODE_FEATURES.items()]
        return "\n".join(lines) + "\n"


def decide(inputs: DecisionInputs) -> ServingDecision:
    """Walk the trees for ``inputs``; raises AdmissionError naming the inputs that conflict and the fix."""
    _check(inputs)
    steps: list[Step] = []
    kind = _model_kind(inputs, steps)
    mode, accelerated, several, nodes = _mode(inputs, kind, steps)
    blocked = _blocked(inputs, kind, mode, accelerated, steps)
    scaling = _autoscaling(inputs, mode, steps)
    resources = _resources(inputs, kind, mode, several, nodes, steps)
    _networking(inputs, steps)
    return ServingDecision(inputs, kind, mode, scaling, resources, inputs.exposed, inputs.token_auth, tuple(steps),
                           blocked, accelerated)


# ----------------------------------------------------------------------------------------------- checks


def _conflict(*errors: tuple[str, str]) -> AdmissionError:
    return AdmissionError([FieldError(name, reason) for name, reason in errors], kind="ServingDecision")


def _check(i: DecisionInputs) -> None:
    errors: list[tuple[str, str]] = []
    if i.model_format not in MODEL_FORMATS + LLM_FORMATS:
        errors.append(("model_format", f"{i.model_format!r} is not served here; use one of "
                       f"{', '.join(MODEL_FORMATS + LLM_FORMATS)}"))
    if i.size_bytes < 0:
        errors.append(("size_bytes", f"is {i.size_bytes}; a size on disk is 0 or more bytes"))
    if i.min_replicas < 0:
        errors.append(("min_replicas", f"is {i.min_replicas}; use 0 or more (or scale_to_zero=True for 0)"))
    if i.max_replicas < max(i.min_replicas, 1):
        errors.append(("max_replicas", f"is {i.max_replicas}, below min_replicas {i.min_replicas} (or 1); raise it"))
    if i.scale_target is not None and i.scale_target < 1:
        errors.append(("scale_target", f"is {i.scale_target}; use 1 or more"))
    if i.scale_down_delay_seconds is not None and not 0 <= i.scale_down_delay_seconds <= 3600:
        errors.append(("scale_down_delay_seconds", f"is {i.scale_down_delay_seconds}; use 0 to 3600 seconds"))
    if i.target == "embedded" and i.accelerator_memory_gb is not None:
        errors.append(("accelerator_memory_gb", "is set but target is 'embedded', which has no accelerator; "
                       "use target='kubernetes' or leave accelerator_memory_gb unset"))
    if i.target == "embedded" and i.accelerator_sharing != "whole":
        errors.append(("accelerator_sharing", f"is {i.accelerator_sharing!r} but target is 'embedded', which has no "
                       "accelerator; use target='kubernetes' or accelerator_sharing='whole'"))
    if i.accelerator_memory_gb is not None and not i.accelerator_memory_gb > 0:
        errors.append(("accelerator_memory_gb", f"is {i.accelerator_memory_gb}; give the accelerator's memory in GB, above 0"))
    if i.model_kind == "llm" and i.model_format not in LLM_FORMATS:
        errors.append(("model_kind", f"is 'llm' but model_format is {i.model_format!r}: only {', '.join(LLM_FORMATS)} "
                       "models run on vLLM; use model_kind='traditional' or a Hugging Face model"))
    if i.deployment_mode == "ModelMesh":
        errors.append(("deployment_mode", "'ModelMesh' (hundreds to thousands of small models per pod) is out of scope "
                       "here; use 'Standard' or 'Serverless', one InferenceService per model"))
    if i.scale_to_zero and i.deployment_mode == "Standard":
        errors.append(("scale_to_zero", "is True but deployment_mode is 'Standard', which cannot scale to zero; "
                       "use deployment_mode='Serverless' (or leave it unset), or scale_to_zero=False"))
    if i.scale_to_zero and i.autoscaler in ("hpa", "keda", "none"):
        errors.append(("scale_to_zero", f"is True but autoscaler is {i.autoscaler!r}; scale to zero needs the KPA: "
                       "use autoscaler='kpa' (or leave it unset), or scale_to_zero=False"))
    if i.scale_to_zero and i.primary_metric in ("cpu", "memory", "custom"):
        errors.append(("scale_to_zero", f"is True but primary_metric is {i.primary_metric!r}; the KPA that scales to "
                       "zero scales on concurrency or rps: use one of those, or scale_to_zero=False"))
    if i.primary_metric == "custom" and not i.custom_metric:
        errors.append(("custom_metric", "is empty but primary_metric is 'custom'; write the PromQL query to scale on "
                       "(e.g. sum(rate(my_requests_total[1m]))), or choose another primary_metric"))
    if i.custom_metric and i.primary_metric != "custom":
        errors.append(("custom_metric", f"is set but primary_metric is {i.primary_metric!r}; set primary_metric='custom' "
                       "or remove custom_metric"))
    if i.scale_target is not None and i.primary_metric in ("cpu", "memory") and i.scale_target > 100:
        errors.append(("scale_target", f"is {i.scale_target} with primary_metric {i.primary_metric!r}: use a utilization "
                       "percentage from 1 to 100"))
    if errors:
        raise _conflict(*errors)


# ----------------------------------------------------------------------------------------------- model kind


def _model_kind(i: DecisionInputs, steps: list[Step]) -> ModelKind:
    detected: ModelKind = "llm" if i.model_format in LLM_FORMATS else "traditional"
    if i.model_kind is not None and i.model_kind != detected:
        steps.append(Step("model", "model_kind", i.model_kind, f"override (detected {detected} from format "
                          f"{i.model_format})", i.model_kind))
        return i.model_kind
    steps.append(Step("model", "model format", i.model_format,
                      "huggingface text generation -> llm" if detected == "llm" else "not served by vLLM -> traditional",
                      detected))
    return detected


# ----------------------------------------------------------------------------------------------- mode


def _llm_fit(i: DecisionInputs, steps: list[Step]) -> tuple[int, int]:
    """(accelerators needed, nodes) for an LLM; (1, 1) on the embedded target (no accelerator)."""
    size_gb = i.size_bytes / GB
    if i.target == "embedded":
        steps.append(Step("mode", "accelerator memory", "none (embedded target)",
                          "no accelerator: one vLLM engine on CPU holds the whole model", "fits one"))
        return 1, 1
    memory = i.accelerator_memory_gb or DEFAULT_ACCELERATOR_GB
    needed = max(1, math.ceil(size_gb * LLM_MEMORY_FACTOR / memory))
    nodes = math.ceil(needed / ACCELERATORS_PER_NODE)
    fits = "fits one" if needed == 1 else f"needs {needed}"
    steps.append(Step("mode", "model size vs accelerator memory",
                      f"{size_gb:.1f} GB x {LLM_MEMORY_FACTOR} vs {memory:g} GB"
                      + ("" if i.accelerator_memory_gb else " (default accelerator)"),
                      "weights plus KV cache and activations / one accelerator's memory", fits))
    return needed, nodes


def _mode(i: DecisionInputs, kind: ModelKind, steps: list[Step]) -> tuple[Mode, bool, int, int]:
    """(mode, LLM as an InferenceService, accelerators needed, nodes)."""
    several, nodes = _llm_fit(i, steps) if kind == "llm" else (0, 1)
    if i.deployment_mode is not None:
        if i.deployment_mode == "LLM-D" and kind != "llm":
            raise _conflict(("deployment_mode", "is 'LLM-D' but the model is traditional (format "
                             f"{i.model_format}); LLM-D serves vLLM models: use 'Standard' or 'Serverless'"))
        mode: Mode = ("LLM-D distributed" if several > 1 else "LLM-D") if i.deployment_mode == "LLM-D" else i.deployment_mode  # type: ignore[assignment]
        steps.append(Step("mode", "deployment_mode", i.deployment_mode, "override: wins over the tree", mode, "mode.override"))
        return mode, kind == "llm" and not mode.startswith("LLM-D"), several, nodes
    if kind == "llm":
        size_gb = i.size_bytes / GB
        if several > 1:
            if nodes > 1:
                steps.append(Step("mode", "accelerators needed", f"{several} > {ACCELERATORS_PER_NODE} per node",
                                  "needs several accelerators, exceeds one node", f"LLM-D distributed, multi-node ({nodes} nodes)",
                                  "mode.llm.several.multi-node"))
            else:
                steps.append(Step("mode", "accelerators needed", str(several), "needs several accelerators, within one node",
                                  "LLM-D distributed (tensor parallel)", "mode.llm.several.one-node"))
            return "LLM-D distributed", False, several, nodes
        if i.cache_optimization:
            steps.append(Step("mode", "cache_optimization", "yes", "fits one accelerator, cache optimization wanted",
                              "LLM-D", "mode.llm.one.cache"))
            return "LLM-D", False, several, nodes
        if size_gb >= SMALL_LLM_GB:
            steps.append(Step("mode", "cache_optimization / size", f"no / {size_gb:.1f} GB",
                              f"no cache optimization, {SMALL_LLM_GB:g}-70 GB (overview flowchart)",
                              "LLM-D single node", "mode.llm.one.no-cache.large"))
            return "LLM-D", False, several, nodes
        steps.append(Step("mode", "cache_optimization", "no", "fits one accelerator, no cache optimization "
                          f"(under {SMALL_LLM_GB:g} GB: Standard also acceptable, deployment_mode='Standard')",
                          "Serverless with an accelerator (InferenceService on the vLLM runtime)", "mode.llm.one.no-cache"))
        return "Serverless", True, several, nodes
    mode = _traditional_mode(i, steps)
    if mode == "Standard" and i.scale_to_zero:
        steps.append(Step("mode", "scale_to_zero", "yes", "scale to zero must be Serverless (autoscaling tree)",
                          "Serverless", "mode.scale-to-zero.serverless"))
        return "Serverless", False, several, nodes
    return mode, False, several, nodes


def _traditional_mode(i: DecisionInputs, steps: list[Step]) -> Mode:
    pattern = i.traffic_pattern
    if pattern == "variable":
        if i.scale_to_zero:
            steps.append(Step("mode", "traffic_pattern / scale_to_zero", "variable / yes", "variable, scale to zero wanted",
                              "Serverless", "mode.traditional.variable.scale-to-zero"))
            return "Serverless"
        steps.append(Step("mode", "traffic_pattern / scale_to_zero", "variable / no", "variable, no scale to zero",
                          "Standard", "mode.traditional.variable.always-on"))
        return "Standard"
    if pattern == "bursty":
        steps.append(Step("mode", "traffic_pattern", "bursty", "bursty", "Serverless", "mode.traditional.bursty"))
        return "Serverless"
    if i.simple_setup:
        steps.append(Step("mode", "traffic_pattern / simple_setup", "steady / yes", "steady, simple setup wanted",
                          "Standard", "mode.traditional.steady.simple"))
        return "Standard"
    if i.complex_pipeline:
        if i.scale_to_zero:
            steps.append(Step("mode", "complex_pipeline / scale_to_zero", "yes / yes",
                              "steady, complex pipeline: Standard or Serverless, scale to zero wanted", "Serverless",
                              "mode.traditional.steady.pipeline.scale-to-zero"))
            return "Serverless"
        steps.append(Step("mode", "complex_pipeline / scale_to_zero", "yes / no",
                          "steady, complex pipeline: Standard or Serverless, prefer Standard", "Standard",
                          "mode.traditional.steady.pipeline"))
        return "Standard"
    steps.append(Step("mode", "simple_setup / complex_pipeline", "no / no", "steady, neither", "Standard",
                      "mode.traditional.steady.other"))
    return "Standard"


def _blocked(i: DecisionInputs, kind: ModelKind, mode: Mode, accelerated: bool, steps: list[Step]) -> str | None:
    """Why the embedded platform cannot run the chosen mode (None when it can)."""
    if i.target != "embedded" or i.model_format not in LLM_FORMATS or mode.startswith("LLM-D"):
        return None
    reason = (f"the embedded platform has no InferenceService runtime for vLLM (format {i.model_format}), so "
              f"{'Serverless with an accelerator' if accelerated else mode + ' mode'} cannot run here; alternative: "
              "LLM-D (cache_optimization=True, or deployment_mode='LLM-D'), or target='kubernetes' for a cluster manifest")
    steps.append(Step("mode", "target", i.target, "no vLLM InferenceService runtime on the embedded platform",
                      "cannot run here; use LLM-D"))
    return reason


# ----------------------------------------------------------------------------------------------- autoscaling


def _autoscaling(i: DecisionInputs, mode: Mode, steps: list[Step]) -> Autoscaling:
    minimum, maximum = (0 if i.scale_to_zero else i.min_replicas), i.max_replicas
    server = i.metrics_server or (EMBEDDED_METRICS_SERVER if i.target == "embedded" else K8S_METRICS_SERVER)
    if mode.startswith("LLM-D"):
        if i.autoscaler not in (None, "llm-d", "none"):
            raise _conflict(("autoscaler", f"is {i.autoscaler!r} but the deployment mode is {mode}, which scales its "
                             "engines on queue depth and KV-cache use; use autoscaler='llm-d' or leave it unset"))
        if i.primary_metric is not None:
            raise _conflict(("primary_metric", f"is {i.primary_metric!r} but the deployment mode is {mode}, which "
                             "scales on queue depth and KV-cache use; leave primary_metric unset"))
        if i.autoscaler == "none":
            steps.append(Step("autoscaling", "autoscaler", "none", "override: fixed engines", f"{i.min_replicas} engines",
                              "autoscaling.override"))
            return Autoscaling("none", "none", None, i.min_replicas, i.min_replicas)
        fixed = maximum <= max(minimum, 1) and minimum > 0
        steps.append(Step("autoscaling", "deployment mode", mode, "LLM-D: the custom autoscaler on queue depth and "
                          "KV-cache use" + (" (scale to zero: WVA idleReplicaCount 0)" if i.scale_to_zero else ""),
                          f"{minimum} engines (raise max_replicas to scale)" if fixed else
                          f"{minimum}-{maximum} engines at {LLMD_TARGET_WAITING} waiting / {LLMD_TARGET_KV:.0%} KV per engine",
                          "autoscaling.llm-d"))
        return Autoscaling("llm-d", "queue+kv", None, minimum, maximum)
    if i.autoscaler is not None:
        return _override_autoscaler(i, mode, minimum, maximum, server, steps)
    delay = i.scale_down_delay_seconds
    if delay is None and i.traffic_pattern == "bursty":
        delay = BURSTY_SCALE_DOWN_DELAY_S
    if i.scale_to_zero:
        metric = i.primary_metric or "concurrency"
        target = i.scale_target or DEFAULT_TARGETS[metric]
        steps.append(Step("autoscaling", "scale_to_zero", "yes", "scale to zero -> must be Serverless -> KPA",
                          f"KPA on {metric}, target {target}, scale-down delay {delay or 0}s, {minimum}-{maximum} replicas",
                          "autoscaling.scale-to-zero.kpa"))
        return Autoscaling("kpa", metric, target, minimum, maximum, delay)
    metric = i.primary_metric or ("concurrency" if mode == "Serverless" else "cpu")
    chosen = "primary_metric" if i.primary_metric else f"primary metric (default for {mode})"
    target = i.scale_target or (KEDA_RPS_TARGET if metric == "rps" and mode == "Standard" else DEFAULT_TARGETS[metric])
    if metric == "rps":
        if mode == "Serverless":
            steps.append(Step("autoscaling", chosen, "rps", "request rate on Serverless -> KPA (rps)",
                              f"KPA on rps, target {target}, {minimum}-{maximum} replicas", "autoscaling.rps.kpa"))
            return Autoscaling("kpa", "rps", target, minimum, maximum, delay)
        window = delay if delay is not None else HPA_SCALE_DOWN_WINDOW_S
        steps.append(Step("autoscaling", chosen, "rps", "request rate, not Serverless -> HPA on requests per second "
                          "(KEDA ScaledObject)", f"KEDA on rps, target {target}/replica, scale-down window {window}s, "
                          f"{minimum}-{maximum} replicas", "autoscaling.rps.keda"))
        return Autoscaling("keda", "rps", target, minimum, maximum, window, None, server)
    if metric in ("cpu", "memory"):
        steps.append(Step("autoscaling", chosen, metric, "cpu or memory -> HPA" +
                          (" (Knative's HPA class)" if mode == "Serverless" else ""),
                          f"HPA on {metric} at {target}%, {minimum}-{maximum} replicas", "autoscaling.resource.hpa"))
        return Autoscaling("hpa", metric, target, minimum, maximum)
    if metric == "custom":
        if mode == "Serverless":
            raise _conflict(("primary_metric", "is 'custom' but the deployment mode is Serverless (from "
                             f"{_mode_origin(i)}), whose KPA scales on concurrency or rps; use deployment_mode='Standard' "
                             "for a custom metric (KEDA), or primary_metric='concurrency'/'rps'"))
        window = delay if delay is not None else HPA_SCALE_DOWN_WINDOW_S
        steps.append(Step("autoscaling", chosen, f"custom: {i.custom_metric}", "custom metric -> HPA on a custom metric "
                          "(KEDA external metric)", f"KEDA on the query, target {target}, source {server}, "
                          f"{minimum}-{maximum} replicas", "autoscaling.custom.keda"))
        return Autoscaling("keda", "custom", target, minimum, maximum, window, i.custom_metric, server)
    # concurrency
    if mode != "Serverless":
        raise _conflict(("primary_metric", f"is 'concurrency' but the deployment mode is {mode} (from {_mode_origin(i)}), "
                         "whose HPA scales on cpu, memory, rps (KEDA) or a custom metric; use one of those, or "
                         "deployment_mode='Serverless' / traffic_pattern='bursty' for the KPA"))
    steps.append(Step("autoscaling", chosen, "concurrency", "concurrency on Serverless -> KPA",
                      f"KPA on concurrency, target {target}, scale-down delay {delay or 0}s, {minimum}-{maximum} replicas",
                      "autoscaling.concurrency.kpa"))
    return Autoscaling("kpa", "concurrency", target, minimum, maximum, delay)


def _override_autoscaler(i: DecisionInputs, mode: Mode, minimum: int, maximum: int, server: str,
                         steps: list[Step]) -> Autoscaling:
    chosen = i.autoscaler
    allowed = {"kpa": ("Serverless",), "hpa": ("Standard", "Serverless"), "keda": ("Standard",), "none": ("Standard",),
               "llm-d": ()}[chosen or "none"]
    if mode not in allowed:
        fix = f"deployment_mode='{allowed[0]}'" if allowed else "deployment_mode='LLM-D' with an LLM"
        raise _conflict(("autoscaler", f"is {chosen!r} but the deployment mode is {mode} (from {_mode_origin(i)}); "
                         f"use {fix}, or leave autoscaler unset"))
    metrics = {"kpa": ("concurrency", "rps"), "hpa": ("cpu", "memory"), "keda": ("rps", "concurrency", "cpu", "memory", "custom"),
               "none": ("none",)}[chosen or "none"]
    metric = i.primary_metric or metrics[0]
    if metric not in metrics:
        raise _conflict(("primary_metric", f"is {metric!r} but autoscaler is {chosen!r}, which scales on "
                         f"{', '.join(metrics)}; choose one of those or another autoscaler"))
    if chosen == "none":
        steps.append(Step("autoscaling", "autoscaler", "none", "override: no autoscaler", f"{i.min_replicas} replicas",
                          "autoscaling.override"))
        return Autoscaling("none", "none", None, i.min_replicas, i.min_replicas)
    target = i.scale_target or (KEDA_RPS_TARGET if chosen == "keda" and metric == "rps" else DEFAULT_TARGETS[metric])
    delay = i.scale_down_delay_seconds
    if chosen == "keda" and delay is None:
        delay = HPA_SCALE_DOWN_WINDOW_S
    steps.append(Step("autoscaling", "autoscaler", str(chosen), "override: wins over the tree",
                      f"{str(chosen).upper()} on {metric}, target {target}, {minimum}-{maximum} replicas",
                      "autoscaling.override"))
    return Autoscaling(chosen, metric, target, minimum, maximum, delay,  # type: ignore[arg-type]
                       i.custom_metric if metric == "custom" else None, server if chosen == "keda" else None)


def _mode_origin(i: DecisionInputs) -> str:
    if i.deployment_mode:
        return f"deployment_mode={i.deployment_mode!r}"
    return (f"traffic_pattern={i.traffic_pattern!r}, scale_to_zero={i.scale_to_zero}, simple_setup={i.simple_setup}, "
            f"complex_pipeline={i.complex_pipeline}")


# ----------------------------------------------------------------------------------------------- resources


def _gi(value: float) -> str:
    return f"{max(1, math.ceil(value))}Gi"


def _resources(i: DecisionInputs, kind: ModelKind, mode: Mode, several: int, nodes: int, steps: list[Step]) -> Resources:
    size_gib = i.size_bytes / GIB
    on_disk = f"{i.model_format}, {i.size_bytes / 2**20:.1f} MiB"
    if kind == "traditional":
        # The model is unpickled into memory (often 2-3x its file), next to the server itself (~1 GiB).
        memory = _gi(max(2.0, 1 + 3 * size_gib))
        cpu = "1" if size_gib < 1 else "2"
        steps.append(Step("resources", "format, size on disk", on_disk, "traditional: memory = max(2 GiB, 1 GiB + 3 x size)",
                          f"cpu {cpu}, memory {memory}; no accelerator", "resources.traditional"))
        return Resources({"cpu": cpu, "memory": memory}, {"cpu": cpu, "memory": memory})
    if i.target == "embedded":
        memory = _gi(max(4.0, size_gib * LLM_MEMORY_FACTOR + 2))
        steps.append(Step("resources", "target", "embedded", "no accelerator on the embedded platform: none requested, "
                          "vLLM runs on CPU with weights and KV cache in host memory",
                          f"cpu 2, memory {memory} per engine", "resources.llm.cpu"))
        return Resources({"cpu": "2", "memory": memory}, {"cpu": "2", "memory": memory})
    accelerator_gb = i.accelerator_memory_gb or DEFAULT_ACCELERATOR_GB
    # Host memory: vLLM stages the weights through it; CPUs for tokenization and scheduling per accelerator.
    host = _gi(max(16.0, size_gib / nodes + 8))  # per node: each holds its share of the weights
    if several > 1 and i.accelerator_sharing != "whole":
        raise _conflict(("accelerator_sharing", f"is {i.accelerator_sharing!r} but the model needs {several} accelerators; "
                         "a shared slice is part of one GPU: use accelerator_sharing='whole', or a larger accelerator_memory_gb"))
    if i.accelerator_sharing == "mig":
        need = i.size_bytes / GB * LLM_MEMORY_FACTOR
        slices, share = next(((g, s) for g, s in MIG_PROFILES if accelerator_gb * s >= need), MIG_PROFILES[-1])
        name = f"nvidia.com/mig-{slices}g.{round(accelerator_gb * share)}gb"
        steps.append(Step("resources", "accelerator_sharing", "mig", f"the smallest MIG profile holding {need:.1f} GB",
                          f"{name}: 1, cpu 4, memory {host}", "resources.llm.mig"))
        return _gpu_resources(name, 1, host, 1, 1)
    if i.accelerator_sharing == "time-sliced":
        steps.append(Step("resources", "accelerator_sharing", "time-sliced", "a time-sliced share of one GPU "
                          "(no memory isolation: the model must fit beside its neighbours)",
                          f"nvidia.com/gpu.shared: 1, cpu 4, memory {host}", "resources.llm.time-sliced"))
        return _gpu_resources("nvidia.com/gpu.shared", 1, host, 1, 1)
    if several == 1:
        steps.append(Step("resources", "accelerators needed", "1", "fits one whole GPU",
                          f"nvidia.com/gpu: 1, cpu 4, memory {host}", "resources.llm.gpu"))
        return _gpu_resources("nvidia.com/gpu", 1, host, 1, 1)
    # vLLM splits attention heads evenly: tensor parallel sizes are powers of two.
    per_node = min(ACCELERATORS_PER_NODE, 2 ** math.ceil(math.log2(math.ceil(several / nodes))))
    if nodes > 1:
        steps.append(Step("resources", "accelerators needed", f"{several} over {nodes} nodes",
                          "tensor parallel within a node, pipeline parallel across nodes",
                          f"nvidia.com/gpu: {per_node} per node, tensor {per_node}, pipeline {nodes}", "resources.llm.multi-node"))
        return _gpu_resources("nvidia.com/gpu", per_node, host, per_node, nodes)
    steps.append(Step("resources", "accelerators needed", str(several), "several GPUs in one node: tensor parallel "
                      "(a power of two)", f"nvidia.com/gpu: {per_node}, tensor parallel {per_node}", "resources.llm.tensor-parallel"))
    return _gpu_resources("nvidia.com/gpu", per_node, host, per_node, 1)


def _gpu_resources(name: str, count: int, host: str, tensor: int, nodes: int) -> Resources:
    cpu = str(4 * count)
    values = {"cpu": cpu, "memory": host, name: str(count)}
    return Resources(dict(values), dict(values), name, count, tensor, nodes)


# ----------------------------------------------------------------------------------------------- networking


def _networking(i: DecisionInputs, steps: list[Step]) -> None:
    if i.exposed:
        steps.append(Step("networking", "exposed", "yes", "exposed", "reachable through the gateway / ingress",
                          "networking.exposed"))
    else:
        steps.append(Step("networking", "exposed", "no", "not exposed",
                          f"label {VISIBILITY_LABEL}: {CLUSTER_LOCAL}", "networking.cluster-local"))
    if i.token_auth:
        steps.append(Step("networking", "token_auth", "yes", "token auth on",
                          f'annotation {AUTH_ANNOTATION}: "true" (an API key of the namespace)', "networking.auth.on"))
    else:
        steps.append(Step("networking", "token_auth", "no", "token auth off", "no key needed", "networking.auth.off"))


# ----------------------------------------------------------------------------------------------- manifest fields


def _isvc_scaling(policy: ServingPolicy, decision: ServingDecision) -> ServingPolicy:
    """The predictor's scaling fields and the autoscaler class, as KServe's reconcilers read them."""
    scaling = decision.autoscaling
    model_args = ("--backend=vllm",) if decision.accelerated_isvc else ()
    target = int(scaling.target) if scaling.target is not None else None
    if scaling.strategy in ("kpa", "hpa"):
        return replace(policy, scale_metric=scaling.metric, scale_target=target,
                       autoscaler_class="hpa" if decision.mode == "Standard" else None, model_args=model_args)
    if scaling.strategy == "none":
        return replace(policy, autoscaler_class="none", model_args=model_args)
    # KEDA: autoScaling.metrics (KServe refuses scaleMetric with KEDA), written by the policy, which knows the name.
    return replace(policy, autoscaler_class="keda", keda_metric=scaling.metric, scale_target=target,  # type: ignore[arg-type]
                   keda_query=scaling.query, metrics_server=scaling.metrics_server,
                   scale_down_window=scaling.scale_down_seconds, kubernetes_metrics=decision.inputs.target == "kubernetes",
                   model_args=model_args)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _describe_scaling(scaling: Autoscaling) -> str:
    if scaling.strategy == "none":
        return f"none: {scaling.min_replicas} replicas"
    target = "" if scaling.target is None else f", target {_number(scaling.target)}"
    return f"{scaling.strategy.upper()} on {scaling.metric}{target}, {scaling.min_replicas}-{scaling.max_replicas} replicas"


def _describe_resources(resources: Resources) -> str:
    text = ", ".join(f"{k} {v}" for k, v in resources.requests.items())
    if resources.tensor_parallel > 1 or resources.pipeline_parallel > 1:
        text += f"; tensor parallel {resources.tensor_parallel}, pipeline parallel {resources.pipeline_parallel}"
    return text

