"""The model classes: the KServe iris sample through SKLearnModel, a real MLflow model, the repository."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from serving.runtimes.errors import InferenceError, InvalidInput, ModelLoadError, ModelNotFound, ModelNotReady
from serving.runtimes.model import Model, ModelRepository, to_tensors
from serving.runtimes.server import build_model, detect_format
from serving.runtimes.sklearn_model import SKLearnModel, find_model_file
from serving.runtimes.v2 import Tensor

IRIS_ROWS = np.array([[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]], dtype=np.float32)
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


# ------------------------------------------------------------------------------------------ sklearn


async def test_iris_sample_predicts_1_1_without_version_warnings(iris_dir: Path) -> None:
    model = SKLearnModel("iris", iris_dir)
    assert not model.ready
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # InconsistentVersionWarning must be suppressed, nothing else raised
        await model.load()
    assert model.ready
    (output,) = await model([Tensor.from_numpy("input-0", IRIS_ROWS)])
    assert (output.name, output.datatype, output.shape, output.data.tolist()) == ("output-0", "INT64", [2], [1, 1])
    meta = model.metadata()
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


async def test_sklearn_input_errors_are_400(iris_dir: Path) -> None:
    model = SKLearnModel("iris", iris_dir)
    await model.load()
    with pytest.raises(InvalidInput, match=r"input 'input-0' has 3 features per row; model 'iris' expects 4"):
        await model([Tensor.from_numpy("input-0", IRIS_ROWS[:, :3])])
    with pytest.raises(InvalidInput, match=r"input 'x' must be 2-D \[rows, features\], got shape \[4\]"):
        await model([Tensor.from_numpy("x", IRIS_ROWS[0])])
    # Four 1-D inputs are four columns.
    columns = [Tensor.from_numpy(name, IRIS_ROWS[:, i]) for i, name in enumerate(COLUMNS)]
    (output,) = await model(columns)
    assert output.data.tolist() == [1, 1]


class _BrokenEstimator:
    n_features_in_ = 4

    def predict(self, rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("the estimator's own bug")


async def test_model_failure_on_valid_input_is_500_naming_the_model(iris_dir: Path) -> None:
    model = SKLearnModel("iris", iris_dir)
    await model.load()
    model.estimator = _BrokenEstimator()
    with pytest.raises(InferenceError, match="model 'iris' failed: RuntimeError: the estimator's own bug") as caught:
        await model([Tensor.from_numpy("input-0", IRIS_ROWS)])
    assert caught.value.status_code == 500


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.zeros((0, 4), dtype=np.float32), "input 'input-0' has shape [0, 4]: no rows; send at least one row"),
        (np.array([[None, 1, None, 2]], dtype=object), "model 'iris' cannot take this input: Input X contains NaN"),
        (np.array([[np.nan, 1, 2, 3]]), "model 'iris' cannot take this input: Input X contains NaN"),
        (np.array([[np.inf, 1, 2, 3]]), "model 'iris' cannot take this input: Input X contains infinity"),
        (np.array([["a", "b", "c", "d"]], dtype=object), "model 'iris' cannot take this input: could not convert string to float: 'a'"),
    ],
)
async def test_input_the_estimator_refuses_is_400(iris_dir: Path, rows: np.ndarray, message: str) -> None:
    """sklearn validates X itself (ValueError/TypeError): that is the caller's input, not a model failure."""
    model = SKLearnModel("iris", iris_dir)
    await model.load()
    with pytest.raises(InvalidInput) as caught:
        await model([Tensor.from_numpy("input-0", rows)])
    assert message in str(caught.value)
    if rows.dtype == object and None in rows.tolist()[0]:
        assert str(caught.value).endswith("(a null in the request arrives as NaN)")


def test_model_file_discovery(tmp_path: Path, iris_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        find_model_file(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match=r"no model file \(.joblib, .pkl, .pickle\)"):
        find_model_file(tmp_path)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(iris_dir / "model.joblib", nested / "model.pkl")
    (tmp_path / "README.md").write_text("not a model")
    assert find_model_file(tmp_path) == nested / "model.pkl"
    assert find_model_file(nested / "model.pkl") == nested / "model.pkl"
    shutil.copy(iris_dir / "model.joblib", tmp_path / "other.pickle")
    with pytest.raises(ModelLoadError, match=r"holds 2 model files \(a/b/model.pkl, other.pickle\); keep exactly one"):
        find_model_file(tmp_path)
    with pytest.raises(ModelLoadError, match="is not a model file"):
        find_model_file(tmp_path / "README.md")


async def test_unloadable_file_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"not a pickle")
    model = SKLearnModel("bad", tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load"):
        await model.load()
    assert not model.ready


# ------------------------------------------------------------------------------------------ mlflow


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real MLflow models of one LogisticRegression: with a column signature and without one."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=COLUMNS)
    estimator = LogisticRegression(max_iter=500).fit(frame, iris.target)
    root = tmp_path_factory.mktemp("mlflow")
    signed, unsigned = root / "signed", root / "unsigned"
    mlflow.sklearn.save_model(estimator, signed, signature=infer_signature(frame, estimator.predict(frame)))
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(iris.data, iris.target), unsigned)
    return {"signed": signed, "unsigned": unsigned, "expected": estimator.predict(pd.DataFrame(IRIS_ROWS, columns=COLUMNS))}


