import pytest

from serving.kserve.llmisvc import admit_llm_inference_service
from serving.policy import (
    MODEL_NAME_LABEL,
    MODEL_VERSION_LABEL,
    ServingPolicy,
    detect_format,
    inference_service,
    llm_inference_service,
)


def test_inference_service_is_a_standard_mode_kserve_manifest() -> None:
    manifest = inference_service("iris", "s3://b/iris", "sklearn", namespace="team", model_name="iris", model_version="3",
                                 policy=ServingPolicy(min_replicas=2, max_replicas=4))
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert manifest["metadata"]["labels"] == {MODEL_NAME_LABEL: "iris", MODEL_VERSION_LABEL: "3"}
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "sklearn"}
    assert predictor["model"]["storageUri"] == "s3://b/iris"
    assert "protocolVersion" not in predictor["model"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 4)


def test_mlflow_models_default_to_the_v2_protocol() -> None:
    assert inference_service("m", "file:///m", "mlflow")["spec"]["predictor"]["model"]["protocolVersion"] == "v2"


def test_unknown_format_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="sklearn, mlflow"):
        inference_service("m", "file:///m", "tensorflow")


def test_detect_format() -> None:
    assert detect_format(["model.joblib"]) == "sklearn"
    assert detect_format(["MLmodel", "model.pkl"]) == "mlflow"
    assert detect_format(["config.json", "model.safetensors", "tokenizer.json"]) == "huggingface"
    assert detect_format(["config.json", "pytorch_model.bin"]) == "huggingface"
    with pytest.raises(ValueError, match="--format"):
        detect_format(["weights.bin"])


def test_an_llm_becomes_an_llm_inference_service_with_the_engine_settings() -> None:
    policy = ServingPolicy(min_replicas=2, engine_args=("--max-model-len", "1024"),
                           engine_env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    manifest = llm_inference_service("chat", "hf://org/tiny", model_name="chat", model_version="4", policy=policy)
    assert manifest["kind"] == "LLMInferenceService" and manifest["apiVersion"] == "serving.kserve.io/v1alpha2"
    assert manifest["spec"]["model"] == {"uri": "hf://org/tiny", "name": "chat"}
    assert manifest["spec"]["replicas"] == 2
    assert manifest["spec"]["template"]["containers"] == [{
        "name": "main", "args": ["--max-model-len", "1024"], "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}]}]
    assert manifest["metadata"]["labels"] == {MODEL_NAME_LABEL: "chat", MODEL_VERSION_LABEL: "4"}
    admit_llm_inference_service(manifest)
    assert "template" not in llm_inference_service("chat", "/models/tiny")["spec"]
