"""A replica's bounds on the real process: it keeps answering while it predicts (issue 10, item 5), a
flood beyond its queue gets 503, and a body over its limit gets 413 before it is read.

The model is a pickled estimator whose ``predict`` blocks until the test creates a gate file, so the
test sees a prediction in progress by observing it (a marker file, the admission gauge), never by timing.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from support import IRIS_DIR, free_port, python_module, running, wait_http, wait_until

pytestmark = pytest.mark.integration

START_TIMEOUT = 120.0
# A probe answered by a free event loop takes milliseconds; this only bounds how long a failure takes.
PROBE_TIMEOUT = 20.0
BODY_LIMIT = 4096

GATED_MODEL = '''
"""An sklearn-like estimator whose predict waits for a gate file: a prediction that takes as long as the test wants."""
import os
import time

import numpy as np


class GatedEstimator:
    n_features_in_ = 4

    def __init__(self, gate: str, started: str) -> None:
        self.gate = gate
        self.started = started

    def predict(self, rows):
        with open(self.started, "a") as marker:
            marker.write("started\\n")
        deadline = time.monotonic() + 300
        while not os.path.exists(self.gate):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never opened the gate")
            time.sleep(0.01)
        return np.ones(len(rows), dtype=np.int64)
'''


class Gated:
    def __init__(self, root: Path) -> None:
        self.gate = root / "gate"
        self.started = root / "started"

    def predictions_started(self) -> int:
        return len(self.started.read_text().splitlines()) if self.started.exists() else 0

    def open(self) -> None:
        self.gate.touch()


@pytest.fixture()
def gated(tmp_path: Path) -> Iterator[tuple[str, Gated]]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "gated_model.py").write_text(GATED_MODEL)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    gated = Gated(tmp_path)
    pickle = (
        "import sys, joblib\n"
        "from gated_model import GatedEstimator\n"
        "joblib.dump(GatedEstimator(sys.argv[1], sys.argv[2]), sys.argv[3])\n"
    )
    env = {"PYTHONPATH": str(code)}
    subprocess.run(
        [sys.executable, "-c", pickle, str(gated.gate), str(gated.started), str(model_dir / "model.joblib")],
        check=True, timeout=120, env=env,
    )
    port = free_port()
    args = python_module(
        "serving.runtimes.server", "--model_name", "gated", "--model_dir", str(model_dir), "--http_port", str(port),
        "--predict_workers", "1", "--predict_queue", "1", "--max_request_body", str(BODY_LIMIT),
    )
    try:
        with running(args, env=env) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/v2/health/ready", timeout=START_TIMEOUT, proc=proc)
            yield base, gated
    finally:
        gated.open()  # whatever happened, let blocked predictions end so the process can stop


def _admitted(base: str) -> float:
    metrics = httpx.get(f"{base}/metrics", timeout=PROBE_TIMEOUT).text
    match = re.search(r"^odh_model_server_admitted_requests (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else -1.0


def _post_in_background(url: str, body: bytes, answers: list[httpx.Response]) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(httpx.post(url, content=body, timeout=300)), daemon=True)
    thread.start()
    return thread


def test_probes_and_metadata_answer_while_a_prediction_runs_and_a_flood_gets_503(gated) -> None:
    base, model = gated
    v2_body = (IRIS_DIR / "iris-input-v2.json").read_bytes()
    v1_body = (IRIS_DIR / "iris-input-v1.json").read_bytes()
    first: list[httpx.Response] = []
    second: list[httpx.Response] = []

    running_one = _post_in_background(f"{base}/v2/models/gated/infer", v2_body, first)
    wait_until(lambda: model.predictions_started() == 1, timeout=60, what="the first prediction started")

    # The only predict thread is busy inside the model: the event loop still answers everything else.
    with httpx.Client(timeout=PROBE_TIMEOUT) as client:
        assert client.get(f"{base}/v2/health/live").json() == {"live": True}
        assert client.get(f"{base}/").json() == {"status": "alive"}
        assert client.get(f"{base}/v2/health/ready").json() == {"ready": True}
        assert client.get(f"{base}/v2/models/gated/ready").status_code == 200
        assert client.get(f"{base}/v2/models/gated").json()["name"] == "gated"
        assert "odh_model_server_requests_total" in client.get(f"{base}/metrics").text
        # A bad request is answered too: it is refused while decoding, on the other side of the queue.
        assert client.post(f"{base}/v2/models/nope/infer", content=v2_body).status_code == 404

    # A second prediction waits in the queue (size 1); the server says so in its admission gauge.
    queued = _post_in_background(f"{base}/v1/models/gated:predict", v1_body, second)
    wait_until(lambda: _admitted(base) == 2, timeout=60, what="two requests admitted (one running, one queued)")
    assert model.predictions_started() == 1

    # The third finds the thread and the queue full: 503 at once, with Retry-After, not a growing backlog.
    busy = httpx.post(f"{base}/v2/models/gated/infer", content=v2_body, timeout=PROBE_TIMEOUT)
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1"
    assert "server busy: 2 requests are running or queued (--predict_workers 1, --predict_queue 1)" in busy.json()["error"]

    model.open()
    running_one.join(timeout=120)
    queued.join(timeout=120)
    assert first[0].status_code == 200 and orjson.loads(first[0].content)["outputs"][0]["data"] == [1, 1]
    assert second[0].status_code == 200 and second[0].json() == {"predictions": [1, 1]}
    wait_until(lambda: _admitted(base) == 0, timeout=30, what="admission empty after both answered")
    assert httpx.post(f"{base}/v2/models/gated/infer", content=v2_body, timeout=60).status_code == 200


def _raw_exchange(base: str, head: bytes) -> bytes:
    """Send a request head (no body) and read the whole answer: the server must answer without the body."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def _length(answer: bytes) -> int:
    match = re.search(rb"\r\ncontent-length: (\d+)\r\n", answer, re.I)
    return int(match.group(1)) if match else 0


