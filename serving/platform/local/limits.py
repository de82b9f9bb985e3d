"""The embedded platform's resource limits: what one client or one manifest may ask of this machine.

Each limit has a default and an environment variable that overrides it (``odh up`` passes its flags
through these). The daemon reads them once at start; admission refuses objects beyond them, naming the
field; the gateway answers 413 / 431 / 408 for requests beyond them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

import psutil

T = TypeVar("T", int, float)

# A replica of the built-in model servers takes ~150-250 MB resident; count 512 MB so that a machine
# at its replica limit still has memory for the models themselves.
_MEMORY_PER_REPLICA = 512 << 20
# Replicas per core: model servers idle most of the time, but 500 of them on 2 cores starved the gateway.
_REPLICAS_PER_CORE = 8


def default_max_replicas() -> int:
    """From the machine: the smaller of 8 per core and one per 512 MB of memory, at least 2."""
    by_cores = _REPLICAS_PER_CORE * (os.cpu_count() or 1)
    by_memory = psutil.virtual_memory().total // _MEMORY_PER_REPLICA
    return max(2, min(by_cores, by_memory))


def env_number(name: str, default: T, kind: type[T]) -> T:
    """``$name`` as a positive ``kind`` (int or float), or ``default`` when unset or empty; a bad value
    raises ValueError naming the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise ValueError(f"{name}={raw!r}: expected {what}") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: must be positive")
    return value


MAX_REPLICAS_ENV = "ODH_MAX_REPLICAS"
MAX_REQUEST_BODY_ENV = "ODH_MAX_REQUEST_BODY_BYTES"
MAX_REQUEST_HEAD_ENV = "ODH_MAX_REQUEST_HEAD_BYTES"
REQUEST_HEAD_TIMEOUT_ENV = "ODH_REQUEST_HEAD_TIMEOUT_S"
REQUEST_BODY_TIMEOUT_ENV = "ODH_REQUEST_BODY_TIMEOUT_S"
ACTIVATOR_QUEUE_ENV = "ODH_ACTIVATOR_QUEUE"
ACTIVATOR_WAIT_ENV = "ODH_ACTIVATOR_WAIT_S"


@dataclass(frozen=True)
class PlatformLimits:
    # Replicas one workload may ask for (minReplicas, maxReplicas, an LLMInferenceService's replicas).
    max_replicas: int = field(default_factory=default_max_replicas)
    # A request body larger than this is refused with 413 before any of it is forwarded.
    max_request_body: int = 100 << 20
    # The request line plus headers; larger is refused with 431 (nginx and uvicorn use 8-64 KB).
    max_request_head: int = 64 << 10
    # Seconds from a request's first byte until its head is complete (nginx's client_header_timeout).
    request_head_timeout: float = 30.0
    # Seconds a request body may go without a byte arriving (nginx's client_body_timeout).
    request_body_timeout: float = 60.0
    # Requests the gateway's activator holds per revision while it has no ready replica; more get 503.
    activator_queue: int = 1000
    # Seconds a held request waits for a ready replica before it gets 503 (Retry-After).
    activator_wait_s: float = 60.0

    @classmethod
    def from_env(cls) -> PlatformLimits:
        """The defaults, with each ``ODH_*`` variable that is set taking its place; a bad value raises
        ValueError naming the variable."""
        return cls(
            max_replicas=env_number(MAX_REPLICAS_ENV, default_max_replicas(), int),
            max_request_body=env_number(MAX_REQUEST_BODY_ENV, cls.max_request_body, int),
            max_request_head=env_number(MAX_REQUEST_HEAD_ENV, cls.max_request_head, int),
            request_head_timeout=env_number(REQUEST_HEAD_TIMEOUT_ENV, cls.request_head_timeout, float),
            request_body_timeout=env_number(REQUEST_BODY_TIMEOUT_ENV, cls.request_body_timeout, float),
            activator_queue=env_number(ACTIVATOR_QUEUE_ENV, cls.activator_queue, int),
            activator_wait_s=env_number(ACTIVATOR_WAIT_ENV, cls.activator_wait_s, float),
        )
