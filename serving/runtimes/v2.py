"""Open Inference Protocol (KServe V2) codec: REST request/response bodies <-> numpy tensors.

Covers JSON tensor data (flat or nested, reshaped to ``shape``) and the binary tensor data
extension that Triton defined and the ``kserve`` SDK's REST client speaks: the JSON header comes
first, its length in the ``Inference-Header-Content-Length`` HTTP header, followed by the raw tensors
in input order, each sized by ``parameters.binary_data_size``. Numbers are little-endian; BOOL is one
byte per element; BYTES elements are a 4-byte little-endian length followed by the bytes.

Everything here is pure (bytes in, bytes out) so the server's hot path is two function calls and the
rules are unit-tested without a socket. Every validation error names the tensor it is about.
"""

from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.runtimes.errors import InferenceError, InvalidInput

HEADER_LENGTH = "inference-header-content-length"
"""HTTP header (lower-case, as ASGI delivers it) with the JSON part's length in a binary body."""

# Little-endian dtypes on purpose: the wire format is little-endian whatever the host is.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

_KIND_SIZE_TO_DATATYPE = {
    (dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items() if name not in ("BYTES",)
}

_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class Tensor:
    """One named tensor. ``data`` is a numpy array already shaped to ``shape``; BYTES are object arrays."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] | None = None

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray, parameters: dict[str, Any] | None = None) -> Tensor:
        array = np.asarray(array)
        return cls(name, datatype_of(array.dtype, name), list(array.shape), array, parameters)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: follow the request-level ``binary_data_output``


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[Tensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_output(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


def datatype_of(dtype: np.dtype, name: str = "") -> str:
    """The V2 datatype of a numpy dtype; strings and objects are BYTES."""
    if dtype.kind in "OUS":
        return "BYTES"
    found = _KIND_SIZE_TO_DATATYPE.get((dtype.kind, dtype.itemsize))
    if found is None:
        raise InferenceError(f"output '{name}' has numpy dtype {dtype}, which has no V2 datatype")
    return found


# ----------------------------------------------------------------------------------------- decoding


def decode_request(body: bytes, header_length: int | str | None = None) -> InferenceRequest:
    """Decode a V2 REST infer request; ``header_length`` is the Inference-Header-Content-Length value."""
    json_end = _json_end(body, header_length)
    try:
        payload = orjson.loads(body[:json_end] if json_end != len(body) else body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = payload.get("inputs")
    if not raw_inputs or not isinstance(raw_inputs, list):
        raise InvalidInput("request has no 'inputs': expected a non-empty list of tensors")

    inputs: list[Tensor] = []
    offset = json_end
    binary_allowed = header_length is not None
    names: set[str] = set()
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _decode_input(raw, index, body, offset, binary_allowed)
        if tensor.name in names:
            raise InvalidInput(f"inputs[{index}]: a second input named '{tensor.name}'; input names must be unique")
        names.add(tensor.name)
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(f"request body has {len(body) - offset} bytes after the last binary tensor")

    outputs = None
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list of {name, parameters}")
        outputs = [_decode_output(raw, index) for index, raw in enumerate(raw_outputs)]

    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {type(request_id).__name__}")
    parameters = _parameters(payload.get("parameters"), "'parameters'")
    _flag(parameters, "binary_data_output", "parameters.binary_data_output")
    return InferenceRequest(inputs, request_id, outputs, parameters)


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    """A ``parameters`` member: absent or null is empty; anything but an object is the caller's mistake."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f'{where} must be an object like {{"binary_data": true}}, got {type(raw).__name__}')
    return raw


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


def _decode_output(raw: Any, index: int) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise InvalidInput(f"outputs[{index}] needs a 'name': every entry of 'outputs' is {{name, parameters}}")
    where = f"outputs[{index}] ('{raw['name']}')"
    params = _parameters(raw.get("parameters"), f"{where}: 'parameters'")
    return RequestedOutput(raw["name"], _flag(params, "binary_data", f"{where}: parameters.binary_data"))


def _json_end(body: bytes, header_length: int | str | None) -> int:
    if header_length is None:
        return len(body)
    try:
        length = int(header_length)
    except (TypeError, ValueError):
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes")
    return length


def _decode_input(raw: Any, index: int, body: bytes, offset: int, binary_allowed: bool) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] has no 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            f"input '{name}': unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        )
    dtype = DATATYPES[datatype]
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), f"input '{name}': 'parameters'") or None

    data = raw.get("data")
    if data is not None:
        array = _from_json(name, datatype, dtype, data)
    elif parameters and "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not binary_allowed:
            raise InvalidInput(
                f"input '{name}': binary_data_size needs an Inference-Header-Content-Length header giving the "
                "JSON part's length (or send the values in 'data')"
            )
        if type(size) is not int or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer, got {size!r}")
        if offset + size > len(body):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size} exceeds the {len(body) - offset} bytes left in the body"
            )
        array = _from_binary(name, datatype, dtype, count, body, offset, size)
        offset += size
    else:
        raise InvalidInput(f"input '{name}': has neither 'data' nor parameters.binary_data_size")

    if array.size != count:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {count} elements but the data has {array.size}"
        )
    if array.shape != tuple(shape):
        array = array.reshape(shape)
    return Tensor(name, datatype, shape, array, parameters), offset


