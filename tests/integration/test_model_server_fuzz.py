"""Fuzzing the real model server (KServe's iris sample) over V1 and V2: no input is a 5xx.

Requests come from the server's own OpenAPI document (``GET /openapi.json``) through schemathesis, in
both of its modes (positive: shaped as the schema says, mostly still wrong for iris; negative: breaking
the schema), mixed with hypothesis-made raw bodies: arbitrary JSON, arbitrary bytes and, for V2,
binary-extension bodies with inconsistent lengths. At least 1,000 per API; every answer must be below
500 and every refusal a JSON ``{"error": ...}``; afterwards the server still answers KServe's own iris
inputs with [1, 1]. Deterministic: hypothesis is derandomized and keeps no database.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from support import IRIS_DIR, free_port, python_module, running, wait_http

pytestmark = pytest.mark.integration

CASES_PER_API = 1000
EXAMPLES = 1150  # some generated requests cannot be sent at all (httpx refuses the header); these are not counted
V2_INFER = "/v2/models/{model}/infer"
V1_PREDICT = "/v1/models/{model}:predict"


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    schema: schemathesis.BaseSchema


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    args = python_module(
        "serving.runtimes.server", "--model_name", "iris", "--model_dir", str(IRIS_DIR), "--http_port", str(port)
    )
    with running(args) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/health/ready", timeout=120, proc=proc)
        document = httpx.get(f"{base}/openapi.json").json()
        yield Server(base, proc, schemathesis.openapi.from_dict(document))


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.headers} {self.body[:300] if self.body else self.body!r}"


def _from_case(case: schemathesis.Case) -> Probe:
    kwargs = case.as_transport_kwargs(base_url="")
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() not in ("user-agent", "x-schemathesis-testcaseid")}
    if "json" in kwargs:
        body = _dumps(kwargs["json"])
    else:
        data = kwargs.get("data")
        body = data.encode() if isinstance(data, str) else data
    url = kwargs["url"]
    if kwargs.get("params"):
        url += "?" + str(httpx.QueryParams(kwargs["params"]))
    return Probe(kwargs["method"], url, headers, body)


def _dumpable(value: object) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        return True
    except orjson.JSONEncodeError:  # integers beyond 64 bits: the stdlib writes them
        return False


def _operations(schema: schemathesis.BaseSchema, predict: str, method: str, others: list[str]) -> list[st.SearchStrategy[Probe]]:
    """Both modes of the predict operation (twice, so it gets most of the cases) and of the GET routes."""
    operation = schema[predict][method]
    strategies = [operation.as_strategy(mode).map(_from_case) for mode in GenerationMode] * 2
    for path in others:
        strategies += [schema[path]["GET"].as_strategy(mode).map(_from_case) for mode in GenerationMode]
    return strategies


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)
_datatypes = st.sampled_from(
    ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES", "FP8"]
)


def _raw_json(path: str) -> st.SearchStrategy[Probe]:
    """Any JSON value, and objects that look like requests with any values inside."""
    requestish = st.fixed_dictionaries(
        {},
        optional={
            "instances": _json_values, "inputs": _json_values, "outputs": _json_values,
            "parameters": _json_values, "id": _json_values,
        },
    )
    bodies = st.one_of(_json_values, requestish).map(_dumps)
    return bodies.map(lambda body: Probe("POST", path, {"content-type": "application/json"}, body))


# Values that tend to break decoders: nulls, containers where scalars belong, numbers beyond every
# tensor type, the parameter name itself where an object belongs.
_odd = st.one_of(
    st.sampled_from(
        [None, [], {}, "", "x", 0, -1, True, 1e39, -1e39, 1.7976931348623157e308, 2**63, 2**64 - 1, -(2**63),
         0.5, [None], [[]], {"binary_data_size": 4}, {"binary_data": "yes"}, "binary_data_size", ["binary_data_size"]]
    ),
    _json_values,
)
_IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


@st.composite
def _v2_mutants(draw: st.DrawFn) -> Probe:
    """KServe's iris V2 request with one to three things wrong: where a decoder's checks are thin."""
    tensor: dict[str, object] = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [list(r) for r in _IRIS_ROWS]}
    request: dict[str, object] = {"inputs": [tensor]}
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(
            ["field", "drop", "element", "row", "shape", "datatype", "outputs", "parameters", "id", "second", "flat"]
        ))
        if change == "field":
            tensor[draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters"]))] = draw(_odd)
        elif change == "drop":
            tensor.pop(draw(st.sampled_from(["name", "shape", "datatype", "data"])), None)
        elif change == "element" and isinstance(tensor.get("data"), list) and tensor["data"]:
            row = draw(st.integers(0, len(tensor["data"]) - 1))
            if isinstance(tensor["data"][row], list) and tensor["data"][row]:
                tensor["data"][row][draw(st.integers(0, len(tensor["data"][row]) - 1))] = draw(_odd)
        elif change == "row" and isinstance(tensor.get("data"), list) and tensor["data"]:
            tensor["data"][draw(st.integers(0, len(tensor["data"]) - 1))] = draw(_odd)
        elif change == "shape":
            tensor["shape"] = draw(st.sampled_from([[0, 4], [2, 4], [4, 2], [8], [1, 8], [2, 2, 2], [0], [], [2**40, 4], [2, 0]]))
            if tensor["shape"] in ([0, 4], [0], [2, 0]):
                tensor["data"] = []
        elif change == "datatype":
            tensor["datatype"] = draw(_datatypes)
        elif change == "outputs":
            request["outputs"] = draw(_odd | st.builds(lambda p: [{"name": "output-0", "parameters": p}], _odd))
        elif change == "parameters":
            request["parameters"] = draw(_odd | st.builds(lambda p: {"binary_data_output": p}, _odd))
        elif change == "id":
            request["id"] = draw(_odd)
        elif change == "second":
            request["inputs"] = [tensor, {**tensor, "name": draw(st.sampled_from(["input-0", "input-1"]))}]
        elif change == "flat" and isinstance(tensor.get("data"), list):
            tensor["data"] = [v for row in tensor["data"] for v in (row if isinstance(row, list) else [row])]
    return Probe("POST", "/v2/models/iris/infer", {"content-type": "application/json"}, _dumps(request))


@st.composite
def _v1_mutants(draw: st.DrawFn) -> Probe:
    """KServe's iris V1 request with one to three things wrong."""
    rows: list[object] = [list(r) for r in _IRIS_ROWS]
    request: dict[str, object] = {"instances": rows}
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["element", "row", "field", "both", "records", "empty", "extra"]))
        if change == "element":
            row = rows[draw(st.integers(0, len(rows) - 1))] if rows else None
            if isinstance(row, list) and row:
                row[draw(st.integers(0, len(row) - 1))] = draw(_odd)
        elif change == "row" and rows:
            rows[draw(st.integers(0, len(rows) - 1))] = draw(_odd)
        elif change == "field":
            request = {draw(st.sampled_from(["instances", "inputs"])): draw(_odd)}
        elif change == "both":
            request = {"instances": rows, "inputs": rows}
        elif change == "records":
            columns = ["a", "b", "c", "d"]
            # Fuzzed rows may be shorter or longer than the columns: a record gets what lines up.
            request = {"instances": [dict(zip(columns, r, strict=False)) if isinstance(r, list) else r for r in rows]}
            if draw(st.booleans()):
                request["instances"].append({draw(st.sampled_from(columns + ["e"])): draw(_odd)})
        elif change == "empty":
            request = {"instances": draw(st.sampled_from([[], [[]], [[], []], [{}]]))}
        elif change == "extra":
            rows.append(draw(st.lists(_odd, min_size=0, max_size=6)))
    return Probe("POST", "/v1/models/iris:predict", {"content-type": "application/json"}, _dumps(request))


