"""``odh get`` as a user runs it: the command in its own process, a real daemon, a real iris InferenceService."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from support import IRIS_DIR, running_platform

from serving.errors import PlatformError
from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

AGE = re.compile(r"^\d+[smhdy]")


def iris_isvc() -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "default"},
            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("odh-get")
    with running_platform(root) as platform:
        platform.apply(iris_isvc())
        platform.wait_ready("InferenceService", "default", "iris", timeout=90)
        yield root


def odh(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ODH_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], capture_output=True, text=True, env=env, timeout=60)


def table_rows(stdout: str) -> list[list[str]]:
    """A kubectl table's lines, split on the 2+ spaces between columns (cells may be blank, never hold 2 spaces)."""
    return [re.split(r"\s{2,}", line.rstrip()) for line in stdout.splitlines()]


def test_get_isvc_prints_kserves_columns(state: Path) -> None:
    result = odh(state, "get", "isvc")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "URL", "READY", "PREV", "LATEST", "PREVROLLEDOUTREVISION", "LATESTREADYREVISION", "AGE"]
    (row,) = rows
    cells = row.split()
    assert cells[0] == "iris" and cells[1].endswith("/serving/default/iris") and cells[2] == "True"
    assert AGE.match(cells[-1]), cells
    # Columns line up under their headers, as kubectl's tabwriter prints them.
    assert row.index("True") == header.index("READY")


def test_get_deployments_json_is_a_list_with_the_predictor(state: Path) -> None:
    result = odh(state, "get", "deployments", "-o", "json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert (listing["apiVersion"], listing["kind"], listing["metadata"]) == ("v1", "List", {"resourceVersion": ""})
    (deployment,) = listing["items"]
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert deployment["metadata"]["name"] == "iris-predictor"
    assert deployment["status"]["readyReplicas"] == 1


def test_get_pods_shows_the_running_replica_and_its_port_serves(state: Path) -> None:
    result = odh(state, "get", "pods")
    assert result.returncode == 0, result.stderr
    header, *rows = table_rows(result.stdout)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    (row,) = rows
    assert row[0].startswith("iris-predictor-") and row[1:4] == ["1/1", "Running", "0"] and AGE.match(row[4])
    pod = json.loads(odh(state, "get", "pod", row[0], "-o", "json").stdout)
    assert (pod["kind"], pod["status"]["phase"], pod["status"]["podIP"]) == ("Pod", "Running", "127.0.0.1")
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    port = pod["metadata"]["annotations"]["serving.odh.io/port"]
    assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10).status_code == 200
    assert int(pod["metadata"]["annotations"]["serving.odh.io/pid"]) > 0


def test_get_one_object_as_yaml_and_names(state: Path) -> None:
    isvc = yaml.safe_load(odh(state, "get", "inferenceservices.serving.kserve.io", "iris", "-o", "yaml").stdout)
    assert (isvc["kind"], isvc["metadata"]["name"]) == ("InferenceService", "iris")
    names = odh(state, "get", "hpa", "-o", "name")
    assert names.stdout.splitlines() == ["horizontalpodautoscaler.autoscaling/iris-predictor"]


def test_namespaces_and_an_empty_listing(state: Path) -> None:
    empty = odh(state, "get", "isvc", "-n", "elsewhere")
    assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (0, "", "No resources found in elsewhere namespace.")
    everywhere = table_rows(odh(state, "get", "svc", "-A").stdout)
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"] and everywhere[1][:2] == ["default", "iris-predictor"]


def test_a_missing_name_is_the_apiservers_not_found(state: Path) -> None:
    result = odh(state, "get", "isvc", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): inferenceservices.serving.kserve.io "nope" not found'
    assert "Traceback" not in result.stderr


def test_an_unknown_kind_is_one_error_line_naming_the_known_kinds(state: Path) -> None:
    result = odh(state, "get", "widgets")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith('error: the server doesn\'t have a resource type "widgets"')
    assert "inferenceservices.serving.kserve.io (isvc)" in line and "revisions.serving.knative.dev (rev)" in line


def test_the_control_api_refuses_an_unknown_kind_naming_the_field(state: Path) -> None:
    with LocalPlatform(state) as platform, pytest.raises(PlatformError, match=r"400 .*resource type \"widgets\"; known kinds"):
        platform.kubectl_get("widgets")
