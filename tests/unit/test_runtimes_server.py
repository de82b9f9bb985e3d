"""The HTTP layer in-process (Starlette's TestClient): routes, status codes, readiness, error bodies."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient
from support import temporary_env, wait_until

from serving.runtimes import v2
from serving.runtimes.model import Model, ModelRepository
from serving.runtimes.pool import FastPath
from serving.runtimes.server import ModelServer, ServerLimits, parse_args
from serving.runtimes.v2 import Tensor


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


class ThreadRecordingDoubler(Model):
    """Plain-function steps (like the sklearn and MLflow runtimes): the server runs it on a predict thread."""

    platform = "test"

    def __init__(self) -> None:
        super().__init__("double")
        self.threads: list[str] = []
        self.pause = 0.0  # makes the model slow (not a wait for anything)

    def predict(self, payload: list[Tensor]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.pause)
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
    assert (args.predict_queue, args.max_request_body) == (128, 100 << 20)
    args = parse_args(["--model-name", "m", "--model-dir", "/d", "--model_format", "mlflow", "--workers", "2"])
    assert (args.model_format, args.workers) == ("mlflow", 2)
    args = parse_args(["--model_name", "m", "--model_dir", "/d", "--predict_workers", "3", "--predict-queue", "0",
                       "--max_request_body", "5000"])
    assert (args.predict_workers, args.predict_queue, args.max_request_body) == (3, 0, 5000)


def test_body_limit_comes_from_the_platform_variable_unless_the_flag_says(capsys) -> None:
    base = ["--model_name", "m", "--model_dir", "/d"]
    with temporary_env(ODH_MAX_REQUEST_BODY_BYTES="12345"):
        assert parse_args(base).max_request_body == 12345
        assert parse_args([*base, "--max_request_body", "99"]).max_request_body == 99
    with temporary_env(ODH_MAX_REQUEST_BODY_BYTES="lots"), pytest.raises(SystemExit):
        parse_args(base)
    assert "ODH_MAX_REQUEST_BODY_BYTES='lots': expected a whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*base, "--predict_workers", "0"])
    assert "0 is below the minimum of 1" in capsys.readouterr().err


def test_plain_function_models_predict_on_a_predict_thread_async_ones_on_the_loop() -> None:
    blocking = ThreadRecordingDoubler()
    with TestClient(ModelServer(ModelRepository([blocking])).app) as client:
        _wait_ready(client)
        assert client.post("/v2/models/double/infer", content=_infer_body([1, 2])).json()["outputs"][0]["data"] == [2, 4]
        assert client.post("/v1/models/double:predict", json={"instances": [[3]]}).json() == {"predictions": [[6]]}
        assert len(blocking.threads) == 2 and all(name.startswith("predict") for name in blocking.threads)
        metrics = client.get("/metrics").text
    assert 'odh_model_server_predict_duration_seconds_count{model="double"} 2.0' in metrics
    assert "odh_model_server_admitted_requests 0.0" in metrics
    assert "odh_model_server_admitted_body_bytes 0.0" in metrics
    assert blocking.blocking and not Doubler().blocking


def test_a_model_quick_on_small_requests_skips_the_thread_hop_until_it_is_slow() -> None:
    model = ThreadRecordingDoubler()
    server = ModelServer(ModelRepository([model]))
    # Thresholds far from what doubling takes, so a busy machine cannot decide the outcome; one second of
    # sleep is surely slow.
    server.fast_path = FastPath(quick=1.0, slow=1.0, proof=3)
    proof = server.fast_path.proof
    with TestClient(server.app) as client:
        _wait_ready(client)
        for _ in range(proof + 1):
            assert client.post("/v2/models/double/infer", content=_infer_body([1])).status_code == 200
        assert all(name.startswith("predict") for name in model.threads[:proof])
        assert not model.threads[proof].startswith("predict")  # earned: ran on the event loop's thread
        # A big body always goes to a predict thread.
        big = _infer_body([1.0] * 20_000)
        assert len(big) > server.fast_path.small_body
        assert client.post("/v2/models/double/infer", content=big).status_code == 200
        assert model.threads[-1].startswith("predict")
        # One slow prediction, and the model never runs on the loop again.
        model.pause = server.fast_path.slow
        assert client.post("/v2/models/double/infer", content=_infer_body([1])).status_code == 200
        model.pause = 0.0
        for _ in range(proof + 1):
            assert client.post("/v2/models/double/infer", content=_infer_body([1])).status_code == 200
        assert all(name.startswith("predict") for name in model.threads[-proof - 1 :])


def test_body_over_the_limit_is_413() -> None:
    model = Doubler()
    model.release.set()
    server = ModelServer(ModelRepository([model]), limits=ServerLimits(max_request_body=200))
    with TestClient(server.app) as client:
        _wait_ready(client)
        body = _infer_body([1])
        assert client.post("/v2/models/double/infer", content=body + b" " * (200 - len(body))).status_code == 200
        for path in ("/v2/models/double/infer", "/v1/models/double:predict"):
            response = client.post(path, content=b" " * 201)
            assert response.status_code == 413, response.text
            assert "request body of 201+ bytes is over this server's limit of 200 bytes" in response.json()["error"]
            # Streamed without a length: counted as it arrives.
            response = client.post(path, content=iter([b" " * 150, b" " * 150]))
            assert response.status_code == 413, response.text
        metrics = client.get("/metrics").text
    assert 'odh_model_server_requests_total{model="double",protocol="v2",status="413"} 2.0' in metrics
