"""The daemon's handle on the fork server (``zygote.py``): replicas in a fraction of a second.

``ForkServer`` starts the zygote, restarts it when it dies (with backoff), and forks a replica through it
when the replica's command is one the zygote pre-imported (``can_fork``); ``spawn`` returns a
``ForkedProcess`` that behaves as an ``asyncio.subprocess.Process`` does for the replica (``pid``,
``returncode``, ``wait()``), or None when the caller should start the process itself: the zygote is not
ready (still importing, dead, restarting) or the fork failed. Nothing waits for a zygote: the plain spawn
is always there, so a replica is never slower than without one.

Exit codes come from the zygote, which reaps its children. Each child is also watched through a pidfd
opened when its pid arrives: if the zygote dies, its replicas keep serving, and their ends are still
seen (the code is then lost with the zygote: ``exit_known`` is False).

Across ``odh restart`` (the daemon re-executes itself in place, see ``handover.py``) the zygote keeps
running: ``detach`` hands its pid, its control socket's descriptor (kept open across the exec) and any
half-read message to the next image, whose ``adopt`` picks up the conversation where it stopped; the
zygote notices nothing. Its children's exits, reported after the exec, reach the replicas that the new
image adopted (``adopt_child``).

A replica is forked only when its interpreter is the zygote's and its ``python -m`` module is one the
zygote may run, and when its container env sets nothing an interpreter or a native library reads at
start-up (``PYTHON*``, ``LD_*``, ``MALLOC_*``, ``OMP_*``, ``MKL_*``, ``OPENBLAS_*``, ``*_NUM_THREADS``):
the zygote read those once already. Set ``ODH_FORK_SERVER=0`` to spawn every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serving.platform.local.children import AdoptedChild, pid_alive
from serving.platform.local.pods import replica_environment

log = logging.getLogger(__name__)

FORK_SERVER_ENV = "ODH_FORK_SERVER"
MODEL_SERVER = "serving.runtimes.server"
# What the model server imports before and while it loads a scikit-learn model (the estimator modules
# are what unpickling a model imports); the zygote skips any that fail to import.
DEFAULT_PRELOAD = (
    MODEL_SERVER, "serving.runtimes.sklearn_model", "serving.runtimes.mlflow_model",
    "uvicorn", "uvicorn.loops.uvloop", "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on",
    "joblib", "sklearn", "sklearn.exceptions", "sklearn.svm", "sklearn.linear_model", "sklearn.ensemble",
    "sklearn.tree", "sklearn.neighbors", "sklearn.pipeline", "sklearn.preprocessing",
)
DEFAULT_RUNNABLE = (MODEL_SERVER,)
# Container env names read when an interpreter or a native library starts, which a fork cannot honour.
_STARTUP_ENV = re.compile(r"PYTHON.*|LD_.*|MALLOC_.*|OMP_.*|MKL_.*|OPENBLAS_.*|.*_NUM_THREADS")
SPAWN_REPLY_TIMEOUT = 10.0
RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 30.0
STOP_GRACE = 5.0
# The exit code recorded for a replica whose zygote died before it: a pidfd says when, not how.
EXIT_UNKNOWN = 255
# Exits reported for children no replica has claimed yet (after a handover), kept for the claim.
EARLY_EXITS_KEPT = 1024


@dataclass(frozen=True)
class ZygoteHandover:
    """What the next daemon image needs to keep talking to a running zygote."""

    pid: int
    fd: int  # our end of the control socket, inheritable across the exec
    buffer: str  # bytes read but not yet a whole message (latin-1)
    ready: bool
    preloaded: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "fd": self.fd, "buffer": self.buffer, "ready": self.ready, "preloaded": list(self.preloaded)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZygoteHandover:
        return cls(int(data["pid"]), int(data["fd"]), str(data.get("buffer", "")), bool(data.get("ready")),
                   tuple(str(m) for m in data.get("preloaded") or ()))


class ReplicaProcess(Protocol):
    """What a replica needs of its process, forked or spawned (``asyncio.subprocess.Process`` fits)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class ForkedProcess:
    """A replica forked by the zygote, as the daemon sees it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.exit_known = True
        self._exited = asyncio.Event()
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # no pidfd (old kernel): polled instead
            self._pidfd = os.pidfd_open(pid)
        self._poll: asyncio.Task[None] | None = None

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def describe_exit(self) -> str:
        if self.exit_known:
            return f"process exited with code {self.returncode}"
        return "process exited (its exit code was lost with the fork server that started it)"

    def exited(self, code: int, known: bool = True) -> None:
        if self._exited.is_set():
            return
        self.returncode = code
        self.exit_known = known
        self._close_pidfd()
        self._exited.set()

    def orphaned(self) -> None:
        """The zygote is gone: learn of this process's end from the kernel instead."""
        if self._exited.is_set():
            return
        loop = asyncio.get_running_loop()
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self.exited, EXIT_UNKNOWN, False)
        else:
            self._poll = asyncio.create_task(self._poll_exit())

    async def _poll_exit(self) -> None:
        while pid_alive(self.pid):  # noqa: ASYNC110 - without a pidfd there is no event to wait on
            await asyncio.sleep(0.2)
        self.exited(EXIT_UNKNOWN, False)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class ForkServer:
    """Start with ``await start()`` (returns at once; the zygote imports in the background), stop with
    ``await stop()``; ``ready`` says whether ``spawn`` can fork now."""

    def __init__(self, log_path: Path, *, python: str = sys.executable, preload: Sequence[str] = DEFAULT_PRELOAD,
                 runnable: Sequence[str] = DEFAULT_RUNNABLE) -> None:
        self.log_path = log_path
        self.python = python
        self.preload = tuple(preload)
        self.runnable = tuple(runnable)
        self.starts = 0  # zygotes started, the first included
        self.preloaded: list[str] = []
        self.ready = False
        self._proc: ReplicaProcess | None = None
        self._sock: socket.socket | None = None  # our end of the control socket
        self._buffer = b""  # read from it, not yet a whole line
        self._send_lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._ready_event = asyncio.Event()
        self._pending: dict[int, asyncio.Future[ForkedProcess | None]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._adopted: ZygoteHandover | None = None
        self._detached = False

    @classmethod
    def from_env(cls, state_dir: Path, env: Mapping[str, str] = os.environ) -> ForkServer | None:
        """The daemon's fork server, logging to ``state_dir/forkserver.log``; None when ``ODH_FORK_SERVER``
        turns it off (``0``, ``false``, ``no``, ``off``)."""
        if env.get(FORK_SERVER_ENV, "1").strip().lower() in {"0", "false", "no", "off"}:
            return None
        return cls(state_dir / "forkserver.log")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name="fork server")

    async def adopt(self, handover: ZygoteHandover) -> None:
        """Instead of ``start``, in a re-executed daemon: take over the zygote the previous image ran (it
        restarts as usual if it dies)."""
        self._take_over(handover)  # at once: replicas adopted next look the zygote up by its pid
        self._adopted = handover
        await self.start()

    def detach(self) -> ZygoteHandover | None:
        """Hand the running zygote to the next image: its control socket's descriptor stays open across
        ``os.execv``. Call it with no spawn in flight and exec at once (nothing runs on this loop after);
        None when no zygote runs. ``reattach`` undoes it when the exec fails."""
        sock, proc = self._sock, self._proc
        if sock is None or proc is None or proc.returncode is not None:
            return None
        self._detached = True
        os.set_inheritable(sock.fileno(), True)
        return ZygoteHandover(proc.pid, sock.fileno(), self._buffer.decode("latin-1"), self.ready, tuple(self.preloaded))

    def reattach(self) -> None:
        self._detached = False
        if self._sock is not None:
            os.set_inheritable(self._sock.fileno(), False)

    def adopt_child(self, pid: int) -> ForkedProcess:
        """A replica this zygote forked for the previous image: its exit is reported to the returned process."""
        child = self._children[pid] = ForkedProcess(pid)
        if pid in self._early_exits:
            child.exited(self._early_exits.pop(pid))
            del self._children[pid]
        elif self._proc is None or self._proc.returncode is not None:
            del self._children[pid]
            child.orphaned()
        return child

    async def wait_ready(self, limit_s: float) -> bool:
        """For benchmarks and tests: wait until the zygote can fork (False after ``limit_s`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready_event.wait(), limit_s)
        return self.ready

    def can_fork(self, argv: Sequence[str], container_env: Mapping[str, str]) -> bool:
        return (self.ready and len(argv) >= 3 and argv[0] == self.python and argv[1] == "-m"
                and argv[2] in self.runnable and not any(_STARTUP_ENV.fullmatch(name) for name in container_env))

    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, log_path: Path) -> ForkedProcess | None:
        """Fork ``argv`` (``python -m MOD ARGS``) with exactly ``env``, in ``cwd``, stdout and stderr
        appended to ``log_path``; None when the caller should spawn it itself."""
        sock = self._sock
        if not self.ready or sock is None:
            return None
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[ForkedProcess | None] = loop.create_future()
        self._pending[request_id] = reply
        try:
            message = {"id": request_id, "argv": list(argv), "env": dict(env), "cwd": cwd, "log": str(log_path)}
            async with self._send_lock:  # one whole line at a time
                await loop.sock_sendall(sock, json.dumps(message).encode() + b"\n")
            return await asyncio.wait_for(reply, SPAWN_REPLY_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.warning("fork server did not answer (%s); restarting it, and spawning meanwhile", type(exc).__name__)
            self._kill()
            return None
        finally:
            self._pending.pop(request_id, None)

    async def stop(self) -> None:
        """Stop the zygote (its replicas are the daemon's to stop, before this)."""
        self._stopping = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)  # the zygote exits when it reads the end of its control socket
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                self._kill()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor

    # -- the zygote's life ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_START
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run_one()
            except Exception:  # a broken zygote means plain spawns, never a broken daemon
                log.exception("fork server failed")
            finally:
                if not self._detached:
                    self._lost()
            if self._stopping:
                return
            if time.monotonic() - started > RESTART_BACKOFF_MAX:
                backoff = RESTART_BACKOFF_START
            log.warning("fork server exited; replicas start as plain processes until it is back (in %.0f s)", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    async def _run_one(self) -> None:
        adopted, self._adopted = self._adopted, None
        if adopted is None:
            await self._start_zygote()
        sock, proc = self._sock, self._proc
        assert sock is not None and proc is not None
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._read_lines()  # what the previous image had read of a message
        while data := await loop.sock_recv(sock, 65536):
            self._buffer += data
            self._read_lines()
        await proc.wait()

    async def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("ab") as log_file:
                self._proc = await asyncio.create_subprocess_exec(
                    self.python, "-m", "serving.platform.local.zygote", "--fd", str(theirs.fileno()),
                    "--preload", ",".join(self.preload), "--runnable", ",".join(self.runnable),
                    pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT, env=replica_environment(os.environ), start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.starts += 1
        self._sock, self._buffer = ours, b""

    def _take_over(self, handover: ZygoteHandover) -> None:
        child = AdoptedChild(handover.pid)
        child.watch()
        self._proc = child
        self._sock = socket.socket(fileno=handover.fd)
        os.set_inheritable(handover.fd, False)
        self._buffer = handover.buffer.encode("latin-1")
        self.preloaded = list(handover.preloaded)
        self.ready = handover.ready
        if self.ready:
            self._ready_event.set()
        log.info("fork server %d adopted from the previous daemon image", handover.pid)

    def _read_lines(self) -> None:
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._on_message(json.loads(line))

    def _on_message(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.preloaded = list(message.get("preloaded") or [])
            for module, why in (message.get("failed") or {}).items():
                log.info("fork server: %s not preloaded (%s)", module, why)
            self.ready = bool(message["ready"])
            if self.ready:
                log.info("fork server ready in %ss (pid %s)", message.get("seconds"), self.pid)
                self._ready_event.set()
        elif "exit" in message:
            child = self._children.pop(int(message["pid"]), None)
            if child is not None:
                child.exited(int(message["exit"]))
            else:  # a child of the previous daemon image that no replica has adopted yet
                self._early_exits[int(message["pid"])] = int(message["exit"])
                while len(self._early_exits) > EARLY_EXITS_KEPT:
                    del self._early_exits[next(iter(self._early_exits))]
        elif "id" in message:
            reply = self._pending.get(int(message["id"]))
            child = None
            if message.get("pid") is not None:
                child = self._children[int(message["pid"])] = ForkedProcess(int(message["pid"]))
            else:
                log.warning("fork server: %s", message.get("error"))
            if reply is not None and not reply.done():
                reply.set_result(child)

    def _lost(self) -> None:
        """The zygote is gone: plain spawns from now on, its children watched through the kernel."""
        self.ready = False
        self._ready_event.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""
        for reply in self._pending.values():
            if not reply.done():
                reply.set_result(None)
        for child in self._children.values():
            child.orphaned()
        self._children.clear()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

