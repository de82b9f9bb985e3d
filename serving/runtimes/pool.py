"""Where a replica does the heavy part of a request: a few predict threads behind a bounded admission.

The event loop only reads request bodies and writes answers. Decoding, the model and encoding run on
``workers`` threads, so liveness, readiness, metrics and metadata keep answering while a 90 MB request
is decoded or a slow model predicts (one such request used to freeze the loop until the liveness probe
killed the replica). numpy and scikit-learn release the GIL for much of their work, so a few threads
also overlap predictions. What holds the GIL still pauses the loop: orjson parsing a 90 MB JSON body
takes ~1-3 s in one call (measured on 2 busy cores: the longest probe wait fell from 20 s to 3.4 s);
the binary tensor extension's bodies are views, not parsed, and avoid it.

Admission is bounded twice, and both refusals are a 503 with ``Retry-After`` (``ServerBusy``):

- requests admitted at once (``workers`` running plus ``queue`` waiting for a thread, bodies being read
  included): a flood queues up to that many and is refused beyond it, instead of piling up coroutines;
- body bytes held by admitted requests (``max_body_bytes``): what a flood of large bodies costs in
  memory; a request reserves its bytes as they arrive, so a body is refused mid-read, not after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from serving.runtimes.errors import ServerBusy

T = TypeVar("T")


class FastPath:
    """Which requests may skip the thread hop: small ones, for a model whose small predictions have all
    been quick.

    A hop costs two thread wake-ups (~30-90 µs of CPU, milliseconds of latency on a busy machine):
    more than iris's whole prediction. A slow model on the event loop costs every other request its
    answer. So a model earns the fast path with ``proof`` quick predictions in a row (each under
    ``quick`` seconds of wall time, wherever it ran: a loop held 10 ms delays a probe by as much),
    loses it with one that is not, and loses it for good with one that took ``slow`` seconds or more
    (a model that can stall must not stall the loop again). A model's first predictions always run on
    the pool; the worst a model quick until now can do is block the loop once.
    """

    def __init__(
        self, small_body: int = 64 << 10, quick: float = 0.01, slow: float = 0.5, proof: int = 32
    ) -> None:
        self.small_body = small_body
        self.quick = quick
        self.slow = slow
        self.proof = proof
        self._streak: dict[str, int] = {}
        self._never: set[str] = set()

    def allows(self, model: str, body_size: int) -> bool:
        return body_size <= self.small_body and self._streak.get(model, 0) >= self.proof

    def record(self, model: str, body_size: int, seconds: float) -> None:
        """One prediction's duration; only small requests count (a large one is allowed to take long)."""
        if body_size > self.small_body or model in self._never:
            return
        if seconds >= self.slow:
            self._never.add(model)
            self._streak[model] = 0
        elif seconds >= self.quick:
            self._streak[model] = 0
        else:
            self._streak[model] = self._streak.get(model, 0) + 1


def default_predict_workers() -> int:
    """One thread per core, at most 4: enough to overlap numpy work without oversubscribing BLAS."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(slots=True)
class Ticket:
    """One admitted request: the body bytes it holds against the pool's budget."""

    body_bytes: int = 0


class PredictPool:
    """Threads for the blocking work of requests, and the admission that bounds what waits for them."""

    def __init__(self, workers: int, queue: int, max_body_bytes: int) -> None:
        if workers < 1 or queue < 0 or max_body_bytes < 1:
            raise ValueError(
                f"predict pool needs workers >= 1, queue >= 0, max_body_bytes >= 1; "
                f"got {workers}, {queue}, {max_body_bytes}"
            )
        self.workers = workers
        self.max_requests = workers + queue
        self.max_body_bytes = max_body_bytes
        self.requests = 0  # admitted now; only the event loop's thread changes these two
        self.body_bytes = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="predict")

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Admit one request for the block, or raise ``ServerBusy`` when ``workers + queue`` are admitted.

        Starlette does not cancel a handler whose client left, so a request holds its place until its
        work is done; a handler cancelled at shutdown frees its place while its thread may still run.
        """
        if self.requests >= self.max_requests:
            raise ServerBusy(
                f"server busy: {self.requests} requests are running or queued (--predict_workers {self.workers}, "
                f"--predict_queue {self.max_requests - self.workers}); retry shortly"
            )
        ticket = Ticket()
        self.requests += 1
        try:
            yield ticket
        finally:
            self.requests -= 1
            self.body_bytes -= ticket.body_bytes

    def reserve(self, ticket: Ticket, size: int) -> None:
        """Hold ``size`` more body bytes for ``ticket``, or raise ``ServerBusy`` when the budget is spent."""
        if self.body_bytes + size > self.max_body_bytes:
            raise ServerBusy(
                f"server busy: requests in progress hold {self.body_bytes} bytes of bodies "
                f"(limit {self.max_body_bytes}); retry shortly"
            )
        self.body_bytes += size
        ticket.body_bytes += size

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a predict thread; the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        """Drop queued work; running predictions finish on their own (a thread cannot be stopped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
