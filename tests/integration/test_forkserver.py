"""The fork server on real processes: replicas forked from a pre-imported zygote serve iris from the model
cache, are reaped and reported with their exit codes, stop with their whole process group, leave pid
records, and fall back to plain spawns while the zygote is dead (it is restarted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from support import IRIS_DIR, free_port, wait_until, wait_until_async

from serving.platform.local import LocalPlatform, forkserver, replicas, start_daemon, stop_daemon
from serving.platform.local.forkserver import ForkedProcess, ForkServer
from serving.platform.local.orphans import RECORD_NAME, ProcessRecord, stop_orphans
from serving.platform.local.pods import PodPlan
from serving.platform.local.replicas import Replica
from serving.storage import StorageSettings, initialize

pytestmark = pytest.mark.integration

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())
IRIS_PLAN = PodPlan(("python", "-m", "serving.runtimes.server", "--model_name=iris", "--model_dir=/mnt/models",
                     "--http_port=8080"), {}, 8080, "/v2/health/ready", IRIS_DIR.as_uri())
# A runnable module for the group test: its leader serves readiness and starts a child that ignores SIGTERM
# (so only the group's SIGKILL after the leader's exit can end it); the child writes its pid once it does.
GROUP_MODULE = """
import json, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def main(argv):
    with open(argv[1], "w") as f:
        json.dump({"environ": dict(os.environ), "argv": sys.argv, "cwd": os.getcwd()}, f)
    subprocess.Popen([sys.executable, "-c", "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      f"open({argv[0]!r} + '.tmp', 'w').write(str(os.getpid())); os.replace({argv[0]!r} + '.tmp', {argv[0]!r}); "
                      "time.sleep(600)"])

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Ready).serve_forever()
"""

_started: list[int] = []  # every replica pid a test saw: killed at teardown whatever the outcome


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def fast_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(replicas, "BACKOFF_START", 0.05)
    yield
    for pid in _started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _started.clear()


@pytest.fixture
async def fork_server(tmp_path: Path) -> AsyncIterator[ForkServer]:
    server = ForkServer(tmp_path / "forkserver.log")
    await server.start()
    try:
        assert await server.wait_ready(120), (tmp_path / "forkserver.log").read_text()
        yield server
    finally:
        zygote = server.pid
        await server.stop()
        if zygote is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(zygote, signal.SIGKILL)


def iris_replica(name: str, tmp_path: Path, server: ForkServer | None) -> Replica:
    settings = StorageSettings.for_state(tmp_path / "state")
    replica = Replica(name, IRIS_PLAN, tmp_path / "pods" / "default" / name,
                      lambda uri, dest: initialize(uri, dest, settings), lambda: None, fork_server=server)
    replica.start()
    return replica


async def ready_pid(replica: Replica, not_pid: int | None = None) -> int:
    await wait_until_async(lambda: replica.ready and replica.info().pid not in (None, not_pid), timeout=120,
                           what=f"replica {replica.name} ready")
    pid = replica.info().pid
    assert pid is not None
    _started.append(pid)
    return pid


async def predict(replica: Replica) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"http://127.0.0.1:{replica.port}/v1/models/iris:predict", json=V1_BODY)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


async def test_a_forked_replica_serves_iris_from_the_model_cache(tmp_path: Path, fork_server: ForkServer) -> None:
    replica = iris_replica("iris-0", tmp_path, fork_server)
    try:
        pid = await ready_pid(replica)
        assert isinstance(replica._proc, ForkedProcess)
        process = psutil.Process(pid)
        assert process.ppid() == fork_server.pid  # forked by the zygote, not spawned by us
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session, as a spawned replica's
        # It serves the files the storage initializer put in the cache (the model dir links to the entry).
        cache = StorageSettings.for_state(tmp_path / "state").cache_dir.resolve()
        assert (replica.pod_dir / "models").resolve().is_relative_to(cache)
        assert await predict(replica) == [1, 1]
    finally:
        await replica.stop()
    wait_until(lambda: not alive(pid), what="the stopped replica gone")
    assert not (replica.pod_dir / RECORD_NAME).exists()


async def test_a_killed_forked_replica_is_reported_with_its_exit_code_and_restarted(
        tmp_path: Path, fork_server: ForkServer) -> None:
    replica = iris_replica("iris-0", tmp_path, fork_server)
    try:
        pid = await ready_pid(replica)
        os.kill(pid, signal.SIGKILL)
        await wait_until_async(lambda: replica.restarts == 1, timeout=30, what="the kill seen")
        assert replica.message.startswith("process exited with code -9"), replica.message
        new_pid = await ready_pid(replica, not_pid=pid)
        assert psutil.Process(new_pid).ppid() == fork_server.pid  # forked again
        assert await predict(replica) == [1, 1]
    finally:
        await replica.stop()


async def test_stopping_a_forked_replica_ends_its_whole_process_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "group_leader.py").write_text(GROUP_MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "lib"))  # the zygote can import the module
    server = ForkServer(tmp_path / "forkserver.log", preload=("group_leader",), runnable=("group_leader",))
    await server.start()
    child_file = tmp_path / "child.pid"
    seen_file = tmp_path / "seen.json"
    plan = PodPlan(("python", "-m", "group_leader", str(child_file), str(seen_file)), {"MY_SETTING": "x"}, 8080, "/", None)
    replica = Replica("group-0", plan, tmp_path / "pods" / "default" / "group-0", lambda uri, dest: dest,
                      lambda: None, fork_server=server)
    try:
        assert await server.wait_ready(60)
        replica.start()
        leader = await ready_pid(replica)
        assert isinstance(replica._proc, ForkedProcess)
        child = int(await wait_until_async(lambda: child_file.exists() and child_file.read_text(), what="the child's pid"))
        _started.append(child)
        assert os.getpgid(child) == leader
        # The child runs as `python -m group_leader ARGS` would: the replica's env, argv and cwd.
        seen = json.loads(seen_file.read_text())
        assert seen["environ"]["PORT"] == str(replica.port) and seen["environ"]["MY_SETTING"] == "x"
        assert seen["argv"][1:] == [str(child_file), str(seen_file)] and seen["cwd"] == os.getcwd()
        await replica.stop()
        await wait_until_async(lambda: not alive(child), timeout=30, what="the child that ignores SIGTERM gone")
        assert replica._proc.returncode == -signal.SIGTERM
    finally:
        await replica.stop()
        await server.stop()


async def test_with_the_zygote_dead_replicas_spawn_and_its_children_are_still_watched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_server: ForkServer) -> None:
    monkeypatch.setattr(forkserver, "RESTART_BACKOFF_START", 3600.0)  # no restart within this test
    forked = iris_replica("iris-0", tmp_path, fork_server)
    spawned: Replica | None = None
    try:
        forked_pid = await ready_pid(forked)
        assert fork_server.pid is not None
        os.kill(fork_server.pid, signal.SIGKILL)
        await wait_until_async(lambda: not fork_server.ready, what="the zygote's death seen")
        assert await predict(forked) == [1, 1]  # its replica keeps serving
        spawned = iris_replica("iris-1", tmp_path, fork_server)
        spawned_pid = await ready_pid(spawned)
        assert not isinstance(spawned._proc, ForkedProcess)
        assert psutil.Process(spawned_pid).ppid() == os.getpid()  # the plain spawn
        assert await predict(spawned) == [1, 1]
        # The orphaned replica's end is still seen (through its pidfd), though not its exit code.
        os.kill(forked_pid, signal.SIGKILL)
        await wait_until_async(lambda: forked.restarts == 1, timeout=30, what="the orphan's death seen")
        assert "lost with the fork server" in forked.message
        await ready_pid(forked, not_pid=forked_pid)
    finally:
        await forked.stop()
        if spawned is not None:
            await spawned.stop()


async def test_a_dead_zygote_is_restarted_and_forks_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork_server: ForkServer) -> None:
    monkeypatch.setattr(forkserver, "RESTART_BACKOFF_START", 0.05)
    first = fork_server.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until_async(lambda: fork_server.starts == 2 and fork_server.ready, timeout=120, what="a new zygote ready")
    assert fork_server.pid not in (None, first)
    replica = iris_replica("iris-0", tmp_path, fork_server)
    try:
        pid = await ready_pid(replica)
        assert psutil.Process(pid).ppid() == fork_server.pid
    finally:
        await replica.stop()


async def test_a_forked_replica_leaves_a_pid_record_that_stops_it(tmp_path: Path, fork_server: ForkServer) -> None:
    replica = iris_replica("iris-0", tmp_path, fork_server)
    try:
        pid = await ready_pid(replica)
        record = ProcessRecord.load(replica.pod_dir / RECORD_NAME)
        assert record is not None and record.pid == pid == record.pgid
        assert record.live_leader() is not None
        # What the next daemon does with a record its killed predecessor left.
        assert stop_orphans(tmp_path / "pods", grace=10) == [pid]
        await wait_until_async(lambda: not alive(pid), what="the recorded replica stopped")
    finally:
        await replica.stop()


def test_the_daemon_forks_replicas_and_its_zygote_goes_with_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    info = start_daemon(state, free_port())
    replica_pid = None
    try:
        # Observe the zygote ready before applying, so that the replica is forked (not spawned meanwhile).
        wait_until(lambda: "ready" in _read(state / "forkserver.log"), timeout=120, what="the daemon's fork server ready")
        daemon = psutil.Process(info["pid"])
        zygote = next(p for p in daemon.children() if "serving.platform.local.zygote" in " ".join(p.cmdline()))
        with LocalPlatform(state) as platform:
            platform.apply({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                            "metadata": {"name": "iris", "namespace": "default"},
                            "spec": {"predictor": {"sklearn": {"storageUri": IRIS_DIR.as_uri()}}}})
            url = platform.wait_ready("InferenceService", "default", "iris", timeout=120)["status"]["url"]
            replica_pid = platform.pods()[0]["pid"]
        _started.append(replica_pid)
        assert psutil.Process(replica_pid).ppid() == zygote.pid
        assert httpx.post(f"{url}/v1/models/iris:predict", json=V1_BODY, timeout=30).json()["predictions"] == [1, 1]
        os.kill(daemon.pid, signal.SIGKILL)
        wait_until(lambda: not alive(zygote.pid), what="the zygote gone with its daemon")
        assert alive(replica_pid)  # replicas outlive a killed daemon until the next one (or odh down) stops them
    finally:
        stop_daemon(state)
    if replica_pid is not None:
        wait_until(lambda: not alive(replica_pid), what="odh down stopped the forked replica")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