def test_a_body_over_the_limit_is_413_before_it_is_read(gated) -> None:
    base, model = gated
    model.open()
    # Declared too large: answered from the head alone, the gigabyte is never sent.
    for path in ("/v2/models/gated/infer", "/v1/models/gated:predict"):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {1 << 30}\r\n\r\n"
        answer = _raw_exchange(base, head.encode())
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        error = orjson.loads(answer[answer.index(b"\r\n\r\n") + 4 :])["error"]
        assert error == (
            f"request body of {1 << 30}+ bytes is over this server's limit of {BODY_LIMIT} bytes; "
            "send less (or raise --max_request_body / ODH_MAX_REQUEST_BODY_BYTES)"
        )

    # Chunked, so no length up front: refused once the bytes read pass the limit.
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    with httpx.Client(timeout=PROBE_TIMEOUT) as client:
        response = client.post(f"{base}/v2/models/gated/infer", content=chunks())
        assert response.status_code == 413, response.text
        assert f"over this server's limit of {BODY_LIMIT} bytes" in response.json()["error"]
        # At the limit is fine (the padding is JSON whitespace), and the server answers as before.
        body = (IRIS_DIR / "iris-input-v2.json").read_bytes()
        padded = body + b" " * (BODY_LIMIT - len(body))
        assert client.post(f"{base}/v2/models/gated/infer", content=padded).status_code == 200
        assert client.post(f"{base}/v2/models/gated/infer", content=padded + b" ").status_code == 413
        assert client.get(f"{base}/v2/health/live").status_code == 200


def test_a_client_that_leaves_mid_body_is_not_a_server_error(gated) -> None:
    base, _ = gated
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT) as sock:
        sock.sendall(b"POST /v2/models/gated/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
        wait_until(lambda: _admitted(base) == 1, timeout=60, what="the half-sent request admitted")
    wait_until(lambda: _admitted(base) == 0, timeout=60, what="the abandoned request released")
    metrics = httpx.get(f"{base}/metrics", timeout=PROBE_TIMEOUT).text
    assert 'odh_model_server_requests_total{model="gated",protocol="v2",status="400"} 1.0' in metrics
    assert 'status="500"' not in metrics
