"""``odh restart`` under load: a real daemon serving a real iris InferenceService re-executes itself in place
while keep-alive clients keep sending; every request is answered 200, the replicas are adopted (same pids),
the fork server survives, a replica's exit still reaches its runner, and the InferenceService stays Ready.
A daemon SIGKILLed after a restart still leaves nothing behind for the next ``odh up``."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from load import drive
from support import IRIS_DIR, free_port, running_platform, wait_until, wait_until_async

from serving.platform.base import condition
from serving.platform.local import LocalPlatform, daemon_info, start_daemon, stop_daemon
from serving.platform.local.lifecycle import restart_daemon
from serving.platform.local.orphans import RECORD_NAME

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "iris", "namespace": "default"},
    "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}},
}


def odh_restart(state: Path) -> subprocess.CompletedProcess[str]:
    """``odh restart`` as a user runs it: the command in its own process."""
    env = {**os.environ, "ODH_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "deployments.cli", "restart"], capture_output=True, text=True,
                          env=env, timeout=180)


def zygote_pid(daemon_pid: int) -> int | None:
    for child in psutil.Process(daemon_pid).children():
        if "serving.platform.local.zygote" in " ".join(child.cmdline()):
            return child.pid
    return None


def ready(platform: LocalPlatform) -> bool:
    return (condition(platform.get("InferenceService", "default", "iris"), "Ready") or {}).get("status") == "True"


async def restart_under_load(state: Path, url: str, restart_with: list[Any]) -> tuple[list[bool], Any]:
    """Drive 8 keep-alive clients at ``url`` while each of ``restart_with`` restarts the daemon in turn (with
    answers before, between and after); returns every Ready condition seen meanwhile and the load's result."""
    answered = 0

    def count(_: httpx.Response) -> None:
        nonlocal answered
        answered += 1

    stop = asyncio.Event()
    load = asyncio.create_task(drive(f"{url}/v1/models/iris:predict", V1_BODY, clients=8, stop=stop, identify=count))
    seen_ready: list[bool] = []

    async def watch_ready() -> None:
        with LocalPlatform(state) as platform:
            while not stop.is_set():
                seen_ready.append(await asyncio.to_thread(ready, platform))
                await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_ready())
    try:
        for restart in [*restart_with, None]:
            target = answered + 100
            await wait_until_async(lambda: answered >= target, timeout=60, what="100 more answers under load")  # noqa: B023 - awaited here
            if restart is not None:
                await asyncio.to_thread(restart, state)
    finally:
        stop.set()
    result = await load
    await watcher
    return seen_ready, result


def check_cli_restart(state: Path) -> None:
    done = odh_restart(state)
    assert done.returncode == 0, done.stderr
    assert "odh restarted" in done.stdout


@pytest.mark.parametrize("forked", [False, True], ids=["spawned-replica", "forked-replica"])
async def test_a_restart_under_load_drops_nothing_and_adopts_every_replica(tmp_path: Path, forked: bool) -> None:
    state = tmp_path / "state"
    env = {} if forked else {"ODH_FORK_SERVER": "0"}
    with running_platform(state, env=env) as platform:
        first = daemon_info(state)
        assert first is not None
        daemon, started = int(first["pid"]), first["started"]
        if forked:  # the zygote must be ready before the replica starts, or the replica is spawned
            await wait_until_async(lambda: "ready" in _read(state / "forkserver.log"), timeout=120,
                                   what="the fork server ready")
        platform.apply(ISVC)
        url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
        pods = {pod["name"]: pod["pid"] for pod in platform.pods()}
        (replica,) = pods.values()
        parent = psutil.Process(replica).ppid()
        zygote = zygote_pid(daemon)
        assert (parent == zygote) if forked else (parent == daemon)

        seen_ready, result = await restart_under_load(state, url, [check_cli_restart, restart_daemon])

        assert result.answers and not result.failures, result.describe_failures()
        info = daemon_info(state)
        assert info is not None and info["pid"] == daemon and info["started"] != started  # re-executed in place
        assert {pod["name"]: pod["pid"] for pod in platform.pods()} == pods  # adopted, not restarted
        assert seen_ready and all(seen_ready), f"the InferenceService left Ready during a restart: {seen_ready}"
        assert zygote_pid(daemon) == zygote  # the fork server survived too (None when turned off)
        assert not list(state.glob("pods/*/*/*.tmp"))

        # The adopted replica's end still reaches its runner (exit code and all), which replaces it.
        os.kill(replica, signal.SIGKILL)
        pod = wait_until(lambda: next((p for p in platform.pods() if p["pid"] not in (None, replica) and p["ready"]), None),
                         timeout=120, what="a replacement replica ready")
        assert pod is not None and pod["restarts"] == 1
        assert "process exited with code -9" in _read(state / "daemon.log")  # SIGKILL, as the runner learnt it
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"{url}/v1/models/iris:predict", json=V1_BODY)
        assert answer.status_code == 200 and answer.json()["predictions"] == [1, 1]


