"""The HTTP layer in-process (Starlette's TestClient): routes, status codes, readiness, error bodies."""

from __future__ import annotations

import asyncio
import warnings

import numpy as np
import orjson

with warnings.catch_warnings():  # Starlette 1.0 nags about httpx vs httpx2; the client works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from serving.runtimes import v2
from serving.runtimes.model import Model, ModelRepository
from serving.runtimes.server import ModelServer, parse_args
from serving.runtimes.v2 import Tensor
from support import wait_until


class Doubler(Model):
    """Doubles its input; waits for ``release`` before it reports loaded, so tests see the 503 window."""

    platform = "test"

    def __init__(self, name: str = "double", fail_load: bool = False, version: str | None = "1") -> None:
        super().__init__(name, version=version)
        self.release = asyncio.Event()
        self.fail_load = fail_load

    async def load(self) -> bool:
        await self.release.wait()
        if self.fail_load:
            raise RuntimeError("weights are corrupt")
        self.ready = True
        return True

    async def predict(self, payload: list[Tensor]) -> np.ndarray:
        if payload[0].data.dtype.kind == "b":
            raise RuntimeError("cannot double booleans")
        return payload[0].data * 2


def _wait_ready(client: TestClient) -> None:
    wait_until(lambda: client.get("/v2/health/ready").status_code == 200, what="the model loaded")


