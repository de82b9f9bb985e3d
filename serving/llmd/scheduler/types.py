"""Plain data the scheduler reads and returns: pods, requests, decisions, and its errors.

Everything here is data the router fills from its monitor and indexer; no plugin does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from serving.errors import ServingError

Role = Literal["both", "prefill", "decode"]
ROLES: tuple[str, ...] = ("both", "prefill", "decode")


class Priority(IntEnum):
    """Priority classes; a lower value is served first. Only ``BATCH`` is sheddable by default."""

    INTERACTIVE = 0
    STREAMING = 1
    BATCH = 2

    @classmethod
    def parse(cls, value: str | int | Priority | None, default: Priority | None = None) -> Priority:
        """Map a header value or an API key's tier ("interactive", "streaming", "batch") to a class."""
        if value is None or value == "":
            return default if default is not None else cls.INTERACTIVE
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            known = ", ".join(p.name.lower() for p in cls)
            raise ValueError(f"unknown priority class {value!r} (known: {known})") from None


@dataclass(slots=True)
class PodState:
    """One engine as the router sees it right now.

    ``running``/``waiting``/``kv_usage`` come from the engine's metrics (scraped, so slightly stale);
    ``in_flight`` is counted by the router itself, so it is exact and covers the scrape lag.
    ``num_blocks`` is the KV capacity in blocks (``vllm:cache_config_info``); ``cached_blocks`` is how
    many blocks the indexer currently holds for this pod.
    """

    name: str
    url: str = ""
    healthy: bool = True
    draining: bool = False
    role: Role = "both"
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    in_flight: int = 0
    block_size: int = 16
    num_blocks: int = 0
    cached_blocks: int = 0

    @property
    def load(self) -> int:
        return self.in_flight + self.running


@dataclass(eq=False, slots=True)
class SchedRequest:
    """What the scheduler needs to know about one request (identity-hashed, so it can be queued).

    ``prefix_scores`` maps pod name -> consecutive cached prefix blocks from the precise indexer (empty
    when KV events are off). ``approx_prefix_key`` is the request's chained block keys, used both by the
    approximate prefix scorer and to estimate each pod's working set. ``deadline`` is absolute, on the
    same clock as the ``now`` the caller passes.
    """

    model: str = ""
    token_count: int = 0
    prefix_scores: dict[str, int] = field(default_factory=dict)
    approx_prefix_key: list[int] = field(default_factory=list)
    priority: Priority = Priority.INTERACTIVE
    tenant: str = ""
    session_id: str | None = None
    deadline: float | None = None
    id: str = ""


@dataclass(slots=True)
class Decision:
    """Where to send a request: ``pod`` decodes (or serves it whole); ``prefill_pod`` is set for P/D.

    ``scores`` holds the final weighted score per candidate pod, for debugging and metrics.
    """

    pod: str
    prefill_pod: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = "scored"


class SchedulerError(ServingError):
    """Base of the scheduler's errors; ``reason`` is a short machine-readable code."""

    reason = "scheduler_error"


class NoPods(SchedulerError):
    """No pod can serve the request at all (none healthy, none with the right role): a 503."""

    reason = "no_pods"


class NoCapacity(SchedulerError):
    """Pods exist but every one is over a hard capacity limit: the router answers 429 or queues."""

    reason = "no_capacity"


class SchedulerConfigError(SchedulerError, ValueError):
    """A scheduler configuration is invalid; ``key`` is the dotted path of the bad key."""

    reason = "bad_config"

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)
