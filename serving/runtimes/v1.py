"""KServe V1 (TensorFlow-Serving style) codec: ``{"instances": [...]}`` -> tensors -> ``{"predictions": [...]}``.

Rows that are lists become one 2-D tensor named after the field (``instances`` or ``inputs``); rows
that are objects (records) become one 1-D tensor per key, so a model with named inputs (an MLflow
signature's columns) can take them by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving.runtimes.errors import InvalidInput
from serving.runtimes.v2 import Tensor

_OPTS = orjson.OPT_SERIALIZE_NUMPY


def decode_request(body: bytes) -> list[Tensor]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object with 'instances' or 'inputs'")
    field = "instances" if "instances" in payload else "inputs" if "inputs" in payload else None
    if field is None:
        raise InvalidInput("request must contain 'instances' or 'inputs'")
    if "instances" in payload and "inputs" in payload:
        raise InvalidInput("request has both 'instances' and 'inputs'; send one of them (TensorFlow Serving's rule)")
    rows = payload[field]
    if not isinstance(rows, list):
        raise InvalidInput(f"'{field}' must be a list, got {type(rows).__name__}")
    if not rows:
        raise InvalidInput(f"'{field}' is empty")
    if isinstance(rows[0], dict):
        return _records(field, rows)
    return [_tensor(field, field, rows)]


def _records(field: str, rows: list[Any]) -> list[Tensor]:
    columns: dict[str, list[Any]] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput(f"'{field}[{index}]' must be an object like the first row")
        if index and row.keys() != columns.keys():
            raise InvalidInput(f"'{field}[{index}]' has keys {sorted(row)}, the first row has {sorted(columns)}")
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return [_tensor(f"{field}[].{key}", key, values) for key, values in columns.items()]


def _tensor(label: str, name: str, values: list[Any]) -> Tensor:
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise InvalidInput(f"'{label}' is not a regular array: {exc}") from None
    if array.dtype.kind == "U":
        array = array.astype(object)
    elif array.dtype.kind not in "biuf" and array.dtype != object:
        raise InvalidInput(f"'{label}' holds values of numpy dtype {array.dtype}, which no model takes")
    if array.dtype == object and any(isinstance(v, (list, dict)) for v in array.flat):
        raise InvalidInput(f"'{label}' is not a regular array: rows have different lengths or nested objects")
    return Tensor.from_numpy(name, array)


def encode_response(outputs: list[Tensor]) -> bytes:
    """One output -> its values; several -> one object per row keyed by output name."""
    if len(outputs) == 1:
        return orjson.dumps({"predictions": _jsonable(outputs[0].data)}, option=_OPTS)
    columns = [(t.name, _as_list(t.data)) for t in outputs]
    rows = len(columns[0][1]) if columns else 0
    return orjson.dumps({"predictions": [{name: values[i] for name, values in columns} for i in range(rows)]})


def _jsonable(array: np.ndarray) -> Any:
    # orjson writes C-contiguous native-endian numeric arrays itself, far faster than tolist().
    if array.dtype.kind in "biuf":
        if array.dtype.byteorder == ">" or not array.flags.c_contiguous:
            return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        return array
    return _as_list(array)


def _as_list(array: np.ndarray) -> list[Any]:
    values = array.tolist()
    if array.dtype.kind in "OS":
        values = _decode_bytes(values)
    return values


def _decode_bytes(values: Any) -> Any:
    if isinstance(values, list):
        return [_decode_bytes(v) for v in values]
    return values.decode(errors="replace") if isinstance(values, bytes) else values
