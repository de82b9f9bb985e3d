"""A bounded loopback load driver for the tests that must show "no request fails".

``drive`` runs ``clients`` concurrent keep-alive clients against one URL until ``stop`` is set, a total
is reached or ``duration`` has passed, and records every answer: status code, which revision or version
answered (a response header or a JSON field the caller names) and the latency. A transport error is an
answer too (status 0, with its text), so a dropped connection is counted, never swallowed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    status: int
    latency: float
    answered_by: str | None
    error: str | None = None


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def by(self) -> Counter[str | None]:
        return Counter(a.answered_by for a in self.answers if a.status == 200)

    def share(self, who: str) -> float:
        ok = [a for a in self.answers if a.status == 200]
        return sum(a.answered_by == who for a in ok) / len(ok) if ok else 0.0

    def describe_failures(self, limit: int = 5) -> str:
        failures = self.failures
        sample = "; ".join(f"{a.status} {a.error or ''}".strip() for a in failures[:limit])
        return f"{len(failures)} of {len(self.answers)} failed: {sample}"


Identify = Callable[[httpx.Response], str | None]


def header(name: str) -> Identify:
    return lambda response: response.headers.get(name)


async def drive(url: str, body: Any, *, clients: int = 8, total: int | None = None, duration: float | None = None,
                stop: asyncio.Event | None = None, identify: Identify | None = None, request_timeout: float = 60.0,
                headers: dict[str, str] | None = None, into: LoadResult | None = None) -> LoadResult:
    """Send POSTs of ``body`` (JSON) from ``clients`` concurrent clients; see the module docstring. Answers
    are appended to ``into`` as they come (a test can watch them) and it is returned."""
    if total is None and duration is None and stop is None:
        raise ValueError("drive needs a bound: total, duration or stop")
    result = into if into is not None else LoadResult()
    deadline = time.monotonic() + duration if duration is not None else None
    sent = 0

    def more() -> bool:
        nonlocal sent
        if stop is not None and stop.is_set():
            return False
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if total is not None and sent >= total:
            return False
        sent += 1
        return True

    async def client() -> None:
        async with httpx.AsyncClient(timeout=request_timeout, headers=headers) as http:
            while more():
                started = time.monotonic()
                try:
                    response = await http.post(url, json=body)
                except httpx.HTTPError as exc:
                    result.answers.append(Answer(0, time.monotonic() - started, None, f"{type(exc).__name__}: {exc}"))
                    continue
                who = identify(response) if identify else None
                error = None if response.status_code == 200 else response.text[:200]
                result.answers.append(Answer(response.status_code, time.monotonic() - started, who, error))

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


@contextmanager
def load_in_background(url: str, body: Any, *, clients: int = 3, identify: Identify | None = None) -> Iterator[LoadResult]:
    """``drive`` from a thread of its own for the duration of the block (until it exits); the answers so far are
    in the yielded LoadResult, all of them once the block has ended."""
    result = LoadResult()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    run = loop.create_task(drive(url, body, clients=clients, stop=stop, identify=identify, into=result))
    thread = threading.Thread(target=loop.run_until_complete, args=(run,), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=120)
        loop.close()
