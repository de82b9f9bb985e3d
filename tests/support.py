"""Helpers shared by the integration tests: free ports, waiting for HTTP, processes that always die."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import psutil

if TYPE_CHECKING:
    from serving.platform.local import LocalPlatform

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
IRIS_DIR = FIXTURES / "kserve-iris"


@contextlib.contextmanager
def temporary_env(**values: str) -> Iterator[None]:
    """Set environment variables for the block (child processes started in it inherit them), then put back
    what was there before, unsetting those that were unset."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy and return that: the one way tests wait.

    A test observes the state it needs instead of sleeping for a guessed time; the failure names ``what``
    and the last value seen, so a timeout says what never happened.
    """
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s (last: {value!r})")
        time.sleep(interval)
        value = check()
    return value


async def wait_until_async(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.01,  # noqa: ASYNC109 - wait_until's signature: a deadline between polls, not a cancel scope
                           what: str = "condition") -> T:
    """``wait_until`` for code on an event loop: the loop keeps running between checks."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s (last: {value!r})")
        await asyncio.sleep(interval)
        value = check()
    return value


def listening_address(pid: int, port: int) -> str:
    """The address the process ``pid`` or one of its descendants listens on at TCP ``port``."""
    leader = psutil.Process(pid)
    for proc in [leader, *leader.children(recursive=True)]:
        # psutil 6 renamed connections() to net_connections(); kserve pins psutil below 6
        connections = getattr(proc, "net_connections", None) or proc.connections
        for conn in connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                return conn.laddr.ip
    raise AssertionError(f"nothing under pid {pid} listens on port {port}")


def tcp_listeners(pgid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket a process of the process group ``pgid`` listens on."""
    found: set[tuple[str, int]] = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            connections = (getattr(proc, "net_connections", None) or proc.connections)(kind="tcp")
        except (psutil.Error, ProcessLookupError):
            continue  # gone meanwhile
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


@contextlib.contextmanager
def running_platform(state: Path, gateway_port: int | None = None,
                     env: dict[str, str] | None = None) -> Iterator[LocalPlatform]:
    """An embedded platform daemon on ``state`` (a free gateway port unless given) and a client for it;
    the daemon and every replica stop on exit, whatever happens."""
    from serving.platform.local import LocalPlatform, start_daemon, stop_daemon

    start_daemon(state, gateway_port or free_port(), env=env)
    try:
        with LocalPlatform(state) as client:
            yield client
    finally:
        stop_daemon(state)


class StreamServer:
    """A test server on a free loopback port over asyncio streams: ``handle`` serves one connection. Every
    connection it accepted is closed when its handler ends and when the server exits, so none is left for
    the garbage collector to find after the event loop has gone."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away: what these servers expect sooner or later
        finally:
            self._writers.discard(writer)
            writer.close()

    async def __aenter__(self) -> StreamServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def serving_router(engine_ports: Sequence[int]) -> AsyncIterator[tuple[Any, Any]]:
    """An LLM-D router with the default scheduler, served by its own HTTP server on a free loopback port in
    front of engines already listening on ``engine_ports`` (taken as healthy: no scrape is awaited);
    yields ``(router, server)`` and stops both on exit."""
    import yaml

    from serving.llmd.auth import KeyRing
    from serving.llmd.http_server import HttpServer
    from serving.llmd.monitor import EngineSpec, LoadMonitor
    from serving.llmd.router import Router, RouterConfig
    from serving.llmd.scheduler import DEFAULT_CONFIG_PATH, Scheduler, load_config
    from serving.llmd.upstream import EnginePool

    names = [f"127.0.0.1:{port}" for port in engine_ports]
    monitor = LoadMonitor([EngineSpec(f"http://{name}", name=name) for name in names])
    for pod in monitor.pods.values():
        pod.healthy = True
    router = Router(RouterConfig(model="m"), monitor,
                    Scheduler(load_config(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()))), KeyRing(()))
    await router.start()
    router.clients = {name: EnginePool(f"http://{name}") for name in names}
    server = HttpServer(router.serve_http)
    await server.start("127.0.0.1", 0)
    try:
        yield router, server
    finally:
        await server.stop(grace=0.5)
        await router.stop()


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail early when ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s (last error: {last})")


@contextlib.contextmanager
def running(args: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run ``args`` in its own process group and kill the whole group on exit, whatever happens."""
    proc = subprocess.Popen(
        list(args),
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO_ROOT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# A second version of the iris model: answers class 2 to everything, as fast as iris answers (iris says [1, 1]
# to its V1 sample), so an answer tells which version served it and only routing decides where requests go.
_CONSTANT_MODEL = """
import sys
import joblib
import numpy as np
from sklearn.dummy import DummyClassifier

joblib.dump(DummyClassifier(strategy="constant", constant=2).fit(np.zeros((3, 4)), [0, 1, 2]), sys.argv[1])
"""


def write_constant_model(directory: Path) -> Path:
    """``directory`` with a ``model.joblib`` that always predicts 2 (made in its own interpreter, as a user would)."""
    subprocess.run([sys.executable, "-c", _CONSTANT_MODEL, str(directory / "model.joblib")], check=True, timeout=120)
    return directory


def served_by(response: httpx.Response) -> str | None:
    """"v1" for iris's answer to its V1 sample, "v2" for the constant model's, None for anything else."""
    predictions = response.json().get("predictions") if response.status_code == 200 else None
    return {(1, 1): "v1", (2, 2): "v2"}.get(tuple(predictions or ()))


def write_tiny_llm_dir(directory: Path) -> Path:
    """``directory`` laid out as vLLM expects a model (the fixture tokenizer and a config); the simulated
    engines only read its tokenizer."""
    for item in (FIXTURES / "vllm-kv-events" / "tokenizer").iterdir():
        shutil.copy(item, directory / item.name)
    shutil.copy(FIXTURES / "vllm-kv-events" / "model-config.json", directory / "config.json")
    return directory


def prefect_call(method: str, url: str, body: object = None) -> Any:
    """One Prefect REST call, sent again while the server says it is busy (429/502/503: a Prefect server on
    SQLite answers 503 while its database is locked, which a fresh one on a loaded machine does for a while);
    any other error fails the test. Returns the decoded JSON."""
    def attempt() -> tuple[Any] | None:  # wrapped: an empty list is an answer too
        response = httpx.request(method, url, json=body, timeout=30)
        if response.status_code in (429, 502, 503):
            return None
        assert response.status_code < 400, f"{method} {url}: {response.status_code} {response.text}"
        return (response.json(),)

    answered = wait_until(attempt, timeout=120, interval=0.5, what=f"{method} {url} past a busy Prefect server")
    assert answered is not None  # wait_until returns only a truthy value
    return answered[0]
