import pytest

from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL, ServingPolicy, detect_format, inference_service


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
    with pytest.raises(ValueError, match="--format"):
        detect_format(["weights.bin"])
