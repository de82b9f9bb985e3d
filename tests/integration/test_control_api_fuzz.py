"""Schemathesis against the control API of a real daemon, over its real socket.

The schema is the one the daemon publishes (``/openapi.json``); every operation gets schema-conforming
and schema-violating requests (the apply body is declared as a Kubernetes object, so the fuzzer builds
objects of every user kind as well as junk). No answer may be a 5xx or break the schema's promises, and
afterwards the daemon still applies, reads and deletes a valid object.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from support import running_platform

from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

# Examples per operation and generation mode. Schema-violating requests exist only where the schema
# constrains something (the apply body and kind, the namespace query); operations without parameters
# have one request to make.
EXAMPLES: dict[str, dict[GenerationMode, int]] = {
    "POST /apis/{kind}": {GenerationMode.POSITIVE: 350, GenerationMode.NEGATIVE: 350},
    "GET /apis/{kind}": {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 100},
    "GET /apis/{kind}/{namespace}/{name}": {GenerationMode.POSITIVE: 200},
    "DELETE /apis/{kind}/{namespace}/{name}": {GenerationMode.POSITIVE: 200},
}
MINIMUM_CASES = 1000


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="odh-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(state: Path) -> Iterator[LocalPlatform]:
    with running_platform(state) as client:
        yield client


def _send(client: httpx.Client, kwargs: dict[str, Any]) -> httpx.Response:
    """A schemathesis case's request (given as requests-style arguments) sent with httpx over the socket."""
    return client.request(
        kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params") or None,
        cookies=kwargs.get("cookies") or None, json=kwargs.get("json"),
        content=kwargs.get("data"),
    )


def _fuzz_operation(client: httpx.Client, operation: Any, label: str, mode: GenerationMode, examples: int,
                    sent: dict[str, int], failures: list[str]) -> None:
    """Send ``examples`` generated cases of one operation, recording each failure in ``failures``."""

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://odh")
        try:
            response = _send(client, kwargs)
        except httpx.TransportError as exc:  # a dropped connection is a failure too, not a 4xx
            failures.append(f"{label} ({mode.value}): {exc!r} for {kwargs['url']} "
                            f"{str(kwargs.get('json', kwargs.get('data')))[:300]}")
            return
        sent[f"{label} {mode.value}"] = sent.get(f"{label} {mode.value}", 0) + 1
        if response.status_code >= 500:
            failures.append(f"{label} ({mode.value}): {response.status_code} {response.text[:300]} "
                            f"for {kwargs['url']} {str(kwargs.get('json', kwargs.get('data')))[:300]}")
            return
        try:
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                     response_schema_conformance])
        except (AssertionError, FailureGroup) as exc:  # each check's failure, or several grouped
            failures.append(f"{label} ({mode.value}): {' '.join(str(exc).split())[:400]}")

    fuzz()


def test_generated_requests_get_no_5xx_and_the_api_still_works(state: Path, platform: LocalPlatform) -> None:
    transport = httpx.HTTPTransport(uds=str(state / "api.sock"))
    with httpx.Client(transport=transport, base_url="http://odh", timeout=30) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").raise_for_status().json())
        sent: dict[str, int] = {}
        failures: list[str] = []
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            for mode, examples in EXAMPLES.get(label, {GenerationMode.POSITIVE: 1}).items():
                _fuzz_operation(client, operation, label, mode, examples, sent, failures)
        assert not failures, "\n".join(failures[:20])
        assert sum(sent.values()) >= MINIMUM_CASES, sent
        assert {label.rsplit(" ", 1)[0] for label in sent} == {f"{method.upper()} {path}" for path, methods in
                                                             schema.raw_schema["paths"].items() for method in methods}

        # Still answering, and correctly: a valid object round-trips.
        runtime = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
                   "metadata": {"name": "after-fuzz"},
                   "spec": {"supportedModelFormats": [{"name": "sklearn"}], "containers": [{"name": "c", "image": "i"}]}}
        assert platform.apply(runtime)["metadata"]["name"] == "after-fuzz"
        assert platform.get("ServingRuntime", "default", "after-fuzz")["spec"] == runtime["spec"]
        assert platform.delete("ServingRuntime", "default", "after-fuzz")
        assert client.get("/apis/ServingRuntime/default/after-fuzz").status_code == 404
        assert client.get("/healthz").json() == {"status": "ok"}
    log = (state / "daemon.log").read_text()
    assert "Traceback" not in log, log[-3000:]