def _from_json(name: str, datatype: str, dtype: np.dtype, data: Any) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            # An object array keeps each string whole (np.str_ arrays would pad and strip NULs).
            array = np.empty(0, dtype=object) if not data else np.array(data, dtype=object)
            if array.dtype != object or any(isinstance(v, list) for v in array.flat):
                raise ValueError("ragged nested lists")
            if any(v is None for v in array.flat):
                _refuse_element(name, datatype, data)
            return array
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below, with a clear message
            array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': data is not a regular array of {datatype}: {exc}") from None
    # JSON has no NaN or infinity: a non-finite float came from null or a number beyond the type's range.
    # numpy turns None into NaN and True for BOOL, so those two need the same check on the source.
    if (dtype.kind == "f" and not np.isfinite(array).all()) or (dtype.kind == "b" and None in _flat(data)):
        _refuse_element(name, datatype, data)
    return array


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in data:
        if isinstance(value, list):
            out.extend(_flat(value))
        else:
            out.append(value)
    return out


def _refuse_element(name: str, datatype: str, data: list[Any]) -> None:
    """Raise the 400 for the first JSON value that ``datatype`` cannot hold (only on the error path)."""
    needs = {"BOOL": "true or false", "BYTES": "a string"}.get(datatype, "a number")
    dtype = DATATYPES[datatype]
    limit = float(np.finfo(dtype).max) if dtype.kind == "f" else math.inf
    for index, value in enumerate(_flat(data)):
        if value is None:
            raise InvalidInput(f"input '{name}': data[{index}] is null; {datatype} needs {needs}")
        if isinstance(value, (int, float)) and abs(value) > limit:
            raise InvalidInput(f"input '{name}': data[{index}] = {value} is beyond {datatype}'s range (±{limit:.8g})")
    raise InvalidInput(f"input '{name}': data holds values {datatype} cannot represent")


def _from_binary(
    name: str, datatype: str, dtype: np.dtype, count: int, body: bytes, offset: int, size: int
) -> np.ndarray:
    if datatype == "BYTES":
        return deserialize_bytes(body[offset : offset + size], name)
    expected = count * dtype.itemsize
    if size != expected:
        raise InvalidInput(
            f"input '{name}': binary_data_size is {size} bytes but {count} {datatype} elements need {expected}"
        )
    # Zero-copy view into the request body (read-only, which is what a model should expect).
    return np.frombuffer(body, dtype=dtype, count=count, offset=offset)


def deserialize_bytes(buffer: bytes, name: str = "") -> np.ndarray:
    """Length-prefixed BYTES elements (4-byte little-endian length each) -> 1-D object array of bytes."""
    items: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': BYTES data ends inside an element's length prefix")
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"input '{name}': BYTES element of {length} bytes runs past its binary data")
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def serialize_bytes(array: np.ndarray) -> bytes:
    """Object/str/bytes array -> length-prefixed elements in row-major order."""
    parts: list[bytes] = []
    for item in array.flat:
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


# ----------------------------------------------------------------------------------------- encoding


