"""The KServe V1 codec: instances/inputs in, predictions out, errors that name the field."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving.runtimes import v1
from serving.runtimes.errors import InvalidInput
from serving.runtimes.v2 import Tensor


def test_instances_become_one_2d_tensor(iris_dir) -> None:
    (tensor,) = v1.decode_request((iris_dir / "iris-input-v1.json").read_bytes())
    assert tensor.name == "instances"
    assert tensor.datatype == "FP64"
    assert tensor.data.tolist() == [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def test_inputs_is_accepted_like_instances() -> None:
    (tensor,) = v1.decode_request(b'{"inputs": [[1, 2], [3, 4]]}')
    assert (tensor.name, tensor.datatype, tensor.shape) == ("inputs", "INT64", [2, 2])


def test_records_become_one_tensor_per_column() -> None:
    tensors = v1.decode_request(b'{"instances": [{"a": 1.5, "s": "x"}, {"a": 2.5, "s": "y"}]}')
    assert [(t.name, t.datatype, t.data.tolist()) for t in tensors] == [("a", "FP64", [1.5, 2.5]), ("s", "BYTES", ["x", "y"])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"data": [1]}', "must contain 'instances' or 'inputs'"),
        (b'{"instances": 3}', "'instances' must be a list, got int"),
        (b'{"inputs": {"a": 1}}', "'inputs' must be a list, got dict"),
        (b'{"instances": []}', "'instances' is empty"),
        (b'{"instances": [[1, 2], [3]]}', "'instances' is not a regular array"),
        (b'{"instances": [{"a": 1}, {"b": 2}]}', "'instances[1]' has keys ['b']"),
        (b'{"instances": [{"a": 1}, 2]}', "'instances[1]' must be an object"),
        (b'{"instances": [[1, 2], {"a": 1}]}', "'instances' is not a regular array"),
        (b'{"instances": [{"a": [1, [2]]}]}', "'instances[].a' is not a regular array"),
        (b'{"instances": [[1, 2]], "inputs": [[1, 2]]}', "has both 'instances' and 'inputs'"),
    ],
)
def test_errors_name_the_field(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        v1.decode_request(body)
    assert message in str(caught.value)
    assert caught.value.status_code == 400


def test_encode_one_output_and_several() -> None:
    assert orjson.loads(v1.encode_response([Tensor.from_numpy("output-0", np.array([1, 1]))])) == {"predictions": [1, 1]}
    assert orjson.loads(v1.encode_response([Tensor.from_numpy("p", np.array([[0.25, 0.75]], dtype=np.float32))])) == {
        "predictions": [[0.25, 0.75]]
    }
    several = [Tensor.from_numpy("label", np.array(["a", "b"])), Tensor.from_numpy("score", np.array([0.5, 1.0]))]
    assert orjson.loads(v1.encode_response(several)) == {
        "predictions": [{"label": "a", "score": 0.5}, {"label": "b", "score": 1.0}]
    }
    assert orjson.loads(v1.encode_response([Tensor.from_numpy("b", np.array([b"x"], dtype=object))])) == {"predictions": ["x"]}