def _dumps(value: object) -> bytes:
    if _dumpable(value):
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    return json.dumps(value).encode()


def _raw_bytes(path: str) -> st.SearchStrategy[Probe]:
    return st.binary(max_size=200).map(lambda body: Probe("POST", path, {}, body))


@st.composite
def _v2_tensors(draw: st.DrawFn) -> Probe:
    """Well-formed-looking V2 inputs with any shape, datatype, data and parameters, JSON or binary."""
    inputs = []
    blobs = []
    for index in range(draw(st.integers(1, 3))):
        entry: dict[str, object] = {
            "name": draw(st.sampled_from(["input-0", "x", "", f"in{index}"])),
            "datatype": draw(_datatypes),
            "shape": draw(st.lists(st.integers(-1, 5), max_size=3) | st.just([2, 4])),
        }
        if draw(st.booleans()):
            entry["data"] = draw(_json_values)
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=64))
            blobs.append(blob)
            entry["parameters"] = {"binary_data_size": draw(st.sampled_from([len(blob), len(blob) + 1, -1, "8", None]))}
        elif draw(st.booleans()):
            entry["parameters"] = draw(_json_values)
        inputs.append(entry)
    payload: dict[str, object] = {"inputs": inputs}
    if draw(st.booleans()):
        output = st.fixed_dictionaries(
            {"name": st.sampled_from(["output-0", "nope"])}, optional={"parameters": _json_values}
        )
        payload["outputs"] = draw(st.lists(output, max_size=2))
    if draw(st.booleans()):
        payload["parameters"] = draw(st.fixed_dictionaries({}, optional={"binary_data_output": _json_values}))
    header = orjson.dumps(payload)
    body = header + b"".join(blobs)
    headers = {"content-type": "application/octet-stream"}
    length = draw(st.sampled_from(["exact", "none", "short", "long", "junk"]))
    if length != "none":
        headers["inference-header-content-length"] = {
            "exact": str(len(header)), "short": str(max(len(header) - 1, 0)), "long": str(len(body) + 1), "junk": "12x",
        }[length]
    return Probe("POST", "/v2/models/iris/infer", headers, body)