def encode_response(
    model_name: str,
    outputs: list[Tensor],
    request: InferenceRequest | None = None,
    model_version: str | None = None,
) -> tuple[bytes, int | None]:
    """Encode a V2 infer response: ``(body, json_length)``; ``json_length`` is None for plain JSON.

    Outputs follow the request's ``outputs`` list when it has one (that list selects and orders
    them); each is binary when its own ``binary_data`` says so, else when ``binary_data_output`` does.
    """
    default_binary = request.binary_output if request is not None else False
    selected: list[tuple[Tensor, bool]]
    if request is not None and request.outputs:
        by_name = {t.name: t for t in outputs}
        selected = []
        for wanted in request.outputs:
            tensor = by_name.get(wanted.name)
            if tensor is None:
                raise InvalidInput(
                    f"requested output '{wanted.name}' is not produced by model '{model_name}'; "
                    f"it produces: {', '.join(repr(n) for n in by_name)}"
                )
            selected.append((tensor, default_binary if wanted.binary is None else wanted.binary))
    else:
        selected = [(t, default_binary) for t in outputs]

    encoded: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor, binary in selected:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.parameters:
            entry["parameters"] = dict(tensor.parameters)
        if binary:
            blob = _to_binary(tensor)
            entry.setdefault("parameters", {})["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = _to_json_data(tensor)
        encoded.append(entry)

    response: dict[str, Any] = {
        "model_name": model_name,
        "id": request.id if request is not None and request.id is not None else str(uuid.uuid4()),
        "outputs": encoded,
    }
    if model_version is not None:
        response["model_version"] = model_version
    header = orjson.dumps(response, option=_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _to_json_data(tensor: Tensor) -> Any:
    array = tensor.data
    if tensor.datatype == "BYTES":
        out = []
        for item in array.flat:
            if isinstance(item, bytes):
                try:
                    item = item.decode()
                except UnicodeDecodeError:
                    raise InferenceError(
                        f"output '{tensor.name}' holds bytes that are not UTF-8; request it with binary_data"
                    ) from None
            out.append(item if isinstance(item, str) else str(item))
        return out
    # orjson serializes C-contiguous numeric arrays natively: much faster than tolist().
    flat = array.ravel()
    if not flat.flags.c_contiguous or flat.dtype.byteorder == ">":
        flat = np.ascontiguousarray(flat, dtype=DATATYPES[tensor.datatype])
    return flat


def _to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype=DATATYPES[tensor.datatype]).tobytes()


def encode_request(
    inputs: list[Tensor],
    *,
    binary: bool = False,
    request_id: str | None = None,
    outputs: list[RequestedOutput] | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode a V2 infer request (the client side): ``(body, json_length)``, binary when asked."""
    encoded, blobs = [], []
    for tensor in inputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        params = dict(tensor.parameters or {})
        if binary:
            blob = _to_binary(tensor)
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = _to_json_data(tensor)
        if params:
            entry["parameters"] = params
        encoded.append(entry)
    body: dict[str, Any] = {"inputs": encoded}
    if request_id is not None:
        body["id"] = request_id
    if outputs:
        body["outputs"] = [
            {"name": o.name, **({} if o.binary is None else {"parameters": {"binary_data": o.binary}})}
            for o in outputs
        ]
    if parameters:
        body["parameters"] = parameters
    header = orjson.dumps(body, option=_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def decode_response(body: bytes, header_length: int | str | None = None) -> dict[str, Any]:
    """Decode a V2 infer response (the client side): the JSON with each output's ``data`` as numpy."""
    json_end = _json_end(body, header_length)
    payload = orjson.loads(body[:json_end])
    offset = json_end
    for raw in payload.get("outputs", []):
        dtype = DATATYPES[raw["datatype"]]
        params = raw.get("parameters") or {}
        count = math.prod(raw["shape"])
        if "data" in raw:
            array = _from_json(raw["name"], raw["datatype"], dtype, raw["data"])
        else:
            size = params["binary_data_size"]
            array = _from_binary(raw["name"], raw["datatype"], dtype, count, body, offset, size)
            offset += size
        raw["data"] = array.reshape(raw["shape"])
    return payload
