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


def test_policy_annotations_labels_and_autoscaler_class_are_written() -> None:
    policy = ServingPolicy(deployment_mode="Serverless", annotations={"serving.odh.io/canary-percent": "10"},
                           labels={"networking.kserve.io/visibility": "cluster-local"}, scale_metric="rps", scale_target=5)
    manifest = inference_service("iris", "s3://b/iris", "sklearn", model_name="iris", model_version="2", policy=policy)
    assert manifest["metadata"]["annotations"] == {"serving.odh.io/canary-percent": "10",
                                                   "serving.kserve.io/deploymentMode": "Serverless"}
    assert manifest["metadata"]["labels"] == {"networking.kserve.io/visibility": "cluster-local",
                                              MODEL_NAME_LABEL: "iris", MODEL_VERSION_LABEL: "2"}
    assert (manifest["spec"]["predictor"]["scaleMetric"], manifest["spec"]["predictor"]["scaleTarget"]) == ("rps", 5)


def test_keda_policy_writes_autoscaling_metrics_instead_of_scale_metric() -> None:
    policy = ServingPolicy(autoscaler_class="keda", keda_metric="concurrency", scale_target=3, scale_down_window=90,
                           metrics_server="http://127.0.0.1:8080")
    manifest = inference_service("iris", "s3://b/iris", "sklearn", namespace="team", policy=policy)
    predictor = manifest["spec"]["predictor"]
    assert manifest["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert "scaleMetric" not in predictor and "scaleTarget" not in predictor
    (metric,) = predictor["autoScaling"]["metrics"]
    assert metric["external"]["metric"]["query"] == 'sum(odh_gateway_in_flight{route="team/iris"})'
    assert metric["external"]["target"] == {"type": "Value", "value": "3"}
    assert predictor["autoScaling"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 90}}


def test_huggingface_inference_service_is_written_for_a_cluster_runtime() -> None:
    manifest = inference_service("chat", "hf://org/tiny", "huggingface", policy=ServingPolicy(model_args=("--backend=vllm",)))
    assert manifest["spec"]["predictor"]["model"]["modelFormat"] == {"name": "huggingface"}
    assert manifest["spec"]["predictor"]["model"]["args"] == ["--backend=vllm"]


def test_llm_policy_writes_parallelism_scaling_and_engine_resources() -> None:
    policy = ServingPolicy(min_replicas=1, requests={"cpu": "8", "nvidia.com/gpu": "2"}, limits={"nvidia.com/gpu": "2"},
                           engine_resources=True, parallelism={"tensor": 2},
                           engine_scaling={"minReplicas": 1, "maxReplicas": 4, "wva": {"hpa": {}}},
                           annotations={"security.opendatahub.io/enable-auth": "true"})
    manifest = llm_inference_service("chat", "hf://org/tiny", policy=policy)
    assert manifest["spec"]["parallelism"] == {"tensor": 2}
    assert manifest["spec"]["scaling"]["maxReplicas"] == 4
    assert manifest["spec"]["template"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert manifest["metadata"]["annotations"] == {"security.opendatahub.io/enable-auth": "true"}
    assert "worker" not in manifest["spec"]
    admit_llm_inference_service(manifest)
