"""A replica does not inherit the daemon's storage credentials (only the storage initializer uses them, as
in KServe); what its manifest's container ``env`` sets explicitly still reaches it."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
from support import IRIS_DIR, running_platform, wait_until

from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

DAEMON_SECRETS = {
    "AWS_ACCESS_KEY_ID": "daemon-key-id", "AWS_SECRET_ACCESS_KEY": "daemon-secret", "AWS_SESSION_TOKEN": "daemon-session",
    "HF_TOKEN": "daemon-hf", "MLFLOW_TRACKING_PASSWORD": "daemon-mlflow", "GOOGLE_APPLICATION_CREDENTIALS": "/daemon/g.json",
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    state = tmp_path_factory.mktemp("odh-env")
    with running_platform(state, env={**DAEMON_SECRETS, "ODH_EXAMPLE_SETTING": "kept"}) as client:
        yield client


def replica_environ(platform: LocalPlatform, deployment: str) -> dict[str, str]:
    """The environment the replica process was started with, as the kernel keeps it (/proc/PID/environ)."""
    pid = wait_until(lambda: next((p["pid"] for p in platform.pods() if p["deployment"] == deployment and p["pid"]), None),
                     timeout=60, what=f"a {deployment} process")
    return psutil.Process(pid).environ()


def test_a_model_server_sees_no_storage_credentials_of_the_daemon(platform: LocalPlatform) -> None:
    platform.apply({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}},
    })
    platform.wait_ready("InferenceService", "default", "iris", timeout=120)
    environ = replica_environ(platform, "iris-predictor")
    assert not set(DAEMON_SECRETS) & set(environ), sorted(set(DAEMON_SECRETS) & set(environ))
    assert environ["ODH_EXAMPLE_SETTING"] == "kept" and environ["PATH"]


def test_a_custom_container_gets_what_its_manifest_sets_and_no_daemon_secret(platform: LocalPlatform) -> None:
    platform.apply({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "custom", "namespace": "default"},
        "spec": {"predictor": {"containers": [{
            "name": "kserve-container", "image": "none", "command": ["python", "-c", "import time; time.sleep(1e9)"],
            "env": [{"name": "HF_TOKEN", "value": "from-the-manifest"}, {"name": "MY_SETTING", "value": "x"}],
        }]}},
    })
    environ = replica_environ(platform, "custom-predictor")
    assert environ["HF_TOKEN"] == "from-the-manifest"  # the user's explicit choice
    assert environ["MY_SETTING"] == "x"
    assert "AWS_SECRET_ACCESS_KEY" not in environ and "MLFLOW_TRACKING_PASSWORD" not in environ
    platform.delete("InferenceService", "default", "custom")
