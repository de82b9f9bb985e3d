"""scikit-learn runtime: one pickled estimator (``.joblib``, ``.pkl`` or ``.pickle``) from the model dir."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from serving.runtimes.errors import InvalidInput, ModelLoadError
from serving.runtimes.model import OUTPUT_NAME, Model, single_2d_input
from serving.runtimes.v2 import Tensor, datatype_of

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


def find_model_file(model_dir: str | Path, extensions: tuple[str, ...] = MODEL_EXTENSIONS) -> Path:
    """The one model file in ``model_dir`` (searched recursively: storage layouts nest); else a clear error."""
    path = Path(model_dir)
    if path.is_file():
        if path.suffix in extensions:
            return path
        raise ModelLoadError(f"{path} is not a model file; expected one of {', '.join(extensions)}")
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in extensions)
    if not found:
        raise ModelLoadError(f"no model file ({', '.join(extensions)}) under {path}")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in found)
        raise ModelLoadError(f"{path} holds {len(found)} model files ({names}); keep exactly one")
    return found[0]


def load_estimator(file: Path) -> Any:
    import joblib  # joblib reads plain pickles too
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():
        # Models pickled by older sklearn (KServe's iris sample is 0.23) load fine; only this warning is noise.
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        try:
            estimator = joblib.load(file)
        except Exception as exc:
            raise ModelLoadError(f"cannot load {file}: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(f"{file} holds a {type(estimator).__name__}, which has no predict()")
    return estimator


def _holds_null(rows: np.ndarray) -> bool:
    return rows.dtype == object and any(value is None for value in rows.flat)


class SKLearnModel(Model):
    platform = "sklearn"

    def __init__(self, name: str, model_dir: str | Path, version: str | None = None) -> None:
        super().__init__(name, version)
        # Resolve the file now so a bad directory fails at start-up, before the server binds.
        self.model_file = find_model_file(model_dir)
        self.estimator: Any = None
        self._n_features: int | None = None

    async def load(self) -> bool:
        self.estimator = await asyncio.to_thread(load_estimator, self.model_file)
        self._n_features = getattr(self.estimator, "n_features_in_", None)
        self.ready = True
        return True

    def preprocess(self, inputs: list[Tensor]) -> np.ndarray:
        array = single_2d_input(inputs)
        name = inputs[0].name if len(inputs) == 1 else "+".join(t.name for t in inputs)
        if array.shape[0] == 0:
            raise InvalidInput(f"input '{name}' has shape {list(array.shape)}: no rows; send at least one row")
        if self._n_features is not None and array.shape[1] != self._n_features:
            raise InvalidInput(
                f"input '{name}' has {array.shape[1]} features per row; model '{self.name}' expects {self._n_features}"
            )
        return array

    def predict(self, payload: np.ndarray) -> np.ndarray:
        try:
            return self.estimator.predict(payload)
        except (ValueError, TypeError) as exc:
            # sklearn validates X itself (check_array: NaN, infinity, strings, dtypes) and says so with
            # ValueError/TypeError: the request's fault, a 400. Any other exception is the model's (500).
            hint = " (a null in the request arrives as NaN)" if _holds_null(payload) else ""
            raise InvalidInput(f"model '{self.name}' cannot take this input: {exc}{hint}") from None

    def input_metadata(self) -> list[dict[str, Any]]:
        width = self._n_features if self._n_features is not None else -1
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}]

    def output_metadata(self) -> list[dict[str, Any]]:
        classes = getattr(self.estimator, "classes_", None)
        datatype = datatype_of(np.asarray(classes).dtype) if classes is not None else "FP64"
        return [{"name": OUTPUT_NAME, "datatype": datatype, "shape": [-1]}]
