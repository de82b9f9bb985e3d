from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, temporary_env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test server for the whole session: it takes seconds to start."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 on loopback over real HTTP; boto3 and the daemon reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with temporary_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                           AWS_DEFAULT_REGION="us-east-1"):
            yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def odh_state(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Path]:
    """A running embedded platform whose daemon sees the S3 endpoint (started after moto)."""
    from serving.platform.local import start_daemon, stop_daemon

    state = tmp_path_factory.mktemp("odh")
    start_daemon(state, free_port())
    try:
        yield state
    finally:
        stop_daemon(state)
