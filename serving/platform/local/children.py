"""A child process known only by its pid: what a re-executed daemon has of the processes it started before.

``os.execv`` keeps the daemon's pid, so the replicas and the fork server it spawned are still its
children, but the new image has no ``asyncio.subprocess.Process`` for them. ``AdoptedChild`` watches one
through a pidfd (readable once the process exits) and reaps it with ``waitpid``, so its exit code still
reaches the replica that owns it. It is a ``ReplicaProcess`` (``pid``, ``returncode``, ``wait()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

# Without a pidfd (an old kernel) the child is polled this often.
POLL_SECONDS = 0.2


class AdoptedChild:
    """Start watching with ``watch()`` on the running loop; ``wait()`` returns the exit code (negative for a
    signal, as asyncio reports it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._pidfd: int | None = None
        self._poll: asyncio.Task[None] | None = None

    def watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):  # gone already (ESRCH), or no pidfd here
            self._pidfd = None
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._reap)
            self._reap()  # it may have exited before the pidfd was opened
        else:
            self._poll = asyncio.create_task(self._poll_exit())

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> bool:
        """Reap the child if it has exited; True once it has."""
        if self._exited.is_set():
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (or reaped elsewhere): the code is lost
            if pid_alive(self.pid):
                return False
            self._done(255)
            return True
        if pid == 0:
            return False
        self._done(os.waitstatus_to_exitcode(status))
        return True

    async def _poll_exit(self) -> None:
        while not self._reap():  # noqa: ASYNC110 - without a pidfd there is no event to wait on
            await asyncio.sleep(POLL_SECONDS)

    def _done(self, code: int) -> None:
        self.returncode = code
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists (a process of another user counts: kill 0 says so with EPERM)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
