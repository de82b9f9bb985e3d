"""No request is lost when a replica dies or a new version rolls out under load (Standard mode).

The gateway's activator holds a request whose revision has no ready replica (the only one was killed, or
is restarting) and releases it to the first replica that is ready again; a request whose replica vanished
before answering is replayed. The load counts every answer, a dropped connection too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from load import LoadResult, drive
from support import IRIS_DIR, running_platform, served_by, wait_until, wait_until_async, write_constant_model

from serving.platform.local import LocalPlatform

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    with running_platform(tmp_path_factory.mktemp("odh-no-drops")) as client:
        yield client


def isvc(name: str, storage_uri: str, **predictor: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"predictor": {"sklearn": {"storageUri": storage_uri}, **predictor}}}


def ready_pids(platform: LocalPlatform, deployment: str) -> list[int]:
    return [p["pid"] for p in platform.pods() if p["deployment"] == deployment and p["ready"] and p["pid"]]


async def kill_under_load(platform: LocalPlatform, url: str, deployment: str, *, total: int, kills: int = 1) -> Any:
    """Send ``total`` requests; once some are answered, SIGKILL ``kills`` ready replicas (whole process groups)."""
    load = asyncio.create_task(drive(url, V1_BODY, clients=8, total=total))
    killed: list[int] = []
    try:
        for _ in range(kills):
            pids = await wait_until_async(lambda: [p for p in ready_pids(platform, deployment) if p not in killed],
                                          timeout=60, interval=0.05, what=f"a ready replica of {deployment} to kill")
            os.killpg(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    finally:
        result = await load
    return result, killed


def test_the_only_replica_killed_under_load_loses_no_request(platform: LocalPlatform) -> None:
    platform.apply(isvc("solo", IRIS_DIR.as_uri()))
    url = platform.wait_ready("InferenceService", "default", "solo", timeout=120)["status"]["url"]
    result, killed = asyncio.run(kill_under_load(platform, f"{url}/v1/models/solo:predict", "solo-predictor", total=2000))
    assert len(result.answers) == 2000
    assert not result.failures, result.describe_failures()
    assert killed
    # The replica was really replaced: a new process serves now.
    assert wait_until(lambda: [p for p in ready_pids(platform, "solo-predictor") if p not in killed], timeout=60)


def test_one_of_two_replicas_killed_under_load_loses_no_request(platform: LocalPlatform) -> None:
    platform.apply(isvc("pair", IRIS_DIR.as_uri(), minReplicas=2, maxReplicas=2))
    url = platform.wait_ready("InferenceService", "default", "pair", timeout=120)["status"]["url"]
    wait_until(lambda: len(ready_pids(platform, "pair-predictor")) == 2, timeout=60, what="two ready replicas")
    result, killed = asyncio.run(kill_under_load(platform, f"{url}/v1/models/pair:predict", "pair-predictor", total=2000, kills=2))
    assert len(killed) == 2
    assert not result.failures, result.describe_failures()


def test_a_rollout_under_load_loses_no_request(platform: LocalPlatform, tmp_path: Path) -> None:
    write_constant_model(tmp_path)
    platform.apply(isvc("roll", IRIS_DIR.as_uri()))
    url = platform.wait_ready("InferenceService", "default", "roll", timeout=120)["status"]["url"]
    predict = f"{url}/v1/models/roll:predict"

    async def roll() -> LoadResult:
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(drive(predict, V1_BODY, clients=8, stop=stop, identify=served_by, into=result))
        try:
            await wait_until_async(lambda: result.by()["v1"] >= 50, timeout=60, what="v1 answering the load")
            await asyncio.to_thread(platform.apply, isvc("roll", tmp_path.as_uri()))
            # Keep the load on until the rollout is over: v2 answers it and the old replicas are gone.
            await wait_until_async(lambda: result.by()["v2"] >= 50 and ready_pids(platform, "roll-predictor")
                                   and all(p["ready"] for p in platform.pods() if p["deployment"] == "roll-predictor"),
                                   timeout=120, interval=0.1, what="v2 answering the load")
        finally:
            stop.set()
            await load
        return result

    result = asyncio.run(roll())
    assert not result.failures, result.describe_failures()
    assert result.by()["v1"] > 0 and result.by()["v2"] > 0, result.by()
