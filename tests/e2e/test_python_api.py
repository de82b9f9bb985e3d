"""The README's Python API as a new user runs it: a fresh home directory, `odh up` running, then
``from flows import deploy_model; deploy_model(...)`` in a new interpreter works the first time, with the
environment the CLI gives (Prefect's home in the state directory, analytics off, a start-up timeout a
loaded machine can meet), and reports to the `odh up --prefect` server when one runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import IRIS_DIR, REPO_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


def user_env(home: Path) -> dict[str, str]:
    """A new user's environment: their own home, and none of the settings this test run may carry."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "ODH_")) and k not in ("AWS_ENDPOINT_URL",)}
    env["HOME"] = str(home)
    return env


def odh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "deployments.cli", *args], capture_output=True, text=True,
                            env=user_env(home), cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, f"odh {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


def readme_snippet(home: Path, name: str) -> tuple[str, str]:
    """Run the README's lines in a new interpreter; returns ``deployment.url`` and what it printed."""
    code = (
        "from flows import deploy_model\n"
        f"deployment = deploy_model('tests/fixtures/kserve-iris/model.joblib', name={name!r})\n"
        "print('URL=' + deployment.url)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=user_env(home),
                            cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, f"the README's snippet failed the first time:\n{result.stdout}\n{result.stderr[-6000:]}"
    return next(line[4:] for line in result.stdout.splitlines() if line.startswith("URL=")), result.stdout + result.stderr


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("fresh-home")
    odh(home, "up", "--gateway-port", str(free_port()))
    try:
        yield home
    finally:
        odh(home, "down")


def test_the_readme_snippet_works_the_first_time_on_a_fresh_home(home: Path) -> None:
    url, _ = readme_snippet(home, "iris")
    answer = httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY, timeout=30).raise_for_status().json()
    assert answer["predictions"] == [1, 1]
    # The CLI's Prefect environment: Prefect's database lives in the state directory, not in ~/.prefect.
    state = home / ".odh"
    assert (state / "prefect" / "prefect.db").exists()
    assert not (home / ".prefect" / "prefect.db").exists()


def test_the_flow_run_is_reported_to_the_odh_up_prefect_server(home: Path) -> None:
    from deployments.prefect_server import start_prefect_server, stop_prefect_server

    state = home / ".odh"
    api = start_prefect_server(state, port=free_port())  # what `odh up --prefect` runs, on a free port
    try:
        url, output = readme_snippet(home, "iris-reported")
        assert httpx.post(f"{url}/v1/models/iris-reported:predict", json=V1_BODY, timeout=30).json()["predictions"] == [1, 1]
        # The server and an ephemeral one would share the state directory's database: what tells them apart
        # is that no ephemeral server was started, and the run is there through the server's API.
        assert "Starting temporary server" not in output, output[-3000:]
        flows = httpx.post(f"{api}/flows/filter", json={}, timeout=30).raise_for_status().json()
        flow_ids = [f["id"] for f in flows if f["name"] == "deploy-model"]
        assert flow_ids, f"no deploy-model flow on {api}: {[f['name'] for f in flows]}"
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"id": {"any_": flow_ids}}},
                          timeout=30).raise_for_status().json()
        assert [r["state_type"] for r in runs if r["parameters"].get("name") == "iris-reported"] == ["COMPLETED"]
    finally:
        stop_prefect_server(state)
