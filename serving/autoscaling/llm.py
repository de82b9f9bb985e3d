"""A scaler for LLMInferenceService engines on what the LLM-D load monitor reads from vLLM's /metrics.

Two signals per engine: requests waiting in its queue (``vllm:num_requests_waiting``) and KV-cache use
(``vllm:kv_cache_usage_perc``, 0..1). The load ratio is the larger of waiting-per-engine over its target
and KV use over its target; desired = ceil(healthy engines x ratio), HPA-style (no change within the
tolerance), stabilized like the HPA's behavior (the highest proposal of the scale-down window, the lowest
of the scale-up window), within [min, max]. No scale-up while an engine is still starting (its load is
not in the numbers yet); with min 0, zero engines only after ``scale_to_zero_after`` seconds without a
running or waiting request, and one engine as soon as a request waits at zero (the router reports it).

Use: ``EngineScaler(min_engines, max_engines)``; every monitor scrape round (or every few seconds) call
``desired(now, current_engines, loads, queued_at_router)`` with one ``EngineLoad`` per healthy engine and
run the result; the router follows the pool (new engines join when healthy, removed ones are drained).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from serving.errors import AdmissionError, FieldError


@dataclass(frozen=True, slots=True)
class EngineThresholds:
    """When to add or remove engines. ``target_waiting``: queued requests per engine the pool should hold
    at most on average; ``target_kv_usage``: the KV-cache fraction to keep engines at; ``tolerance``: ratio
    band with no change; windows in seconds."""

    target_waiting: float = 2.0
    target_kv_usage: float = 0.75
    tolerance: float = 0.1
    scale_up_window: float = 0.0
    scale_down_window: float = 120.0
    scale_to_zero_after: float = 300.0

    def __post_init__(self) -> None:
        errors = []
        if self.target_waiting <= 0:
            errors.append(FieldError("target_waiting", f"must be positive (requests per engine), got {self.target_waiting}"))
        if not 0 < self.target_kv_usage <= 1:
            errors.append(FieldError("target_kv_usage", f"must be in (0, 1], got {self.target_kv_usage}"))
        if not 0 <= self.tolerance < 1:
            errors.append(FieldError("tolerance", f"must be in [0, 1), got {self.tolerance}"))
        for name in ("scale_up_window", "scale_down_window", "scale_to_zero_after"):
            if getattr(self, name) < 0:
                errors.append(FieldError(name, f"must be at least 0 seconds, got {getattr(self, name)}"))
        if errors:
            raise AdmissionError(errors, kind="EngineThresholds")


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One healthy engine, as ``PodState`` holds it: ``running`` and ``waiting`` requests, ``kv_usage`` 0..1."""

    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineDecision:
    desired: int
    reason: str
    load_ratio: float


class EngineScaler:
    def __init__(self, min_engines: int, max_engines: int, thresholds: EngineThresholds | None = None) -> None:
        if min_engines < 0 or max_engines < max(1, min_engines):
            raise AdmissionError(FieldError("spec.maxReplicas", f"must be >= minReplicas ({min_engines}) and >= 1, got {max_engines}"),
                                 kind="LLMInferenceService")
        self.min_engines = min_engines
        self.max_engines = max_engines
        self.thresholds = thresholds or EngineThresholds()
        self.recommendations: list[tuple[float, int]] = []
        self.last_busy: float | None = None

    def desired(self, now: float, current: int, loads: Sequence[EngineLoad], queued_at_router: int = 0) -> EngineDecision:
        limits = self.thresholds
        busy = queued_at_router > 0 or any(load.running > 0 or load.waiting > 0 for load in loads)
        if busy or self.last_busy is None:
            self.last_busy = now
        if current == 0 or not loads:
            if queued_at_router > 0 or busy:
                return self._decide(now, current, max(1, self.min_engines, current), "a request waits: starting an engine", 1.0)
            if current == 0:
                return EngineDecision(self.min_engines, "idle at zero", 0.0)
            return EngineDecision(self._clamp(current), "no engine reports load yet", 0.0)
        healthy = len(loads)
        waiting = sum(load.waiting for load in loads) / healthy
        kv = sum(load.kv_usage for load in loads) / healthy
        ratio = max(waiting / limits.target_waiting, kv / limits.target_kv_usage)
        if abs(1.0 - ratio) <= limits.tolerance:
            proposal, reason = current, "load within tolerance of the target"
        else:
            proposal = math.ceil(healthy * ratio)
            reason = f"waiting {waiting:.2f}/engine, KV cache {kv:.0%}"
        if proposal > current and current > healthy:
            proposal, reason = current, "an engine is still starting"
        return self._decide(now, current, proposal, reason, ratio)

    def _clamp(self, value: int) -> int:
        return min(max(value, self.min_engines), self.max_engines)

    def _decide(self, now: float, current: int, proposal: int, reason: str, ratio: float) -> EngineDecision:
        limits = self.thresholds
        up_cutoff, down_cutoff = now - limits.scale_up_window, now - limits.scale_down_window
        up = down = proposal
        for stamp, recommendation in self.recommendations:
            if stamp > up_cutoff:
                up = min(up, recommendation)
            if stamp > down_cutoff:
                down = max(down, recommendation)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > min(up_cutoff, down_cutoff)]
        self.recommendations.append((now, proposal))
        stabilized = min(max(current, up), down)
        if stabilized != proposal:
            reason = f"{reason}; stabilized at {stabilized}"
        desired = self._clamp(stabilized)
        if desired == 0 and self.last_busy is not None and now - self.last_busy < limits.scale_to_zero_after:
            desired = min(1, self.max_engines)  # keep one engine until idle long enough
            reason = f"{reason}; idle for less than {limits.scale_to_zero_after:g}s"
        return EngineDecision(desired, reason, ratio)
