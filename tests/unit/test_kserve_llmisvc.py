"""LLMInferenceService: admission names every bad field; the LLM-D children validate against real schemas."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from schemas import assert_valid

from serving.errors import AdmissionError
from serving.kserve.llmisvc import WorkloadObservation, admit_llm_inference_service, observe_llm
from serving.kserve.reconcile.llmd import (
    ENGINE_SELECTOR_ANNOTATION,
    ROLE_LABEL,
    RUNTIME_ENV_ANNOTATION,
    engine_flag,
    reconcile_llm,
    with_engines,
)


def llmisvc(**spec) -> dict:
    return {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": "tiny", "uid": "1234"},
            "spec": {"model": {"uri": "hf://org/tiny-llama"}, **spec}}


def by_name(children: list[dict]) -> dict[str, dict]:
    return {c["metadata"]["name"]: c for c in children}


def test_defaults_namespace_model_name_and_replicas() -> None:
    admitted = admit_llm_inference_service(llmisvc())
    assert admitted["metadata"]["namespace"] == "default"
    assert admitted["spec"]["model"]["name"] == "tiny"
    assert admitted["spec"]["replicas"] == 1
    assert_valid({k: v for k, v in admitted.items()}, "serving.kserve.io_llminferenceservices.yaml", "v1alpha2")


def test_every_bad_field_is_named() -> None:
    bad = llmisvc(replicas=-1, prefill={"replicas": 0})
    bad["metadata"]["name"] = "Tiny_LLM"
    bad["spec"]["model"]["uri"] = "ftp://x/y"
    with pytest.raises(AdmissionError) as rejected:
        admit_llm_inference_service(bad)
    fields = {e.field for e in rejected.value.errors}
    assert fields == {"metadata.name", "spec.model.uri", "spec.replicas", "spec.prefill.replicas"}
    with pytest.raises(AdmissionError, match=re.escape("spec.model")):
        admit_llm_inference_service({**llmisvc(), "spec": {"replicas": 1}})


def test_engines_run_vllm_with_prefix_caching_and_kv_events() -> None:
    children = by_name(reconcile_llm(admit_llm_inference_service(llmisvc(replicas=2))))
    engines = children["tiny-kserve"]
    assert engines["spec"]["replicas"] == 2
    main = engines["spec"]["template"]["spec"]["containers"][0]
    assert "--enable-prefix-caching" in main["args"]
    kv = main["args"][main["args"].index("--kv-events-config") + 1]
    assert '"publisher":"zmq"' in kv and '"enable_kv_cache_events":true' in kv
    assert engines["spec"]["template"]["spec"]["initContainers"][0]["args"] == ["hf://org/tiny-llama", "/mnt/models"]
    assert engines["metadata"]["labels"][ROLE_LABEL] == "both"
    assert "tiny-kserve-prefill" not in children
    assert engines["metadata"]["ownerReferences"][0]["uid"] == "1234"


def test_prefill_gets_its_own_engines_and_the_pool_selects_both_roles() -> None:
    children = by_name(reconcile_llm(admit_llm_inference_service(llmisvc(prefill={"replicas": 1}))))
    assert children["tiny-kserve"]["metadata"]["labels"][ROLE_LABEL] == "decode"
    assert children["tiny-kserve-prefill"]["metadata"]["labels"][ROLE_LABEL] == "prefill"
    selector = children["tiny-inference-pool"]["spec"]["selector"]["matchLabels"]
    for deployment in ("tiny-kserve", "tiny-kserve-prefill"):
        assert selector.items() <= children[deployment]["spec"]["template"]["metadata"]["labels"].items()
    router = children["tiny-kserve-router-scheduler"]
    assert ENGINE_SELECTOR_ANNOTATION in router["metadata"]["annotations"]


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.utils.latest_version()])
def test_children_validate_against_kubernetes_and_gateway_schemas(version: str) -> None:
    for child in reconcile_llm(admit_llm_inference_service(llmisvc(prefill={"replicas": 1}))):
        if child["kind"] == "InferencePool":
            assert_valid(child, "inference.networking.k8s.io_inferencepools.yaml", "v1")
        elif child["kind"] == "HTTPRoute":
            assert_valid(child, "gatewayapi_httproute.yaml", "v1")
        else:
            kubernetes_validate.validate(child, version, strict=True)


def test_the_user_template_adds_args_and_env_and_may_replace_the_command() -> None:
    template = {"containers": [{"name": "main", "args": ["--max-model-len", "1024"],
                                "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}]}]}
    engines = by_name(reconcile_llm(admit_llm_inference_service(llmisvc(template=template))))["tiny-kserve"]
    main = engines["spec"]["template"]["spec"]["containers"][0]
    assert main["args"][-2:] == ["--max-model-len", "1024"]
    assert {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"} in main["env"]
    assert engines["spec"]["template"]["metadata"]["annotations"] == {RUNTIME_ENV_ANNOTATION: "vllm-cpu"}
    template["containers"][0]["command"] = ["python", "-m", "serving.llmd.sim_vllm"]
    engines = by_name(reconcile_llm(admit_llm_inference_service(llmisvc(template=template))))["tiny-kserve"]
    assert engines["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "serving.llmd.sim_vllm"]
    assert engines["spec"]["template"]["metadata"]["annotations"] == {}  # its own command: no vLLM runtime


def test_the_router_reads_the_model_tokenizer_and_lists_its_engines() -> None:
    router = by_name(reconcile_llm(admit_llm_inference_service(llmisvc())))["tiny-kserve-router-scheduler"]
    pod = router["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == ["hf://org/tiny-llama", "/mnt/models"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--tokenizer") + 1] == "/mnt/models"
    flags = [engine_flag("http://127.0.0.1:1", "tcp://127.0.0.1:2", "both"), engine_flag("http://127.0.0.1:3", None, "prefill")]
    assert flags == ["http://127.0.0.1:1=tcp://127.0.0.1:2", "http://127.0.0.1:3,role=prefill"]
    listed = with_engines(router, flags)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert listed[len(args):] == ["--engine", flags[0], "--engine", flags[1]]
    assert router["spec"]["template"]["spec"]["containers"][0]["args"] == args  # the input is not changed


def test_status_is_ready_only_with_every_engine_and_the_router() -> None:
    llm = {**admit_llm_inference_service(llmisvc(replicas=2)), "status": {}}
    llm["metadata"]["generation"] = 3
    url = "http://127.0.0.1:8080/serving/default/tiny"
    starting = observe_llm(llm, WorkloadObservation(2, 1), WorkloadObservation(1, 1), url)
    conditions = {c["type"]: c for c in starting["conditions"]}
    assert conditions["MainWorkloadReady"]["status"] == "Unknown"
    assert conditions["MainWorkloadReady"]["message"] == "1 of 2 engines ready"
    assert conditions["Ready"]["status"] == "Unknown" and starting["observedGeneration"] == 3
    failing = observe_llm(llm, WorkloadObservation(2, 0, "runtime environment 'vllm-cpu' is not installed"),
                          WorkloadObservation(1, 0), url, previous=starting)
    ready_condition = {c["type"]: c for c in failing["conditions"]}["Ready"]
    assert ready_condition["status"] == "False" and "not installed" in ready_condition["message"]
    ready = observe_llm(llm, WorkloadObservation(2, 2), WorkloadObservation(1, 1), url, previous=failing)
    assert {c["type"]: c["status"] for c in ready["conditions"]} == {
        "MainWorkloadReady": "True", "RouterReady": "True", "Ready": "True"}
    assert ready["url"] == url and ready["addresses"] == [{"name": "gateway", "url": url}]
    assert_valid({**llm, "status": ready}, "serving.kserve.io_llminferenceservices.yaml", "v1alpha2")


@pytest.mark.parametrize(("spec", "field"), [({"replicas": 500}, "spec.replicas"),
                                             ({"prefill": {"replicas": 500}}, "spec.prefill.replicas")])
def test_replicas_beyond_the_platform_limit_are_refused_naming_the_field(spec: dict, field: str) -> None:
    with pytest.raises(AdmissionError) as rejected:
        admit_llm_inference_service(llmisvc(**spec), max_replicas=8)
    reasons = {e.field: e.reason for e in rejected.value.errors}
    assert "500" in reasons[field] and "8" in reasons[field] and "--max-replicas" in reasons[field]
    assert admit_llm_inference_service(llmisvc(**spec))  # no limit given: KServe's own admission


@pytest.mark.parametrize("junk", [None, "x", [1], {"name": ["x"]}])
def test_junk_metadata_is_named_not_a_crash(junk: object) -> None:
    bad = llmisvc()
    bad["metadata"] = junk
    with pytest.raises(AdmissionError) as rejected:
        admit_llm_inference_service(bad)
    assert {e.field for e in rejected.value.errors} & {"metadata", "metadata.name"}
