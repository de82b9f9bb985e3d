"""A deployment's SLO (its LifecyclePolicy's ``slo_error_rate`` and ``slo_p95_ms``) against its window (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.errors import AdmissionError
from serving.lifecycle import LifecyclePolicy
from serving.operate.window import TrafficFigures


@dataclass(frozen=True)
class SloState:
    state: str  # "ok" | "breached" | "no-traffic" | "invalid"
    reasons: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        return self.state == "breached"

    def describe(self) -> str:
        return f"{self.state} ({'; '.join(self.reasons)})" if self.reasons else self.state


def policy_of(annotations: dict[str, str] | None) -> tuple[LifecyclePolicy | None, str]:
    """The deployment's policy, or None and why (an annotation that does not parse is reported, not fatal)."""
    try:
        return LifecyclePolicy.from_annotations(annotations), ""
    except AdmissionError as exc:
        return None, "; ".join(str(e) for e in exc.errors)


def evaluate_slo(policy: LifecyclePolicy, figures: TrafficFigures) -> SloState:
    """``breached`` naming each promise broken (the error rate past ``slo_error_rate``, p95 past ``slo_p95_ms``);
    ``no-traffic`` when no request came in the window: nothing to judge."""
    if figures.requests <= 0:
        return SloState("no-traffic")
    reasons = []
    if figures.error_rate > policy.slo_error_rate:
        reasons.append(f"error rate {figures.error_rate:.1%} > {policy.slo_error_rate:.1%}")
    if figures.p95_ms is not None and figures.p95_ms > policy.slo_p95_ms:
        reasons.append(f"p95 {figures.p95_ms:.0f} ms > {policy.slo_p95_ms:.0f} ms")
    return SloState("breached", tuple(reasons)) if reasons else SloState("ok")
