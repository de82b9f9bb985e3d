"""The V2 (Open Inference Protocol) codec: JSON and binary tensors, validation messages, kserve SDK parity."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving.runtimes import v2
from serving.runtimes.errors import InvalidInput
from serving.runtimes.v2 import RequestedOutput, Tensor

SAMPLES = {
    "BOOL": np.array([[True, False], [False, True]]),
    "INT8": np.array([[-128, 0], [5, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 1], [2, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 1], [2, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 1], [2, 2**63 - 1]], dtype=np.int64),
    "UINT8": np.array([[0, 1], [2, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 1], [2, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 1], [2, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 1], [2, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -1.25], [2.0, 65504.0]], dtype=np.float16),
    "FP32": np.array([[6.8, 2.8], [4.8, 1.4]], dtype=np.float32),
    "FP64": np.array([[1e-300, -2.5], [3.0, 1e300]], dtype=np.float64),
    "BYTES": np.array([[b"a", b""], [b"caf\xc3\xa9", b"x\x00y"]], dtype=object),
}


def _json_request(inputs: list[dict], **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(datatype: str, binary: bool) -> None:
    array = SAMPLES[datatype]
    tensor = Tensor.from_numpy("x", array)
    assert tensor.datatype == datatype
    body, json_length = v2.encode_request([tensor], binary=binary, request_id="r1")
    assert (json_length is not None) == binary
    request = v2.decode_request(body, json_length)
    decoded = request.inputs[0]
    assert (decoded.name, decoded.datatype, decoded.shape) == ("x", datatype, [2, 2])
    expected = array
    if datatype == "BYTES" and not binary:  # JSON carries text: bytes come back as str
        expected = np.vectorize(lambda b: b.decode(), otypes=[object])(array)
    assert decoded.data.shape == (2, 2)
    assert decoded.data.tolist() == expected.tolist()
    if datatype != "BYTES":
        assert decoded.data.dtype == v2.DATATYPES[datatype]

    # ... and back out through a response, both ways. JSON carries BYTES as text, binary as bytes.
    as_text = _texts(decoded.data.tolist())
    response, response_length = v2.encode_response("m", [decoded], request)
    assert response_length is None
    out = v2.decode_response(response)["outputs"][0]
    assert out["data"].tolist() == (as_text if datatype == "BYTES" else decoded.data.tolist())
    request.parameters["binary_data_output"] = True
    response, response_length = v2.encode_response("m", [decoded], request)
    assert response_length is not None
    payload = v2.decode_response(response, response_length)
    assert payload["id"] == "r1"
    if datatype == "BYTES":
        assert payload["outputs"][0]["data"].tolist() == array.tolist()
    else:
        assert payload["outputs"][0]["data"].tolist() == array.tolist()
        assert payload["outputs"][0]["data"].dtype == array.dtype


def _texts(rows: list) -> list:
    return [_texts(v) if isinstance(v, list) else v.decode() if isinstance(v, bytes) else v for v in rows]


def test_flat_and_nested_json_data_are_reshaped_to_shape() -> None:
    flat = v2.decode_request(_json_request([{"name": "a", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]}]))
    nested = v2.decode_request(
        _json_request([{"name": "a", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2, 3], [4, 5, 6]]}])
    )
    assert flat.inputs[0].data.tolist() == nested.inputs[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_iris_fixture_decodes(iris_dir) -> None:
    request = v2.decode_request((iris_dir / "iris-input-v2.json").read_bytes())
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, tensor.data.shape, tensor.data.dtype) == ("input-0", "FP32", (2, 4), np.float32)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (_json_request([]), "no 'inputs'"),
        (orjson.dumps({"id": "1"}), "no 'inputs'"),
        (_json_request([{"shape": [1], "datatype": "FP32", "data": [1]}]), "inputs[0] has no 'name'"),
        (_json_request([{"name": "a", "shape": [1], "datatype": "FP128", "data": [1]}]), "input 'a': unknown datatype 'FP128'"),
        (_json_request([{"name": "a", "shape": [1], "data": [1]}]), "input 'a': unknown datatype None"),
        (
            _json_request([{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]),
            "input 'a': shape [2, 2] needs 4 elements but the data has 3",
        ),
        (_json_request([{"name": "a", "shape": "2", "datatype": "FP32", "data": [1, 2]}]), "input 'a': 'shape' must be a list"),
        (
            _json_request([{"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]}]),
            "input 'a': 'shape' must be a list of non-negative",
        ),
        (_json_request([{"name": "a", "shape": [2], "datatype": "FP32"}]), "input 'a': has neither 'data' nor"),
        (
            _json_request([{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}]),
            "input 'a': data is not a regular array of FP32",
        ),
        (_json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]), "input 'a': data is not a regular array of FP32"),
        (_json_request([{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]), "input 'a': data is not a regular array of INT8"),
        (
            _json_request([{"name": "s", "shape": [2], "datatype": "BYTES", "data": [["a", "b"], ["c"]]}]),
            "input 's': data is not a regular array of BYTES",
        ),
        # Malformed structure around valid tensors: each a 400 naming the field, never a 500.
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "parameters": "binary_data_size"}]),
            "input 'a': 'parameters' must be an object",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "parameters": ["binary_data_size"]}]),
            "input 'a': 'parameters' must be an object",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "parameters": "x"}]),
            "input 'a': 'parameters' must be an object",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], outputs=[{"name": "o", "parameters": "x"}]),
            "outputs[0] ('o'): 'parameters' must be an object",
        ),
        (
            _json_request(
                [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "o", "parameters": {"binary_data": "yes"}}],
            ),
            "outputs[0] ('o'): parameters.binary_data must be true or false",
        ),
        (_json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], outputs={"name": "o"}), "'outputs' must be a list"),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], parameters={"binary_data_output": 1}),
            "parameters.binary_data_output must be true or false",
        ),
        (_json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], parameters=[1]), "'parameters' must be an object"),
        (_json_request([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], id=7), "'id' must be a string"),
        (
            _json_request(
                [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]
            ),
            "inputs[1]: a second input named 'a'",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]),
            "binary_data_size needs an Inference-Header-Content-Length header",
        ),
        # Values a JSON number cannot put in the tensor's type.
        (
            _json_request([{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 2, 3, 4]}]),
            "input 'a': data[0] = 1e+39 is beyond FP32's range (±3.4028235e+38)",
        ),
        (
            _json_request([{"name": "a", "shape": [2], "datatype": "FP16", "data": [1, -70000]}]),
            "input 'a': data[1] = -70000 is beyond FP16's range (±65504)",
        ),
        (
            _json_request([{"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, None]]}]),
            "input 'a': data[3] is null; FP64 needs a number",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "INT32", "data": [None]}]),
            "input 'a': data is not a regular array of INT32",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "BOOL", "data": [None]}]),
            "input 'a': data[0] is null; BOOL needs true or false",
        ),
        (
            _json_request([{"name": "a", "shape": [1], "datatype": "BYTES", "data": [None]}]),
            "input 'a': data[0] is null; BYTES needs a string",
        ),
        (
            _json_request(
                [
                    {"name": "ok", "shape": [1], "datatype": "FP32", "data": [1]},
                    {"name": "bad", "shape": [3], "datatype": "FP32", "data": [1]},
                ]
            ),
            "input 'bad': shape [3] needs 3 elements",
        ),
    ],
)
def test_invalid_requests_name_the_input_and_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        v2.decode_request(body)
    assert message in str(caught.value)
    assert caught.value.status_code == 400


def _binary(inputs: list[dict], blobs: list[bytes]) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": inputs})
    return header + b"".join(blobs), len(header)


def test_binary_extension_validation() -> None:
    ok = [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]
    body, length = _binary(ok, [np.array([1, 2], dtype="<f4").tobytes()])
    assert v2.decode_request(body, str(length)).inputs[0].data.tolist() == [1.0, 2.0]

    wrong_size = [{"name": "a", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]
    body, length = _binary(wrong_size, [b"\0" * 8])
    with pytest.raises(InvalidInput, match=r"input 'a': binary_data_size is 8 bytes but 3 FP32 elements need 12"):
        v2.decode_request(body, length)

    body, length = _binary(ok, [b"\0" * 4])
    with pytest.raises(InvalidInput, match=r"input 'a': binary_data_size 8 exceeds the 4 bytes left"):
        v2.decode_request(body, length)

    body, length = _binary(ok, [b"\0" * 12])
    with pytest.raises(InvalidInput, match="4 bytes after the last binary tensor"):
        v2.decode_request(body, length)

    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length must be an integer"):
        v2.decode_request(body, "abc")
    with pytest.raises(InvalidInput, match="outside the body"):
        v2.decode_request(body, len(body) + 1)

    broken = [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]
    body, length = _binary(broken, [b"\x09\0\0\0ab"])
    with pytest.raises(InvalidInput, match="input 's': BYTES element of 9 bytes runs past"):
        v2.decode_request(body, length)


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    inputs = [
        {"name": "j", "shape": [1], "datatype": "INT64", "data": [7]},
        {"name": "b", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": 2}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 13}},
    ]
    body, length = _binary(inputs, [b"\x01\x02", v2.serialize_bytes(np.array(["hi", "you"], dtype=object))])
    request = v2.decode_request(body, length)
    assert [t.data.tolist() for t in request.inputs] == [[7], [1, 2], [b"hi", b"you"]]


def test_requested_outputs_select_and_mark_binary() -> None:
    outputs = [Tensor.from_numpy("a", np.array([1, 2])), Tensor.from_numpy("b", np.array([0.5], dtype=np.float32))]
    request = v2.InferenceRequest(inputs=[], id="x", outputs=[RequestedOutput("b", binary=True)])
    body, length = v2.encode_response("m", outputs, request, model_version="3")
    assert length is not None
    header = orjson.loads(body[:length])
    assert header["model_version"] == "3"
    assert [o["name"] for o in header["outputs"]] == ["b"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert body[length:] == np.array([0.5], dtype="<f4").tobytes()

    with pytest.raises(InvalidInput, match="requested output 'zz' is not produced by model 'm'; it produces: 'a', 'b'"):
        v2.encode_response("m", outputs, v2.InferenceRequest(inputs=[], outputs=[RequestedOutput("zz")]))


def test_request_outputs_parse_binary_flags() -> None:
    body = _json_request(
        [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
        outputs=[{"name": "o", "parameters": {"binary_data": True}}, {"name": "p"}],
        parameters={"binary_data_output": False},
    )
    request = v2.decode_request(body)
    assert request.outputs == [RequestedOutput("o", True), RequestedOutput("p", None)]
    assert request.binary_output is False


def test_response_without_request_id_gets_one() -> None:
    body, _ = v2.encode_response("m", [Tensor.from_numpy("output-0", np.array([1, 1]))])
    payload = orjson.loads(body)
    assert payload["id"] and payload["outputs"][0] == {"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}


def test_kserve_sdk_binary_request_decodes_and_our_binary_response_parses() -> None:
    """The wire format must match what the kserve SDK writes and reads, byte for byte."""
    from kserve import InferInput, InferRequest
    from kserve.protocol.infer_type import InferResponse

    inputs = []
    for datatype, array in SAMPLES.items():
        if datatype == "BYTES":
            continue
        infer_input = InferInput(name=datatype.lower(), shape=list(array.shape), datatype=datatype)
        infer_input.set_data_from_numpy(array, binary_data=True)
        inputs.append(infer_input)
    strings = InferInput(name="bytes", shape=[2], datatype="BYTES")
    strings.set_data_from_numpy(np.array([b"ab", b"c"], dtype=object), binary_data=True)
    inputs.append(strings)
    body, json_length = InferRequest(model_name="m", infer_inputs=inputs, request_id="k1").to_rest()

    request = v2.decode_request(body, json_length)
    assert request.id == "k1"
    by_name = {t.name: t for t in request.inputs}
    for datatype, array in SAMPLES.items():
        if datatype != "BYTES":
            assert by_name[datatype.lower()].data.tolist() == array.tolist()
    assert by_name["bytes"].data.tolist() == [b"ab", b"c"]

    request.parameters["binary_data_output"] = True
    response, response_length = v2.encode_response("m", request.inputs, request)
    parsed = InferResponse.from_bytes(response, response_length)
    assert parsed.id == "k1"
    # The SDK turns BYTES into str when it parses; everything else must be identical.
    assert {o.name: o.as_numpy().tolist() for o in parsed.outputs} == {t.name: _texts(t.data.tolist()) for t in request.inputs}
