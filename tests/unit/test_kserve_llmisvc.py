"""LLMInferenceService: admission names every bad field; the LLM-D children validate against real schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest

from schemas import assert_valid
from serving.errors import AdmissionError
from serving.kserve.llmisvc import admit_llm_inference_service
from serving.kserve.reconcile.llmd import ENGINE_SELECTOR_ANNOTATION, ROLE_LABEL, reconcile_llm


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
    with pytest.raises(AdmissionError, match="spec.model"):
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
