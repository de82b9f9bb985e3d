"""The real model-server process on loopback: KServe's iris sample over V1 and V2, with curl-like
httpx calls and with the ``kserve`` SDK's REST client unchanged."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from support import IRIS_DIR, free_port, python_module, running, wait_http

pytestmark = pytest.mark.integration

START_TIMEOUT = 120.0  # importing sklearn alone takes ~5 s on a busy 2-core box; mlflow much more


def _server_args(model_dir: Path, port: int, *extra: str, name: str = "iris") -> list[str]:
    return python_module(
        "serving.runtimes.server", "--model_name", name, "--model_dir", str(model_dir), "--http_port", str(port), *extra
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    with running(_server_args(IRIS_DIR, port, "--model_format", "auto")) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/health/ready", timeout=START_TIMEOUT, proc=proc)
        yield base, proc


@pytest.fixture(scope="module")
def base(server) -> str:
    return server[0]


def _count(metrics: str, labels: str) -> float:
    match = re.search(r"^odh_model_server_requests_total\{" + re.escape(labels) + r"\} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


class TestRuntimesModelServer:
    """One class so ``pytest -k runtimes`` selects these with the runtime unit tests."""

    def test_v1_and_v2_answer_1_1(self, base: str) -> None:
        v1 = httpx.post(f"{base}/v1/models/iris:predict", content=(IRIS_DIR / "iris-input-v1.json").read_bytes())
        assert v1.status_code == 200 and v1.json() == {"predictions": [1, 1]}

        body = orjson.loads((IRIS_DIR / "iris-input-v2.json").read_bytes())
        body["id"] = "abc-123"
        v2 = httpx.post(f"{base}/v2/models/iris/infer", json=body)
        assert v2.status_code == 200
        assert v2.json() == {
            "model_name": "iris",
            "id": "abc-123",
            "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [2], "data": [1, 1]}],
        }


    def test_health_readiness_and_metadata(self, base: str) -> None:
        assert httpx.get(f"{base}/").json() == {"status": "alive"}
        assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
        assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
        assert httpx.get(f"{base}/v2/models/iris/ready").status_code == 200
        assert httpx.get(f"{base}/v1/models").json() == {"models": ["iris"]}
        assert httpx.get(f"{base}/v1/models/iris").json() == {"name": "iris", "ready": True}
        server_meta = httpx.get(f"{base}/v2").json()
        assert set(server_meta) == {"name", "version", "extensions"}
        assert "binary_tensor_data" in server_meta["extensions"]
        model_meta = httpx.get(f"{base}/v2/models/iris").json()
        assert model_meta["name"] == "iris" and model_meta["platform"] == "sklearn"
        assert model_meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
        assert model_meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "message"),
        [
            ("POST", "/v2/models/nope/infer", b'{"inputs": []}', 404, "model 'nope' is not served here; this server serves: 'iris'"),
            ("GET", "/v2/models/nope", None, 404, "model 'nope' is not served here"),
            ("GET", "/v2/models/nope/ready", None, 404, "model 'nope'"),
            ("POST", "/v1/models/nope:predict", b'{"instances": [[1]]}', 404, "model 'nope'"),
            ("GET", "/v1/models/nope", None, 404, "model 'nope'"),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]}',
                400,
                "input 'input-0': shape [2, 4] needs 8 elements but the data has 2",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1], "datatype": "FLOAT", "data": [1]}]}',
                400,
                "input 'input-0': unknown datatype 'FLOAT'",
            ),
            ("POST", "/v2/models/iris/infer", b'{"id": "x"}', 400, "no 'inputs'"),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}',
                400,
                "input 'input-0' has 3 features per row; model 'iris' expects 4",
            ),
            ("POST", "/v1/models/iris:predict", b'{"instance": [[1, 2, 3, 4]]}', 400, "'instances' or 'inputs'"),
            ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3, 4], [1]]}', 400, "'instances' is not a regular array"),
            ("GET", "/v9/anything", None, 404, "no route /v9/anything"),
            # Issue 10's probes: each was a 500 and is the client's mistake, named with its fix.
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": "binary_data_size"}]}',
                400,
                "input 'input-0': 'parameters' must be an object",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "parameters": ["binary_data_size"]}]}',
                400,
                "input 'input-0': 'parameters' must be an object",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], '
                b'"outputs": [{"name": "output-0", "parameters": "binary"}]}',
                400,
                "outputs[0] ('output-0'): 'parameters' must be an object",
            ),
            (
                "POST",
                "/v1/models/iris:predict",
                b'{"instances": [[null, null, null, null]]}',
                400,
                "model 'iris' cannot take this input: Input X contains NaN",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 1, 1, 1]}]}',
                400,
                "input 'input-0': data[0] = 1e+39 is beyond FP32's range",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input-0", "shape": [0, 4], "datatype": "FP32", "data": []}]}',
                400,
                "input 'input-0' has shape [0, 4]: no rows; send at least one row",
            ),
            (
                "POST",
                "/v2/models/iris/versions/999/infer",
                (IRIS_DIR / "iris-input-v2.json").read_bytes(),
                404,
                "model 'iris' has no versions",
            ),
            ("GET", "/v1/models/iris:predict", None, 405, "GET /v1/models/iris:predict: method not allowed; use POST"),
        ],
    )
    def test_error_answers(self, base: str, method: str, path: str, body: bytes | None, status: int, message: str) -> None:
        response = httpx.request(method, f"{base}{path}", content=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert message in response.json()["error"]
        if status == 405:
            assert response.headers["allow"] == "POST"

    def test_metrics_count_requests(self, base: str) -> None:
        labels = 'model="iris",protocol="v2",status="200"'
        before = _count(httpx.get(f"{base}/metrics").text, labels)
        body = (IRIS_DIR / "iris-input-v2.json").read_bytes()
        with httpx.Client() as client:
            for _ in range(5):
                assert client.post(f"{base}/v2/models/iris/infer", content=body).status_code == 200
            client.post(f"{base}/v2/models/iris/infer", content=b"{}")
        metrics = httpx.get(f"{base}/metrics").text
        assert _count(metrics, labels) == before + 5
        assert _count(metrics, 'model="iris",protocol="v2",status="400"') >= 1
        assert 'odh_model_server_request_duration_seconds_count{route="/v2/models/{model}/infer"}' in metrics
        assert re.search(r'^odh_model_server_predict_duration_seconds_count\{model="iris"\} [1-9]', metrics, re.M)

    def test_kserve_sdk_rest_client_v1_and_v2(self, base: str) -> None:
        from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

        rows = np.array([[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]], dtype=np.float32)

        async def scenario() -> None:
            async with InferenceRESTClient(RESTConfig(protocol="v1")) as client:
                assert await client.is_server_live(base)
                assert await client.is_model_ready(base, "iris")
                answer = await client.infer(base, orjson.loads((IRIS_DIR / "iris-input-v1.json").read_bytes()), model_name="iris")
                assert answer == {"predictions": [1, 1]}

            async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
                assert await client.is_server_live(base)
                assert await client.is_server_ready(base)
                assert await client.is_model_ready(base, "iris")
                assert not await client.is_model_ready(base, "nope")

                # JSON tensor data.
                json_input = InferInput(name="input-0", shape=[2, 4], datatype="FP32")
                json_input.set_data_from_numpy(rows, binary_data=False)
                response = await client.infer(
                    base, InferRequest(model_name="iris", infer_inputs=[json_input], request_id="j1"), model_name="iris"
                )
                assert response.id == "j1"
                assert response.outputs[0].name == "output-0"
                assert response.outputs[0].as_numpy().tolist() == [1, 1]

                # Binary tensor data in, binary out (the SDK sets Inference-Header-Content-Length).
                binary_input = InferInput(name="input-0", shape=[2, 4], datatype="FP32")
                binary_input.set_data_from_numpy(rows, binary_data=True)
                request = InferRequest(
                    model_name="iris", infer_inputs=[binary_input], request_id="b1", parameters={"binary_data_output": True}
                )
                headers: dict[str, str] = {}
                response = await client.infer(base, request, model_name="iris", response_headers=headers)
                assert headers["content-type"] == "application/octet-stream"
                assert int(headers["inference-header-content-length"]) > 0
                assert response.id == "b1"
                assert response.outputs[0].datatype == "INT64"
                assert response.outputs[0].as_numpy().tolist() == [1, 1]

                # Binary in, JSON out.
                binary_input = InferInput(name="input-0", shape=[2, 4], datatype="FP32")
                binary_input.set_data_from_numpy(rows, binary_data=True)
                response = await client.infer(base, InferRequest(model_name="iris", infer_inputs=[binary_input]), model_name="iris")
                assert response.outputs[0].as_numpy().tolist() == [1, 1]

                # Errors come back as the SDK's HTTPStatusError carrying our message.
                with pytest.raises(httpx.HTTPStatusError, match="model 'nope' is not served here"):
                    await client.infer(base, InferRequest(model_name="nope", infer_inputs=[json_input]), model_name="nope")

        asyncio.run(scenario())

    def test_bad_model_dir_fails_fast_with_a_clear_message(self, tmp_path: Path) -> None:
        (tmp_path / "a.joblib").write_bytes(b"x")
        (tmp_path / "b.pkl").write_bytes(b"x")
        result = subprocess.run(_server_args(tmp_path, free_port()), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "holds 2 model files (a.joblib, b.pkl); keep exactly one" in result.stderr

    def test_unloadable_model_exits_1(self, tmp_path: Path) -> None:
        (tmp_path / "model.joblib").write_bytes(b"not a pickle")
        result = subprocess.run(_server_args(tmp_path, free_port()), capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert "failed to load" in result.stderr

    def test_mlflow_model_served_with_auto_format(self, tmp_path: Path) -> None:
        # The model is saved in a child process: importing mlflow here would slow every later test's imports.
        script = (
            "import sys, pandas as pd, mlflow.sklearn\n"
            "from mlflow.models import infer_signature\n"
            "from sklearn.datasets import load_iris\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "iris = load_iris()\n"
            "X = pd.DataFrame(iris.data, columns=['sl', 'sw', 'pl', 'pw'])\n"
            "m = LogisticRegression(max_iter=500).fit(X, iris.target)\n"
            "mlflow.sklearn.save_model(m, sys.argv[1], signature=infer_signature(X, m.predict(X)))\n"
        )
        model_dir = tmp_path / "model"
        subprocess.run([sys.executable, "-c", script, str(model_dir)], check=True, timeout=240)
        port = free_port()
        with running(_server_args(model_dir, port, name="flowers")) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/v2/health/ready", timeout=240, proc=proc)
            assert httpx.get(f"{base}/v2/models/flowers").json()["platform"] == "mlflow"
            columns = [
                {"name": name, "shape": [2], "datatype": "FP64", "data": values}
                for name, values in zip(["sl", "sw", "pl", "pw"], [[6.8, 6.0], [2.8, 3.4], [4.8, 4.5], [1.4, 1.6]], strict=True)
            ]
            response = httpx.post(f"{base}/v2/models/flowers/infer", json={"inputs": columns}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [1, 1]
            v1 = httpx.post(f"{base}/v1/models/flowers:predict", content=(IRIS_DIR / "iris-input-v1.json").read_bytes(), timeout=30)
            assert v1.json() == {"predictions": [1, 1]}
            missing = httpx.post(f"{base}/v2/models/flowers/infer", json={"inputs": columns[:3]}, timeout=30)
            assert missing.status_code == 400 and "'pw'" in missing.json()["error"]

    def test_sigterm_shuts_down_gracefully(self, server) -> None:
        """Last: it stops the module's server, which exits on its own (no SIGKILL needed) and closes its port."""
        base, proc = server
        body = (IRIS_DIR / "iris-input-v2.json").read_bytes()
        with httpx.Client() as client:
            assert client.post(f"{base}/v2/models/iris/infer", content=body).status_code == 200
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)  # on its own: the fixture's SIGKILL never comes into it
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/v2/health/live")
