"""No orphans: replicas a SIGKILLed daemon left behind are stopped by the next `odh up` and by `odh down`,
and a pid record that no longer names the process it was written for (a recycled pid) kills nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from support import IRIS_DIR, free_port, running, wait_until

from serving.platform.local import LocalPlatform, start_daemon, stop_daemon
from serving.platform.local.orphans import RECORD_NAME, ProcessRecord

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "iris", "namespace": "default"},
    "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}},
}


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's new parent may reap it late)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# Replica processes a test saw; killed at teardown whatever the outcome, so that no test leaves one behind.
_seen: list[psutil.Process] = []


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    stop_daemon(state)
    for proc in _seen:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
    _seen.clear()


def deploy_iris_then_kill_the_daemon(state: Path, port: int) -> list[psutil.Process]:
    """Iris ready on a daemon that is then SIGKILLed; returns the replica processes it leaves running."""
    info = start_daemon(state, port)
    with LocalPlatform(state) as platform:
        platform.apply(ISVC)
        url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
        replicas = [psutil.Process(pod["pid"]) for pod in platform.pods()]
    _seen.extend(replicas)
    assert httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY, timeout=30).json()["predictions"] == [1, 1]
    daemon = psutil.Process(info["pid"])
    os.kill(daemon.pid, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), what="the daemon gone after SIGKILL")
    assert replicas and all(alive(p) for p in replicas)  # what the issue saw: the replicas outlive their daemon
    return replicas


def test_odh_up_stops_the_replicas_a_killed_daemon_left_and_serves_with_fresh_ones(state: Path) -> None:
    port = free_port()
    orphans = deploy_iris_then_kill_the_daemon(state, port)
    start_daemon(state, port)
    assert not [p.pid for p in orphans if alive(p)], "the new daemon left its predecessor's replicas running"
    with LocalPlatform(state) as platform:
        url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
        fresh = {pod["pid"] for pod in platform.pods()}
    assert fresh and not fresh & {p.pid for p in orphans}
    assert httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY, timeout=30).json()["predictions"] == [1, 1]


def test_odh_down_stops_the_replicas_a_killed_daemon_left(state: Path) -> None:
    orphans = deploy_iris_then_kill_the_daemon(state, free_port())
    assert stop_daemon(state) is True  # something was running, and is down now
    assert not [p.pid for p in orphans if alive(p)], "odh down left the dead daemon's replicas running"
    assert not list((state / "pods").glob(f"*/*/{RECORD_NAME}"))


def test_a_record_whose_pid_now_names_another_process_kills_nothing(state: Path) -> None:
    with running(["sleep", "600"]) as bystander:
        proc = psutil.Process(bystander.pid)
        real = ProcessRecord.of(proc.pid)
        pods = state / "pods" / "default"
        # The pid was recycled: same number, another process (started at another time, or another command).
        ProcessRecord(real.pid, real.pgid, real.create_time - 100.0, real.cmdline, real.exe).save(
            pods / "recycled-0" / RECORD_NAME)
        ProcessRecord(real.pid, real.pgid, real.create_time, ["python", "-m", "server"], "/usr/bin/python3").save(
            pods / "other-command-0" / RECORD_NAME)
        start_daemon(state, free_port())
        assert stop_daemon(state) is True
        assert stop_daemon(state) is False  # nothing left to stop
        assert alive(proc) and bystander.poll() is None
        assert not list(pods.glob(f"*/{RECORD_NAME}"))  # read once, then dropped


def test_a_replica_whose_leader_exits_leaves_no_process_of_its_group(state: Path, tmp_path: Path) -> None:
    """A container whose main process dies takes its children with it (as a pod's cgroup does)."""
    child_pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '600']); "
              f"open({str(child_pid_file)!r}, 'w').write(str(p.pid)); time.sleep(1e9)")
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "parent", "namespace": "default"},
        "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "none",
                                               "command": ["python", "-c", script]}]}},
    }
    start_daemon(state, free_port())
    with LocalPlatform(state) as platform:
        platform.apply(isvc)
        leader = wait_until(lambda: next((p["pid"] for p in platform.pods() if p["pid"]), None), what="a replica process")
        child = psutil.Process(int(wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text(),
                                              what="the child's pid")))
        _seen.append(child)
        os.kill(leader, signal.SIGKILL)
        wait_until(lambda: not alive(child), what="the dead leader's child gone")