def _fuzz(server: Server, strategies: list[st.SearchStrategy[Probe]]) -> int:
    """Send ``EXAMPLES`` generated requests; fail on the first 5xx or non-JSON refusal; return how many were sent."""
    sent = 0
    with httpx.Client(base_url=server.base, timeout=30) as client:

        @settings(
            max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
            suppress_health_check=list(HealthCheck), phases=["generate"],
        )
        @given(probe=st.one_of(strategies))
        def send(probe: Probe) -> None:
            nonlocal sent
            try:
                request = client.build_request(probe.method, probe.path, headers=probe.headers, content=probe.body)
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError, ValueError):
                return  # not an HTTP request anyone can send
            response = client.send(request)
            sent += 1
            assert response.status_code < 500, f"{probe!r} -> {response.status_code} {response.text[:400]}"
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/json", f"{probe!r} -> {response.headers}"
                assert isinstance(response.json()["error"], str), f"{probe!r} -> {response.text[:400]}"

        send()
    return sent


def _still_serves_iris(server: Server) -> None:
    assert server.proc.poll() is None, "the model server died during the fuzzing"
    assert httpx.get(f"{server.base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.base}/v2/health/ready").json() == {"ready": True}
    v1 = httpx.post(f"{server.base}/v1/models/iris:predict", content=(IRIS_DIR / "iris-input-v1.json").read_bytes())
    assert v1.status_code == 200 and v1.json() == {"predictions": [1, 1]}
    v2 = httpx.post(f"{server.base}/v2/models/iris/infer", content=(IRIS_DIR / "iris-input-v2.json").read_bytes())
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [1, 1]


def test_openapi_document_describes_both_protocols(server: Server) -> None:
    document = httpx.get(f"{server.base}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = {V1_PREDICT, V2_INFER, "/v2/health/live", "/v2/health/ready", "/v2/models/{model}/versions/{version}/infer"}
    assert paths <= set(document["paths"])
    assert document["components"]["parameters"]["model"]["schema"]["enum"] == ["iris"]
    assert "enum" not in document["components"]["parameters"]["version"]["schema"]  # iris is unversioned
    assert set(server.schema[V2_INFER]["POST"].definition.raw["responses"]) >= {"200", "400", "404", "413", "503"}


def test_v1_fuzzing_never_gets_a_5xx_and_iris_still_answers(server: Server) -> None:
    strategies = _operations(server.schema, V1_PREDICT, "POST", ["/v1/models/{model}", "/v1/models", "/"])
    strategies += [_v1_mutants()] * 6 + [_raw_json("/v1/models/iris:predict"), _raw_bytes("/v1/models/iris:predict")]
    assert _fuzz(server, strategies) >= CASES_PER_API
    _still_serves_iris(server)


def test_v2_fuzzing_never_gets_a_5xx_and_iris_still_answers(server: Server) -> None:
    strategies = _operations(
        server.schema, V2_INFER, "POST",
        ["/v2/models/{model}", "/v2/models/{model}/ready", "/v2/health/live", "/v2/health/ready", "/v2"],
    )
    versioned = server.schema["/v2/models/{model}/versions/{version}/infer"]["POST"]
    strategies.append(versioned.as_strategy(GenerationMode.NEGATIVE).map(_from_case))
    strategies += [_v2_mutants()] * 6 + [_v2_tensors(), _v2_tensors()]
    strategies += [_raw_json("/v2/models/iris/infer"), _raw_bytes("/v2/models/iris/infer")]
    assert _fuzz(server, strategies) >= CASES_PER_API
    _still_serves_iris(server)