async def test_mlflow_named_columns_by_input_name(mlflow_models) -> None:
    from serving.runtimes.mlflow_model import MLflowModel

    model = MLflowModel("flowers", mlflow_models["signed"])
    await model.load()
    columns = [Tensor.from_numpy(name, IRIS_ROWS[:, i].astype(np.float64)) for i, name in enumerate(COLUMNS)]
    (output,) = await model(columns)
    assert output.name == "output-0"
    assert output.datatype == "INT64"
    assert output.data.tolist() == mlflow_models["expected"].tolist() == [1, 1]
    # One [rows, 4] tensor fills the signature's columns by position (KServe's iris request shape).
    (output,) = await model([Tensor.from_numpy("input-0", IRIS_ROWS.astype(np.float64))])
    assert output.data.tolist() == [1, 1]

    meta = model.metadata()
    assert meta["platform"] == "mlflow"
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"][0]["datatype"] == "INT64"


async def test_mlflow_missing_column_is_400_naming_it(mlflow_models) -> None:
    from serving.runtimes.mlflow_model import MLflowModel

    model = MLflowModel("flowers", mlflow_models["signed"])
    await model.load()
    partial = [Tensor.from_numpy(name, IRIS_ROWS[:, i].astype(np.float64)) for i, name in enumerate(COLUMNS[:3])]
    with pytest.raises(InvalidInput, match="needs inputs named 'petal_width'"):
        await model(partial)
    with pytest.raises(InvalidInput, match="expects 4 columns"):
        await model([Tensor.from_numpy("input-0", IRIS_ROWS[:, :2].astype(np.float64))])
    with pytest.raises(InvalidInput, match="rejected the input"):
        wrong = [Tensor.from_numpy(name, np.array(["a", "b"], dtype=object)) for name in COLUMNS]
        await model(wrong)


async def test_mlflow_without_signature_takes_a_2d_array(mlflow_models) -> None:
    from serving.runtimes.mlflow_model import MLflowModel

    model = MLflowModel("plain", mlflow_models["unsigned"])
    await model.load()
    (output,) = await model([Tensor.from_numpy("input-0", IRIS_ROWS)])
    assert output.data.tolist() == [1, 1]
    assert model.metadata()["inputs"] == []


def test_format_detection(tmp_path: Path, iris_dir: Path, mlflow_models) -> None:
    assert detect_format(iris_dir) == "sklearn"
    assert detect_format(mlflow_models["signed"]) == "mlflow"
    assert build_model("m", mlflow_models["signed"]).platform == "mlflow"
    # An MLflow sklearn model holds model.pkl too; MLmodel wins in auto.
    assert build_model("m", mlflow_models["signed"].parent / "signed").platform == "mlflow"
    assert build_model("m", iris_dir, "sklearn").platform == "sklearn"
    with pytest.raises(ModelLoadError, match="not an MLflow model"):
        build_model("m", iris_dir, "mlflow")
    with pytest.raises(ModelLoadError, match="unknown model format 'onnx'"):
        build_model("m", iris_dir, "onnx")


# ---------------------------------------------------------------------------------------- repository


async def test_repository_lookups_and_readiness() -> None:
    model = Model("one")
    repository = ModelRepository([model])
    assert not repository.ready
    with pytest.raises(ModelNotReady, match="model 'one' is not ready"):
        repository.get_ready("one")
    await repository.load_all()
    assert repository.ready and repository.get_ready("one") is model
    with pytest.raises(ModelNotFound, match="model 'two' is not served here; this server serves: 'one'") as caught:
        repository.get("two")
    assert caught.value.status_code == 404
    assert not ModelRepository().ready


def test_to_tensors_handles_framework_outputs() -> None:
    import pandas as pd

    assert [t.name for t in to_tensors(np.array([1]))] == ["output-0"]
    assert [t.name for t in to_tensors([0.5, 0.25])] == ["output-0"]
    assert [(t.name, t.datatype) for t in to_tensors(pd.Series(["a"]))] == [("output-0", "BYTES")]
    frame = to_tensors(pd.DataFrame({"label": [1, 2], "score": [0.5, 0.25]}))
    assert [(t.name, t.datatype, t.shape) for t in frame] == [("label", "INT64", [2]), ("score", "FP64", [2])]
    assert [t.name for t in to_tensors({"a": np.zeros(2), "b": [1]})] == ["a", "b"]