async def test_keep_alive_clients_sending_through_restarts_in_a_row_get_every_answer(tmp_path: Path) -> None:
    """The keep-alive race: a restart that closed idle client connections lost the request a client sent on
    one at that moment (httpx: "server disconnected without sending a response"; a POST is not retried).
    Many keep-alive clients, each pausing now and then between its POSTs (a seeded random think time: an idle
    connection at the drain is what the race needs), through several restarts in a row: every answer is 200,
    and idle connections were handed over, not closed."""
    state = tmp_path / "state"
    clients, restarts, between = 24, 5, 60
    with running_platform(state, env={"ODH_FORK_SERVER": "0"}) as platform:
        platform.apply(ISVC)
        url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
        answers: list[int | str] = []
        stop = asyncio.Event()

        async def client(seed: int) -> None:
            think = random.Random(seed)
            async with httpx.AsyncClient(timeout=60) as http:
                while not stop.is_set():
                    try:
                        response = await http.post(f"{url}/v1/models/iris:predict", json=V1_BODY)
                        answers.append(response.status_code)
                    except httpx.HTTPError as exc:
                        answers.append(f"{type(exc).__name__}: {exc}")
                    if think.random() < 0.3:  # load shape, not a wait: the connection idles a while, then sends
                        await asyncio.sleep(think.uniform(0.0, 0.2))

        load = [asyncio.create_task(client(seed)) for seed in range(clients)]
        try:
            for restart in [*range(restarts), None]:
                target = len(answers) + between
                await wait_until_async(lambda: len(answers) >= target, timeout=60,  # noqa: B023 - awaited here
                                       what=f"{between} more answers under load")
                if restart is not None:
                    await asyncio.to_thread(restart_daemon, state)
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        failures = [a for a in answers if a != 200]
        assert not failures, f"{len(failures)} of {len(answers)} failed: {failures[:5]}"
        log = _read(state / "daemon.log")
        handed = [int(n) for n in re.findall(r"handing over (\d+) idle client connections", log)]
        assert len(handed) == restarts and sum(handed) > 0, handed


def test_a_daemon_killed_after_a_restart_leaves_no_replica_for_the_next_odh_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    info = start_daemon(state, port)
    try:
        with LocalPlatform(state) as platform:
            platform.apply(ISVC)
            platform.wait_ready("InferenceService", "default", "iris", timeout=120)
            restart_daemon(state)
            replicas = [psutil.Process(pod["pid"]) for pod in platform.pods()]
        assert replicas
        os.kill(int(info["pid"]), signal.SIGKILL)
        wait_until(lambda: not _alive(psutil.Process(int(info["pid"]))), what="the daemon gone after SIGKILL")
        assert all(_alive(p) for p in replicas)  # what SIGKILL leaves: the adopted replicas, orphaned
        start_daemon(state, port)
        assert not [p.pid for p in replicas if _alive(p)], "odh up left the killed daemon's replicas running"
        with LocalPlatform(state) as platform:
            platform.wait_ready("InferenceService", "default", "iris", timeout=120)
            assert {pod["pid"] for pod in platform.pods()}.isdisjoint({p.pid for p in replicas})
    finally:
        stop_daemon(state)
    assert not list((state / "pods").glob(f"*/*/{RECORD_NAME}"))


def test_odh_restart_without_a_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    done = odh_restart(tmp_path / "state")
    assert done.returncode == 1
    assert "odh up" in done.stderr


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
