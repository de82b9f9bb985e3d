"""A per-pod circuit breaker: open after N consecutive failures, half-open after a cool-down.

Pure: the caller passes ``now`` (monotonic seconds). Closed lets everything through; open lets
nothing through until ``cooldown_s`` passed; half-open lets one probe through at a time, and its
outcome closes the breaker (success) or re-opens it (failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    threshold: int = 5
    cooldown_s: float = 5.0
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _probing: bool = field(default=False, repr=False)

    def allow(self, now: float) -> bool:
        """May a request go to this pod now? In half-open, claims the single probe slot."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now - self.opened_at < self.cooldown_s:
                return False
            self.state = HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def available(self, now: float) -> bool:
        """Like ``allow`` but without claiming anything (for filtering candidate pods)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now - self.opened_at >= self.cooldown_s
        return not self._probing

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self._probing = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self._probing = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = now

    def reset(self) -> None:
        self.success()
