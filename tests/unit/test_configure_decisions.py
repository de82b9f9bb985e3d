"""The serving decision trees (docs/decision-trees.md) table-tested: every branch, every leaf reachable from the
deploy-model flow's parameters, every conflict refused naming both inputs, every manifest admitted and
valid against the CRDs (and, for the formats with a built-in runtime, rendered by our reconcilers)."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml
from schemas import CRDS, _to_json_schema, assert_valid

from serving.decisions import LEAVES, DecisionInputs, ServingDecision, decide
from serving.errors import AdmissionError
from serving.kserve import admit_inference_service
from serving.kserve.llmisvc import admit_llm_inference_service
from serving.kserve.reconcile.policy import policies_by_deployment
from serving.kserve.render import render
from serving.lifecycle import LifecyclePolicy
from serving.registry import RegisteredVersion

MB = 1_000_000
GB = 1_000_000_000
ISVC_CRD = ("serving.kserve.io_inferenceservices.yaml", "v1beta1")
LLMISVC_CRD = ("serving.kserve.io_llminferenceservices.yaml", "v1alpha2")
KNATIVE_CRD = ("knative_service.yaml", "v1")
K8S = {"target": "kubernetes"}


@dataclass(frozen=True)
class Row:
    """One branch: flow parameters in, the leaves and results that must come out."""

    id: str
    model_format: str
    size: int
    params: dict[str, Any]
    leaves: set[str]
    mode: str
    expect: dict[str, Any] = field(default_factory=dict)  # attribute path on the decision -> value


ROWS = [
    # ---------------------------------------------------------------- traditional: deployment mode
    Row("defaults", "sklearn", 5 * 1024, {}, {"mode.traditional.steady.simple", "autoscaling.resource.hpa",
        "resources.traditional", "networking.exposed", "networking.auth.off"}, "Standard",
        {"autoscaling.strategy": "hpa", "autoscaling.metric": "cpu", "autoscaling.target": 80,
         "resources.requests": {"cpu": "1", "memory": "2Gi"}}),
    Row("variable-scale-to-zero", "sklearn", MB, {"traffic_pattern": "variable", "scale_to_zero": True},
        {"mode.traditional.variable.scale-to-zero", "autoscaling.scale-to-zero.kpa"}, "Serverless",
        {"autoscaling.strategy": "kpa", "autoscaling.min_replicas": 0, "autoscaling.metric": "concurrency"}),
    Row("variable-always-on", "mlflow", MB, {"traffic_pattern": "variable"},
        {"mode.traditional.variable.always-on", "autoscaling.resource.hpa"}, "Standard"),
    Row("bursty", "sklearn", MB, {"traffic_pattern": "bursty"}, {"mode.traditional.bursty", "autoscaling.concurrency.kpa"},
        "Serverless", {"autoscaling.scale_down_seconds": 60, "autoscaling.target": 100}),
    Row("steady-pipeline-scale-to-zero", "sklearn", MB,
        {"simple_setup": False, "complex_pipeline": True, "scale_to_zero": True, "max_replicas": 3},
        {"mode.traditional.steady.pipeline.scale-to-zero", "autoscaling.scale-to-zero.kpa"}, "Serverless",
        {"autoscaling.min_replicas": 0, "autoscaling.max_replicas": 3}),
    Row("steady-pipeline", "sklearn", MB, {"simple_setup": False, "complex_pipeline": True},
        {"mode.traditional.steady.pipeline"}, "Standard"),
    Row("steady-other", "sklearn", MB, {"simple_setup": False}, {"mode.traditional.steady.other"}, "Standard"),
    Row("steady-simple-scale-to-zero", "sklearn", MB, {"scale_to_zero": True},
        {"mode.traditional.steady.simple", "mode.scale-to-zero.serverless", "autoscaling.scale-to-zero.kpa"}, "Serverless"),
    Row("mode-override", "sklearn", MB, {"deployment_mode": "Serverless"}, {"mode.override", "autoscaling.concurrency.kpa"},
        "Serverless"),
    Row("large-traditional", "sklearn", 3 * 1024**3, {}, {"resources.traditional"}, "Standard",
        {"resources.requests": {"cpu": "2", "memory": "10Gi"}}),
    # ---------------------------------------------------------------- traditional: autoscaling
    Row("rps-standard", "sklearn", MB, {"primary_metric": "rps", "max_replicas": 4}, {"autoscaling.rps.keda"}, "Standard",
        {"autoscaling.strategy": "keda", "autoscaling.target": 50, "autoscaling.scale_down_seconds": 300}),
    Row("rps-serverless", "sklearn", MB, {"traffic_pattern": "bursty", "primary_metric": "rps", "scale_target": 30},
        {"autoscaling.rps.kpa"}, "Serverless", {"autoscaling.strategy": "kpa", "autoscaling.target": 30}),
    Row("memory", "sklearn", MB, {"primary_metric": "memory", "scale_target": 70, "max_replicas": 3},
        {"autoscaling.resource.hpa"}, "Standard", {"autoscaling.metric": "memory", "autoscaling.target": 70}),
    Row("cpu-on-serverless", "sklearn", MB, {"traffic_pattern": "bursty", "primary_metric": "cpu"},
        {"autoscaling.resource.hpa"}, "Serverless", {"autoscaling.strategy": "hpa"}),
    Row("custom", "sklearn", MB, {"primary_metric": "custom", "custom_metric": "sum(rate(my_total[1m]))", "scale_target": 5,
                                  "max_replicas": 3},
        {"autoscaling.custom.keda"}, "Standard", {"autoscaling.strategy": "keda", "autoscaling.query": "sum(rate(my_total[1m]))"}),
    Row("autoscaler-override-hpa", "sklearn", MB, {"traffic_pattern": "bursty", "autoscaler": "hpa"},
        {"autoscaling.override"}, "Serverless", {"autoscaling.strategy": "hpa", "autoscaling.metric": "cpu"}),
    Row("autoscaler-override-keda", "sklearn", MB, {"autoscaler": "keda", "primary_metric": "concurrency", "max_replicas": 2},
        {"autoscaling.override"}, "Standard", {"autoscaling.strategy": "keda", "autoscaling.metric": "concurrency"}),
    Row("autoscaler-override-none", "sklearn", MB, {"autoscaler": "none", "min_replicas": 2, "max_replicas": 2},
        {"autoscaling.override"}, "Standard", {"autoscaling.strategy": "none", "autoscaling.min_replicas": 2}),
    # ---------------------------------------------------------------- networking
    Row("cluster-local-auth", "sklearn", MB, {"exposed": False, "token_auth": True},
        {"networking.cluster-local", "networking.auth.on"}, "Standard", {"exposed": False, "token_auth": True}),
    # ---------------------------------------------------------------- LLMs
    Row("llm-embedded", "huggingface", 2 * GB, {}, {"mode.llm.one.cache", "autoscaling.llm-d", "resources.llm.cpu"},
        "LLM-D", {"resources.accelerator": None}),
    Row("llm-embedded-scaling", "huggingface", 2 * GB, {"min_replicas": 1, "max_replicas": 3},
        {"mode.llm.one.cache", "autoscaling.llm-d"}, "LLM-D", {"autoscaling.max_replicas": 3}),
    Row("llm-one-gpu-cache", "huggingface", 14 * GB, K8S, {"mode.llm.one.cache", "resources.llm.gpu"}, "LLM-D",
        {"resources.accelerator": "nvidia.com/gpu", "resources.accelerators": 1}),
    Row("llm-serverless-accelerator", "huggingface", 14 * GB, {**K8S, "cache_optimization": False},
        {"mode.llm.one.no-cache", "autoscaling.concurrency.kpa", "resources.llm.gpu"}, "Serverless",
        {"accelerated_isvc": True, "blocked": None}),
    Row("llm-no-cache-large", "huggingface", 30 * GB, {**K8S, "cache_optimization": False},
        {"mode.llm.one.no-cache.large", "autoscaling.llm-d"}, "LLM-D"),
    Row("llm-tensor-parallel", "huggingface", 140 * GB, K8S, {"mode.llm.several.one-node", "resources.llm.tensor-parallel"},
        "LLM-D distributed", {"resources.tensor_parallel": 4, "resources.accelerators": 4}),
    Row("llm-multi-node", "huggingface", 800 * GB, K8S, {"mode.llm.several.multi-node", "resources.llm.multi-node"},
        "LLM-D distributed", {"resources.tensor_parallel": 8, "resources.pipeline_parallel": 2}),
    Row("llm-small-accelerator", "huggingface", 14 * GB, {**K8S, "accelerator_memory_gb": 24},
        {"mode.llm.one.cache"}, "LLM-D"),
    Row("llm-needs-two-small", "huggingface", 24 * GB, {**K8S, "accelerator_memory_gb": 24},
        {"mode.llm.several.one-node"}, "LLM-D distributed", {"resources.tensor_parallel": 2}),
    Row("llm-mig", "huggingface", 14 * GB, {**K8S, "accelerator_sharing": "mig"}, {"resources.llm.mig"}, "LLM-D",
        {"resources.accelerator": "nvidia.com/mig-2g.20gb"}),
    Row("llm-mig-smallest", "huggingface", 5 * GB, {**K8S, "accelerator_sharing": "mig"}, {"resources.llm.mig"}, "LLM-D",
        {"resources.accelerator": "nvidia.com/mig-1g.10gb"}),
    Row("llm-time-sliced", "huggingface", 5 * GB, {**K8S, "accelerator_sharing": "time-sliced"},
        {"resources.llm.time-sliced"}, "LLM-D", {"resources.accelerator": "nvidia.com/gpu.shared"}),
    Row("llm-scale-to-zero", "huggingface", 5 * GB, {**K8S, "scale_to_zero": True, "max_replicas": 2},
        {"autoscaling.llm-d"}, "LLM-D", {"autoscaling.min_replicas": 0}),
    Row("llm-mode-override", "huggingface", 14 * GB, {**K8S, "deployment_mode": "Standard"}, {"mode.override"}, "Standard",
        {"accelerated_isvc": True, "autoscaling.metric": "cpu"}),
    Row("llm-as-traditional", "huggingface", 1 * GB, {**K8S, "model_kind": "traditional"}, {"resources.traditional"},
        "Standard", {"model_kind": "traditional"}),
]


def _flow_parameters() -> dict[str, inspect.Parameter]:
    from flows.deploy_model import deploy_model

    return dict(inspect.signature(deploy_model.fn).parameters)


def _decide(row: Row) -> ServingDecision:
    from flows.deploy_model import decision_inputs

    return decide(decision_inputs(row.model_format, row.size, row.params))


def _get(decision: ServingDecision, path: str) -> Any:
    value: Any = decision
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _manifest(decision: ServingDecision, name: str = "m", namespace: str = "team") -> dict[str, Any]:
    from tasks.configure import build_manifest

    source = "hf://org/model" if decision.inputs.model_format == "huggingface" else "s3://models/m/1"
    version = RegisteredVersion(name="m", version="3", source=source, digest="0" * 64, aliases=(), tags={})
    lifecycle = LifecyclePolicy(canary_percent=10, slo_p95_ms=250)
    return build_manifest(name, namespace, version, decision, lifecycle=lifecycle)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_each_branch_of_the_trees(row: Row) -> None:
    decision = _decide(row)
    assert row.leaves <= decision.leaves, sorted(decision.leaves)
    assert decision.mode == row.mode
    for path, value in row.expect.items():
        assert _get(decision, path) == value, path
    # Every decision is explained: one table per decision, each step a row of the markdown.
    markdown = decision.markdown("x")
    for step in decision.steps:
        assert f"| {step.input} | {step.value} |".replace("|  ", "| ") in markdown.replace("\\|", "|")
    assert {s.decision for s in decision.steps} == {"model", "mode", "autoscaling", "resources", "networking"}


def test_every_leaf_is_reached_from_flow_parameters() -> None:
    parameters = _flow_parameters()
    reached: set[str] = set()
    for row in ROWS:
        for key, value in row.params.items():
            assert key in parameters, f"{row.id}: {key} is not a deploy-model parameter"
            choices = typing.get_args(typing.get_type_hints(_deploy_fn())[key])
            literal = [typing.get_args(c) for c in choices if typing.get_origin(c) is typing.Literal]
            literal += [choices] if choices and all(isinstance(c, str) for c in choices) else []
            if literal:
                assert value in literal[0], f"{row.id}: {key}={value!r} is not a choice the UI offers"
        reached |= _decide(row).leaves
    assert reached == set(LEAVES), {"never reached": sorted(set(LEAVES) - reached), "unknown": sorted(reached - set(LEAVES))}


def _deploy_fn() -> Any:
    from flows.deploy_model import deploy_model

    return deploy_model.fn


def test_the_old_defaults_still_give_standard_with_the_old_replicas_and_resources() -> None:
    decision = decide(DecisionInputs("sklearn", 1234))
    manifest = _manifest(decision)
    predictor = manifest["spec"]["predictor"]
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert predictor["model"]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert manifest["metadata"]["labels"] == {"odh.serving/registered-model": "m", "odh.serving/model-version": "3"}


@pytest.mark.parametrize("target", ["as-written", "kubernetes"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_every_manifest_is_admitted_and_valid_against_the_crds(row: Row, target: str) -> None:
    params = {**row.params, "target": "kubernetes"} if target == "kubernetes" else row.params
    params = {k: v for k, v in params.items() if params.get("target") == "kubernetes" or not k.startswith("accelerator")}
    decision = _decide(Row(row.id, row.model_format, row.size, params, set(), row.mode))
    manifest = _manifest(decision)
    assert manifest["metadata"]["annotations"]["serving.odh.io/canary-percent"] == "10"  # the lifecycle policy travels
    if manifest["kind"] == "LLMInferenceService":
        assert_valid(manifest, *LLMISVC_CRD)
        admit_llm_inference_service(manifest)
        return
    assert_valid(manifest, *ISVC_CRD)
    admit_inference_service(manifest)
    if manifest["spec"]["predictor"]["model"]["modelFormat"]["name"] == "huggingface":
        return  # no built-in runtime for it: KServe's huggingfaceserver serves it on a cluster
    for child in render(manifest):
        if child["kind"] == "Service" and child["apiVersion"].startswith("serving.knative.dev"):
            assert_valid(child, *KNATIVE_CRD)
        elif child["kind"] == "ScaledObject":
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _keda_validator().iter_errors(child)]
            assert not errors, errors


@cache
def _keda_validator() -> jsonschema.Draft7Validator:
    # The file holds KEDA's Namespace before the CRD: schemas.crd_validator reads one document only.
    docs = yaml.safe_load_all((CRDS / "keda_scaledobject.yaml").read_text())
    crd = next(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(_to_json_schema(schema))


def test_serverless_writes_what_the_knative_reconciler_reads() -> None:
    decision = decide(DecisionInputs("sklearn", MB, traffic_pattern="variable", scale_to_zero=True, max_replicas=5,
                                     scale_target=7, scale_down_delay_seconds=45))
    manifest = _manifest(decision)
    (ksvc,) = render(manifest)
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert annotations["autoscaling.knative.dev/target"] == "7"
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/max-scale"] == "5"
    assert annotations["autoscaling.knative.dev/scale-down-delay"] == "45s"


def test_request_rate_on_standard_becomes_a_keda_scaled_object_on_the_gateway() -> None:
    decision = decide(DecisionInputs("sklearn", MB, primary_metric="rps", scale_target=20, max_replicas=4,
                                     scale_down_delay_seconds=120))
    manifest = _manifest(decision, name="iris", namespace="team")
    assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert "scaleMetric" not in manifest["spec"]["predictor"]  # KServe refuses scaleMetric with KEDA
    objects = render(manifest)
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    (policy,) = policies_by_deployment(objects).values()
    assert (policy.source, policy.metric, policy.min_replicas, policy.max_replicas) == ("ScaledObject", "rps", 1, 4)
    assert policy.metrics[0].value == 20
    assert 'route="team/iris"' in str(policy.metrics[0].query)
    assert policy.behavior.scale_down.stabilization_window_seconds == 120


def test_cpu_and_memory_become_the_hpa_the_platform_scales_on() -> None:
    for metric, target in (("cpu", 60), ("memory", 75)):
        manifest = _manifest(decide(DecisionInputs("sklearn", MB, primary_metric=metric, scale_target=target, max_replicas=3)))
        assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        (policy,) = policies_by_deployment(render(manifest)).values()
        assert (policy.source, policy.metric, policy.metrics[0].value, policy.max_replicas) == (
            "HorizontalPodAutoscaler", metric, target, 3)


def test_a_custom_metric_is_a_keda_external_query() -> None:
    manifest = _manifest(decide(DecisionInputs("sklearn", MB, target="kubernetes", primary_metric="custom",
                                               custom_metric="sum(queue_depth)", scale_target=10, max_replicas=3)))
    (entry,) = manifest["spec"]["predictor"]["autoScaling"]["metrics"]
    assert entry["external"]["metric"]["query"] == "sum(queue_depth)"
    assert entry["external"]["metric"]["serverAddress"].startswith("http://prometheus")
    (policy,) = policies_by_deployment(render(manifest)).values()
    assert (policy.metric, policy.metrics[0].query, policy.metrics[0].value) == ("external", "sum(queue_depth)", 10)


def test_networking_writes_the_visibility_label_and_the_auth_annotation() -> None:
    manifest = _manifest(decide(DecisionInputs("sklearn", MB, exposed=False, token_auth=True)))
    assert manifest["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    assert manifest["metadata"]["annotations"]["security.opendatahub.io/enable-auth"] == "true"
    plain = _manifest(decide(DecisionInputs("sklearn", MB)))
    assert "networking.kserve.io/visibility" not in plain["metadata"]["labels"]
    assert "security.opendatahub.io/enable-auth" not in plain["metadata"]["annotations"]
    llm = _manifest(decide(DecisionInputs("huggingface", GB, exposed=False, token_auth=True)))
    assert llm["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    assert llm["metadata"]["annotations"]["security.opendatahub.io/enable-auth"] == "true"


def test_llm_manifests_carry_parallelism_accelerators_and_engine_scaling() -> None:
    distributed = _manifest(decide(DecisionInputs("huggingface", 140 * GB, target="kubernetes")))
    assert distributed["spec"]["parallelism"] == {"tensor": 4}
    (main,) = distributed["spec"]["template"]["containers"]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "4"
    multi = _manifest(decide(DecisionInputs("huggingface", 800 * GB, target="kubernetes")))
    assert multi["spec"]["parallelism"] == {"tensor": 8, "pipeline": 2}
    assert multi["spec"]["worker"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    scaled = _manifest(decide(DecisionInputs("huggingface", GB, min_replicas=1, max_replicas=3)))
    assert scaled["spec"]["scaling"] == {"minReplicas": 1, "maxReplicas": 3, "wva": {"hpa": {}}}
    assert "nvidia.com/gpu" not in str(scaled)  # the embedded target requests no accelerator
    to_zero = _manifest(decide(DecisionInputs("huggingface", GB, scale_to_zero=True, max_replicas=2)))
    assert to_zero["spec"]["replicas"] == 1
    assert to_zero["spec"]["scaling"] == {"minReplicas": 1, "maxReplicas": 2, "wva": {"keda": {"idleReplicaCount": 0}}}
    fixed = _manifest(decide(DecisionInputs("huggingface", GB, min_replicas=2, max_replicas=2)))
    assert fixed["spec"]["replicas"] == 2 and "scaling" not in fixed["spec"]


def test_serverless_with_an_accelerator_is_a_vllm_inference_service_on_kubernetes() -> None:
    decision = decide(DecisionInputs("huggingface", 14 * GB, target="kubernetes", cache_optimization=False))
    assert decision.blocked is None and decision.mode_label == "Serverless with an accelerator"
    manifest = _manifest(decision)
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["args"] == ["--backend=vllm"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert_valid(manifest, *ISVC_CRD)
    admit_inference_service(manifest)


def test_serverless_with_an_accelerator_says_plainly_it_cannot_run_embedded() -> None:
    decision = decide(DecisionInputs("huggingface", 2 * GB, cache_optimization=False))
    assert decision.blocked is not None
    assert "no InferenceService runtime for vLLM" in decision.blocked and "LLM-D" in decision.blocked
    markdown = decision.markdown("x")
    assert "Cannot run on the embedded platform" in markdown
    assert "| target | embedded | no vLLM InferenceService runtime on the embedded platform | cannot run here; use LLM-D |" in markdown
    assert "no accelerator on the embedded platform: none requested" in markdown
    # The alternative it names does run here.
    assert decide(DecisionInputs("huggingface", 2 * GB, deployment_mode="LLM-D")).blocked is None


CONFLICTS = [
    ({"scale_to_zero": True, "deployment_mode": "Standard"}, "scale_to_zero", "deployment_mode"),
    ({"scale_to_zero": True, "autoscaler": "hpa"}, "scale_to_zero", "autoscaler"),
    ({"scale_to_zero": True, "primary_metric": "cpu"}, "scale_to_zero", "primary_metric"),
    ({"deployment_mode": "ModelMesh"}, "deployment_mode", "out of scope"),
    ({"deployment_mode": "LLM-D"}, "deployment_mode", "traditional"),
    ({"model_kind": "llm"}, "model_kind", "model_format"),
    ({"primary_metric": "custom"}, "custom_metric", "primary_metric"),
    ({"custom_metric": "sum(x)"}, "custom_metric", "primary_metric"),
    ({"primary_metric": "concurrency"}, "primary_metric", "traffic_pattern"),
    ({"traffic_pattern": "bursty", "primary_metric": "custom", "custom_metric": "sum(x)"}, "primary_metric", "traffic_pattern"),
    ({"autoscaler": "kpa"}, "autoscaler", "deployment_mode='Serverless'"),
    ({"traffic_pattern": "bursty", "autoscaler": "keda"}, "autoscaler", "traffic_pattern"),
    ({"autoscaler": "hpa", "primary_metric": "rps"}, "primary_metric", "autoscaler"),
    ({"accelerator_memory_gb": 80}, "accelerator_memory_gb", "target"),
    ({"accelerator_sharing": "mig"}, "accelerator_sharing", "target"),
    ({"primary_metric": "cpu", "scale_target": 150}, "scale_target", "percentage"),
    ({"scale_target": 0}, "scale_target", "1 or more"),
]
LLM_CONFLICTS = [
    ({"target": "kubernetes", "accelerator_sharing": "mig"}, 200 * GB, "accelerator_sharing", "needs"),
    ({"primary_metric": "rps"}, GB, "primary_metric", "LLM-D"),
    ({"autoscaler": "kpa"}, GB, "autoscaler", "llm-d"),
]


@pytest.mark.parametrize(("params", "field_name", "also"), CONFLICTS, ids=[f"{c[1]}-{i}" for i, c in enumerate(CONFLICTS)])
def test_conflicting_inputs_are_refused_naming_both_and_the_fix(params: dict[str, Any], field_name: str, also: str) -> None:
    from flows.deploy_model import decision_inputs

    with pytest.raises(AdmissionError) as caught:
        decide(decision_inputs("sklearn", MB, params))
    assert caught.value.field == field_name
    assert also in caught.value.reason
    assert any(word in caught.value.reason for word in ("use ", "set ", "raise", "leave", "remove", "choose", "write")), \
        caught.value.reason


@pytest.mark.parametrize(("params", "size", "field_name", "also"), LLM_CONFLICTS, ids=[c[2] for c in LLM_CONFLICTS])
def test_conflicting_llm_inputs_are_refused(params: dict[str, Any], size: int, field_name: str, also: str) -> None:
    with pytest.raises(AdmissionError) as caught:
        decide(DecisionInputs("huggingface", size, **params))
    assert caught.value.field == field_name and also in caught.value.reason


def test_replica_bounds_are_checked() -> None:
    with pytest.raises(AdmissionError, match="max_replicas: is 2, below min_replicas 3"):
        decide(DecisionInputs("sklearn", MB, min_replicas=3, max_replicas=2))
    with pytest.raises(AdmissionError, match="min_replicas: is -1"):
        decide(DecisionInputs("sklearn", MB, min_replicas=-1))


def test_an_override_says_it_wins_over_the_tree() -> None:
    decision = decide(DecisionInputs("sklearn", MB, traffic_pattern="bursty", deployment_mode="Standard"))
    (step,) = [s for s in decision.steps if s.decision == "mode"]
    assert (step.input, step.value, step.result) == ("deployment_mode", "Standard", "Standard")
    assert "override" in step.branch
    assert decision.mode == "Standard"


def test_the_artifact_explains_the_chosen_mode() -> None:
    markdown = decide(DecisionInputs("sklearn", MB, traffic_pattern="bursty")).markdown("team/iris")
    assert "## What Serverless gives" in markdown
    assert "| scale to zero | yes |" in markdown and "| autoscaling | KPA |" in markdown
    assert "| traffic_pattern | bursty | bursty | Serverless |" in markdown
    llm = decide(DecisionInputs("huggingface", GB)).markdown("x")
    assert "## What LLM-D gives" in llm and "| cache-aware routing | yes |" in llm
