"""MLflow pyfunc runtime: any directory with an ``MLmodel`` file, loaded with ``mlflow.pyfunc.load_model``.

Tensor inputs are turned into what the model's signature asks for, as MLServer's mlflow runtime does:
a column-based signature gets a pandas DataFrame whose columns are the inputs of the same names; a
tensor-based signature gets a dict of arrays (named inputs) or one array; no signature gets a
DataFrame of the single 2-D input (or of 1-D inputs as named columns). One 2-D input also fills a
column signature positionally when its width matches, so the plain V1 ``instances`` and the
``input-0`` V2 request that KServe's samples send work against a signed model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from serving.runtimes.errors import InvalidInput, ModelLoadError
from serving.runtimes.model import Model
from serving.runtimes.v2 import Tensor, datatype_of

MLMODEL = "MLmodel"


def find_mlflow_dir(model_dir: str | Path) -> Path | None:
    """The directory holding ``MLmodel``: ``model_dir`` itself or a single nested one; None if absent."""
    path = Path(model_dir)
    if (path / MLMODEL).is_file():
        return path
    if not path.is_dir():
        return None
    found = sorted(p.parent for p in path.rglob(MLMODEL) if p.is_file())
    if len(found) > 1:
        raise ModelLoadError(f"{path} holds {len(found)} MLflow models ({', '.join(map(str, found))}); keep one")
    return found[0] if found else None


class MLflowModel(Model):
    platform = "mlflow"

    def __init__(self, name: str, model_dir: str | Path, version: str | None = None) -> None:
        super().__init__(name, version)
        found = find_mlflow_dir(model_dir)
        if found is None:
            raise ModelLoadError(f"no {MLMODEL} file under {model_dir}: not an MLflow model directory")
        self.model_dir = found
        self.pyfunc: Any = None
        self._inputs: Any = None  # mlflow Schema or None
        self._outputs: Any = None

    async def load(self) -> bool:
        self.pyfunc = await asyncio.to_thread(self._load)
        self.ready = True
        return True

    def _load(self) -> Any:
        import mlflow.pyfunc

        try:
            model = mlflow.pyfunc.load_model(str(self.model_dir))
        except Exception as exc:
            raise ModelLoadError(f"cannot load MLflow model {self.model_dir}: {type(exc).__name__}: {exc}") from exc
        self._inputs = model.metadata.get_input_schema()
        self._outputs = model.metadata.get_output_schema()
        return model

    def preprocess(self, inputs: list[Tensor]) -> Any:
        import pandas as pd

        schema = self._inputs
        by_name = {t.name: t for t in inputs}
        if schema is None:
            if len(inputs) == 1:
                return _frame_or_array(inputs[0])
            return pd.DataFrame({t.name: _column(t) for t in inputs})
        if schema.is_tensor_spec():
            if not schema.has_input_names():
                if len(inputs) != 1:
                    raise InvalidInput(f"model '{self.name}' takes one unnamed tensor, the request has {len(inputs)}")
                return inputs[0].data
            _require(self.name, schema.required_input_names(), by_name)
            return {name: by_name[name].data for name in schema.input_names() if name in by_name}
        # Column-based signature.
        names = schema.input_names() if schema.has_input_names() else None
        if names and any(n in by_name for n in names):
            _require(self.name, schema.required_input_names(), by_name)
            return pd.DataFrame({n: _column(by_name[n]) for n in names if n in by_name})
        width = len(schema.inputs)
        if len(inputs) == 1 and inputs[0].data.ndim == 2 and inputs[0].data.shape[1] == width:
            return pd.DataFrame(_strings(inputs[0].data), columns=names)
        wanted = f"one input per column ({', '.join(repr(n) for n in names)}) or " if names else ""
        sent = ", ".join(f"'{t.name}' {list(t.data.shape)}" for t in inputs)
        raise InvalidInput(f"model '{self.name}' expects {width} columns: send {wanted}one [rows, {width}] input; got {sent}")

    def predict(self, payload: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.pyfunc.predict(payload)
        except MlflowException as exc:
            # Schema enforcement failures are the caller's fault: answer 400, not 500.
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
                raise InvalidInput(f"model '{self.name}' rejected the input: {exc.message}") from None
            raise

    def input_metadata(self) -> list[dict[str, Any]]:
        return _schema_metadata(self._inputs, "input")

    def output_metadata(self) -> list[dict[str, Any]]:
        return _schema_metadata(self._outputs, "output")


def _require(model: str, required: list[Any], present: dict[str, Tensor]) -> None:
    missing = [str(n) for n in required if n not in present]
    if missing:
        raise InvalidInput(
            f"model '{model}' needs inputs named {', '.join(repr(n) for n in missing)}; "
            f"the request has {', '.join(repr(n) for n in present)}"
        )


def _strings(array: np.ndarray) -> np.ndarray:
    """BYTES arrive as bytes objects; pandas models expect str columns (as MLServer's ``str`` codec does)."""
    if array.dtype == object and array.size and isinstance(array.flat[0], bytes):
        return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(array)
    return array


def _column(tensor: Tensor) -> Any:
    data = _strings(tensor.data)
    if data.ndim == 1:
        return data
    if data.ndim == 2 and data.shape[1] == 1:
        return data.reshape(-1)
    return list(data)  # one array per row, as MLServer's pandas codec does for multi-dim inputs


def _frame_or_array(tensor: Tensor) -> Any:
    import pandas as pd

    data = _strings(tensor.data)
    if data.ndim == 1:
        return pd.DataFrame({tensor.name: data})
    if data.ndim == 2:
        return pd.DataFrame(data)
    return data


def _schema_metadata(schema: Any, kind: str) -> list[dict[str, Any]]:
    if schema is None:
        return []
    out = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else f"{kind}-{index}"
        tensor = schema.is_tensor_spec()
        try:
            datatype = datatype_of(np.dtype(spec.type if tensor else spec.type.to_numpy()))
        except Exception:  # datetimes, arrays, objects: no numeric tensor type, sent as BYTES
            datatype = "BYTES"
        out.append({"name": name, "datatype": datatype, "shape": list(spec.shape) if tensor else [-1]})
    return out