def _infer_body(data, datatype="FP32", shape=None) -> bytes:
    shape = shape or [len(data)]
    return orjson.dumps({"id": "req-7", "inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})


def test_not_ready_until_loaded_then_serves() -> None:
    model = Doubler()
    server = ModelServer(ModelRepository([model]))
    with TestClient(server.app) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/").json() == {"status": "alive"}
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/double/ready").status_code == 503
        assert client.get("/v1/models/double").status_code == 503
        response = client.post("/v2/models/double/infer", content=_infer_body([1, 2]))
        assert response.status_code == 503 and "not ready" in response.json()["error"]

        client.portal.call(model.release.set)
        _wait_ready(client)
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/double/ready").json() == {"name": "double", "ready": True}
        assert client.get("/v1/models/double").json() == {"name": "double", "ready": True}
        assert client.get("/v1/models").json() == {"models": ["double"]}

        response = client.post("/v2/models/double/infer", content=_infer_body([1, 2.5]))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["id"] == "req-7"
        assert response.json()["model_version"] == "1"
        assert response.json()["outputs"] == [{"name": "output-0", "datatype": "FP32", "shape": [2], "data": [2.0, 5.0]}]
        assert client.post("/v2/models/double/versions/1/infer", content=_infer_body([1])).status_code == 200
        response = client.post("/v2/models/double/versions/9/infer", content=_infer_body([1]))
        assert response.status_code == 404 and "no version '9'" in response.json()["error"]

        response = client.post("/v1/models/double:predict", json={"instances": [[1, 2]]})
        assert response.json() == {"predictions": [[2, 4]]}

        meta = client.get("/v2/models/double").json()
        assert meta == {"name": "double", "versions": ["1"], "platform": "test", "inputs": [], "outputs": []}
        assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_error_statuses_and_bodies() -> None:
    model = Doubler()
    model.release.set()
    with TestClient(ModelServer(ModelRepository([model])).app) as client:
        _wait_ready(client)
        cases = [
            (client.post("/v2/models/other/infer", content=_infer_body([1])), 404, "model 'other' is not served here"),
            (client.get("/v2/models/other"), 404, "this server serves: 'double'"),
            (client.post("/v1/models/other:predict", json={"instances": [1]}), 404, "model 'other'"),
            (client.post("/v2/models/double/infer", content=_infer_body([1, 2], shape=[3])), 400, "input 'x': shape [3]"),
            (client.post("/v2/models/double/infer", content=b"{"), 400, "not valid JSON"),
            (client.post("/v1/models/double:predict", json={"rows": []}), 400, "'instances' or 'inputs'"),
            (client.post("/v2/models/double/infer", content=_infer_body([True], "BOOL")), 500, "model 'double' failed: RuntimeError"),
            (client.get("/v3/nothing"), 404, "no route /v3/nothing"),
            (client.get("/v2/models/double/infer"), 405, "GET /v2/models/double/infer"),
        ]
        assert client.post("/v2/models/double/infer", content=_infer_body([1])).status_code == 200
        for response, status, message in cases:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json"
            assert message in response.json()["error"]
        metrics = client.get("/metrics").text
    assert 'odh_model_server_requests_total{model="",protocol="v2",status="404"} 2.0' in metrics
    assert 'odh_model_server_requests_total{model="double",protocol="v2",status="400"} 2.0' in metrics
    assert 'odh_model_server_requests_total{model="double",protocol="v2",status="500"} 1.0' in metrics
    assert 'odh_model_server_predict_duration_seconds_count{model="double"}' in metrics


def test_unknown_versions_paths_and_methods() -> None:
    """404 for a version the model does not serve (also when it serves none), 405 with Allow for a
    known path with the wrong method, 404 for any other path."""
    model = Doubler(version=None)
    model.release.set()
    with TestClient(ModelServer(ModelRepository([model])).app) as client:
        _wait_ready(client)
        for path in ("/v2/models/double/versions/999/infer", "/v2/models/double/versions/1/infer"):
            response = client.post(path, content=_infer_body([1]))
            assert response.status_code == 404, response.text
            assert response.json()["error"] == (
                "model 'double' has no versions; use /v2/models/double/infer without /versions/..."
            )
        assert client.get("/v2/models/double/versions/999").status_code == 404
        assert client.get("/v2/models/double/versions/999/ready").status_code == 404

        for method, path, allow in [
            ("GET", "/v1/models/double:predict", "POST"),
            ("PUT", "/v1/models/double:predict", "POST"),
            ("GET", "/v2/models/double/infer", "POST"),
            ("POST", "/v2/health/live", "GET, HEAD"),
            ("DELETE", "/v2/models/double", "GET, HEAD"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allow
            assert response.json()["error"] == f"{method} {path}: method not allowed; use {allow}"

        for path in ("/v1/models/double:explain", "/v2/models/double/explain", "/nope", "/v1/models/a/b"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"].startswith(f"no route {path}")


def test_binary_request_and_binary_response() -> None:
    model = Doubler()
    model.release.set()
    with TestClient(ModelServer(ModelRepository([model])).app) as client:
        _wait_ready(client)
        body, length = v2.encode_request(
            [Tensor.from_numpy("x", np.array([[1, 2], [3, 4]], dtype=np.int32))],
            binary=True,
            parameters={"binary_data_output": True},
        )
        response = client.post(
            "/v2/models/double/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(length), "content-type": "application/octet-stream"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        payload = v2.decode_response(response.content, response.headers["inference-header-content-length"])
        assert payload["outputs"][0]["data"].tolist() == [[2, 4], [6, 8]]
        assert payload["outputs"][0]["datatype"] == "INT32"


def test_load_failure_calls_the_stop_hook() -> None:
    model = Doubler(fail_load=True)
    model.release.set()
    server = ModelServer(ModelRepository([model]))
    stopped = []
    server.on_load_failure = lambda: stopped.append(True)
    with TestClient(server.app) as client:
        wait_until(lambda: stopped, what="the load-failure hook")
        assert client.get("/v2/health/ready").status_code == 503
    assert stopped == [True]
    assert "weights are corrupt" in str(server.load_error)


def test_cli_flags() -> None:
    args = parse_args(["--model_name", "m", "--model_dir", "/d", "--http_port", "9000"])
    assert (args.model_name, args.model_dir, args.http_port, args.model_format, args.host, args.workers) == (
        "m", "/d", 9000, "auto", "127.0.0.1", 1,
    )
    args = parse_args(["--model-name", "m", "--model-dir", "/d", "--model_format", "mlflow", "--workers", "2"])
    assert (args.model_format, args.workers) == ("mlflow", 2)
