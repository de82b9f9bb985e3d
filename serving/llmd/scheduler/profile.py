"""Profiles (filters -> weighted scorers -> picker) and the ``Scheduler`` that composes them with flow
control, P/D disaggregation and session affinity.

``Scheduler.schedule`` is synchronous, pure apart from its own bookkeeping (the block tracker and the
session table), and takes milliseconds; the router calls it after flow control admits a request.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import FILTERS, PICKERS, SCORERS, BuildContext, SchedulerConfig, build_plugin, load_config
from .filters import Filter
from .flow_control import FlowController
from .picker import Picker
from .scorers import PodBlockTracker, Scorer, matched_blocks
from .types import Decision, NoCapacity, NoPods, PodState, SchedRequest


class SchedulerProfile:
    """One pass of filters, weighted scorers and a picker over a set of pods."""

    def __init__(self, name: str, filters: Sequence[Filter], scorers: Sequence[tuple[Scorer, float]], picker: Picker) -> None:
        self.name = name
        self.filters = list(filters)
        self.scorers = list(scorers)
        self.picker = picker

    def candidates(self, request: SchedRequest, pods: Sequence[PodState]) -> list[PodState]:
        """Apply the filters in order; raise NoPods/NoCapacity naming the filter that left none."""
        current = list(pods)
        if not current:
            raise NoPods(f"profile {self.name!r}: no pods to schedule {request.model or 'the request'} on")
        for flt in self.filters:
            before = len(current)
            current = flt.filter(request, current)
            if not current:
                error = NoCapacity if flt.kind == "capacity" else NoPods
                raise error(f"profile {self.name!r}: filter {flt.name!r} removed all {before} candidate pod(s)")
        return current

    def score(self, request: SchedRequest, pods: Sequence[PodState]) -> dict[str, float]:
        candidates = pods if isinstance(pods, list) else list(pods)
        total = dict.fromkeys([p.name for p in candidates], 0.0)
        for scorer, weight in self.scorers:
            if weight == 0:
                continue
            for name, value in scorer.score(request, candidates).items():
                total[name] += weight * value
        return total

    def run(self, request: SchedRequest, pods: Sequence[PodState]) -> tuple[PodState, dict[str, float]]:
        candidates = self.candidates(request, pods)
        scores = self.score(request, candidates)
        chosen = self.picker.pick(scores)
        return next(p for p in candidates if p.name == chosen), scores


class Scheduler:
    """Flow control + the main profile + optional P/D and session affinity, built from a config."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or load_config()
        self.clock = clock
        self.rng = rng or random.Random(self.config.seed)
        self.tracker = PodBlockTracker(self.config.tracker.window_s, self.config.tracker.default_capacity_blocks)
        self.flow = FlowController(self.config.flow_control.build())
        ctx = BuildContext(self.tracker, self.rng)
        self.profiles: dict[str, SchedulerProfile] = {}
        for pname, spec in self.config.profiles.items():
            base = f"profiles.{pname}"
            self.profiles[pname] = SchedulerProfile(
                pname,
                [build_plugin(FILTERS, "filter", f, f"{base}.filters[{i}]", ctx) for i, f in enumerate(spec.filters)],
                [
                    (build_plugin(SCORERS, "scorer", s, f"{base}.scorers[{i}]", ctx), 1.0 if s.weight is None else s.weight)
                    for i, s in enumerate(spec.scorers)
                ],
                build_plugin(PICKERS, "picker", spec.picker, f"{base}.picker", ctx),
            )
        self.main = self.profiles[self.config.main_profile]
        self._sessions: OrderedDict[str, str] = OrderedDict()
        # Recording blocks costs a little per request; only pay for it when a scorer reads the tracker.
        self._track = any(getattr(s, "uses_tracker", False) for p in self.profiles.values() for s, _ in p.scorers)

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any] | None = None, **kwargs: Any) -> Scheduler:
        return cls(load_config(source), **kwargs)

    # -- the decision ---------------------------------------------------------------------------
    def schedule(self, request: SchedRequest, pods: Sequence[PodState], now: float | None = None) -> Decision:
        """Choose the pod (and for P/D the prefill pod); raise NoPods or NoCapacity with the reason."""
        now = self.clock() if now is None else now
        self.tracker.advance(now)
        candidates = self.main.candidates(request, pods)
        decision = self._sticky(request, candidates)
        if decision is None:
            scores = self.main.score(request, candidates)
            decision = Decision(pod=self.main.picker.pick(scores), scores=scores)
        decode = next(p for p in candidates if p.name == decision.pod)
        prefill = self._prefill_for(request, decode, pods)
        if prefill is not None:
            decision.prefill_pod = prefill.name
        self._remember(request, decode, prefill)
        return decision

    def record(self, request: SchedRequest, pod: PodState) -> None:
        """Note that ``request`` went to ``pod`` outside ``schedule`` (e.g. a retry the router chose)."""
        if self._track:
            self.tracker.record(pod, request.approx_prefix_key)

    def forget_pod(self, name: str) -> None:
        """A pod left or restarted: its cache is gone, and sessions on it must re-route."""
        self.tracker.forget(name)
        for session in [s for s, p in self._sessions.items() if p == name]:
            del self._sessions[session]

    # -- pieces ---------------------------------------------------------------------------------
    def _sticky(self, request: SchedRequest, candidates: list[PodState]) -> Decision | None:
        settings = self.config.session_affinity
        if not settings.enabled or not request.session_id:
            return None
        name = self._sessions.get(request.session_id)
        pod = next((p for p in candidates if p.name == name), None) if name else None
        if pod is None or pod.kv_usage >= settings.kv_threshold or pod.waiting > settings.max_waiting:
            return None  # gone, unhealthy (filtered out) or saturated: score normally
        return Decision(pod=pod.name, scores={pod.name: 1.0}, reason="session")

    def _prefill_for(self, request: SchedRequest, decode: PodState, pods: Sequence[PodState]) -> PodState | None:
        pd = self.config.pd
        if not pd.enabled:
            return None
        cached_tokens = matched_blocks(request, decode, self.tracker) * decode.block_size
        if request.token_count - cached_tokens <= pd.threshold_tokens:
            return None
        try:
            prefill, _ = self.profiles[pd.profile].run(request, pods)
        except (NoPods, NoCapacity):
            return None  # no prefill pod free: the decode pod prefills itself (aggregated)
        return None if prefill.name == decode.name else prefill

    def _remember(self, request: SchedRequest, decode: PodState, prefill: PodState | None) -> None:
        if self._track and request.approx_prefix_key:
            self.tracker.record(decode, request.approx_prefix_key)
            if prefill is not None:
                self.tracker.record(prefill, request.approx_prefix_key)
        settings = self.config.session_affinity
        if settings.enabled and request.session_id:
            self._sessions[request.session_id] = decode.name
            self._sessions.move_to_end(request.session_id)
            while len(self._sessions) > settings.max_sessions:
                self._sessions.popitem(last=False)
