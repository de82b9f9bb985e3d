"""The fork server's own process (the "zygote"): import a runtime's modules once, then fork replicas.

    python -m serving.platform.local.zygote --fd N --preload MOD,MOD --runnable MOD

A replica of the model server spends seconds importing numpy, scikit-learn, Starlette and uvicorn before
it loads a model of a few kilobytes. This process pays that once: it imports the ``--preload`` modules,
then waits on the control socket it inherited as fd ``N`` (one end of a socketpair: no path on disk, so
only the daemon can ask it for anything) and forks a replica per request. A forked child becomes what a
spawned ``python -m MOD ARGS`` would be: its own session (process group = pid, so the daemon's
kill-the-group logic and the pid records in ``orphans.py`` work unchanged), the replica's environment,
working directory, stdin from /dev/null and stdout/stderr appended to the replica log, no inherited
descriptor, default SIGCHLD; then it calls ``MOD.main(ARGS)`` and exits with what that returns.

The zygote reaps its children and reports each exit status (as asyncio reports it: negative for a
signal), so the daemon still learns how a replica ended. It has no thread of its own and no event loop:
a fork copies only the calling thread, so one that held a lock would leave the child deadlocked. (Native
libraries start threads of their own, e.g. OpenBLAS's pool; they register fork handlers for this.) When
the control socket closes (the daemon stopped or died) the zygote exits; its children live on, as the
daemon's own would, and the daemon (or the next one, from their pid records) stops them.

Messages are JSON lines. Zygote to daemon: ``{"ready": true, "preloaded": [...], "failed": {mod: why}}``
once, ``{"id": n, "pid": p}`` or ``{"id": n, "error": why}`` per request, ``{"pid": p, "exit": code}``
per child. Daemon to zygote: ``{"id": n, "argv": [python, "-m", MOD, ...], "env": {...}, "cwd": dir,
"log": path}``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

log = logging.getLogger("serving.platform.local.zygote")

# What a forked child exits with when it could not become the replica (log not writable, no such cwd):
# the code a shell uses for "found but could not run".
SETUP_FAILED = 126


class Zygote:
    def __init__(self, control: socket.socket, runnable: set[str]) -> None:
        self.control = control
        self.runnable = runnable
        self.children: set[int] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode() + b"\n")

    def serve(self) -> int:
        """Answer requests until the control socket closes; returns the exit code."""
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        # SIGCHLD interrupts select() through the wakeup socket; the Python handler itself does nothing.
        signal.set_wakeup_fd(self._wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self._selector.register(self.control, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                elif not self._read_requests():
                    return 0
            self._reap()

    def _read_requests(self) -> bool:
        data = self.control.recv(65536)
        if not data:
            return False
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._handle(json.loads(line))
        return True

    def _handle(self, request: dict[str, Any]) -> None:
        argv = request.get("argv") or []
        if len(argv) < 3 or argv[1] != "-m" or argv[2] not in self.runnable:
            self.send({"id": request.get("id"), "error": f"this fork server runs only `python -m` {sorted(self.runnable)}"})
            return
        sys.stdout.flush()
        sys.stderr.flush()  # or the child would write the zygote's buffered output again
        # The pid goes to the daemon only once the child leads its own session: the daemon records its
        # process group and may signal that group at once.
        in_session_r, in_session_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(in_session_r)
            os.close(in_session_w)
            self.send({"id": request["id"], "error": f"fork failed: {exc}"})
            return
        if pid == 0:
            os.close(in_session_r)
            self._become_replica(request, in_session_w)
        os.close(in_session_w)
        try:
            os.read(in_session_r, 1)  # a byte once setsid is done, or EOF if the child died first
        finally:
            os.close(in_session_r)
        self.children.add(pid)
        self.send({"id": request["id"], "pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def _become_replica(self, request: dict[str, Any], in_session: int) -> NoReturn:
        """In the forked child: take a session of its own (then say so on ``in_session``), shed the
        zygote, take the replica's files and environment, and run the module's ``main``. Never returns."""
        code = SETUP_FAILED
        running = False
        try:
            os.setsid()
            os.write(in_session, b".")
            os.close(in_session)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Close the zygote's sockets through their objects first, so that no object is left owning a
            # descriptor number the replica may open again (its finalizer would close the replica's file).
            self._selector.close()
            for sock in (self.control, self._wake_r, self._wake_w):
                sock.close()
            log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.closerange(3, _max_fd())
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            module = importlib.import_module(request["argv"][2])
            sys.argv = [getattr(module, "__file__", None) or request["argv"][2], *request["argv"][3:]]
            logging.getLogger().handlers.clear()  # the replica configures its own logging
            running = True
            code = _exit_code(module.main(sys.argv[1:]))
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:  # the child reports any failure in its log and its exit code
            traceback.print_exc()
            code = 1 if running else SETUP_FAILED
        finally:
            # What interpreter shutdown would do, minus unwinding the zygote's own frames.
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import ``modules``; returns those imported and, for the others, why not (a missing optional
    runtime is not an error: its replicas import it themselves)."""
    done: list[str] = []
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:  # reported to the daemon, which logs it
            failed[name] = f"{type(exc).__name__}: {exc}"
    return done, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.platform.local.zygote", description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the inherited control socket")
    parser.add_argument("--preload", default="", help="comma-separated modules to import before forking")
    parser.add_argument("--runnable", default="", help="comma-separated modules whose main() a child may run")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    started = time.perf_counter()
    done, failed = preload([m for m in args.preload.split(",") if m])
    if threading.active_count() > 1:  # a preloaded module started a thread: forking now could deadlock a child
        failed["(threads)"] = f"{threading.active_count() - 1} Python thread(s) started by the preloaded modules"
        control.sendall(json.dumps({"ready": False, "failed": failed}).encode() + b"\n")
        return 1
    zygote = Zygote(control, {m for m in args.runnable.split(",") if m})
    seconds = round(time.perf_counter() - started, 3)
    print(f"fork server {os.getpid()} ready: {len(done)} modules preloaded in {seconds} s", file=sys.stderr, flush=True)
    zygote.send({"ready": True, "preloaded": done, "failed": failed, "seconds": seconds})
    try:
        return zygote.serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the daemon went away mid-message


if __name__ == "__main__":
    sys.exit(main())
