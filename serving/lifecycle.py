"""A deployment's lifecycle policy, kept on its InferenceService as annotations (pure).

``configure`` writes these from the flow's parameters; ``operate`` reads the SLO, ``on-new-model-version``
and ``rollout`` read how a new version goes in. Kept on the object itself, the policy travels with
``odh get -o yaml`` and a Kubernetes apply, and a person can change it with ``odh apply`` alone.

    serving.odh.io/rollout-strategy     canary (default) | direct | manual
    serving.odh.io/canary-percent       1-99, the canary's share while it is watched (default 20)
    serving.odh.io/analysis-window      seconds the canary is watched (default 60)
    serving.odh.io/max-error-rate       0-1, the canary's 5xx share that rolls it back (default 0.05)
    serving.odh.io/max-latency-ratio    canary p95 / stable p95 that rolls it back (default 2.0)
    serving.odh.io/slo-error-rate       0-1, the 5xx share past which operate alerts (default 0.05)
    serving.odh.io/slo-p95-ms           the p95 latency past which operate alerts (default 1000)
    serving.odh.io/watch-alias          the registry alias whose moves start a rollout (default: any new version)

A value that does not parse is an error naming the annotation and the values it takes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from serving.errors import AdmissionError, FieldError

PREFIX = "serving.odh.io/"
ROLLOUT_STRATEGY = PREFIX + "rollout-strategy"
CANARY_PERCENT = PREFIX + "canary-percent"
ANALYSIS_WINDOW = PREFIX + "analysis-window"
MAX_ERROR_RATE = PREFIX + "max-error-rate"
MAX_LATENCY_RATIO = PREFIX + "max-latency-ratio"
SLO_ERROR_RATE = PREFIX + "slo-error-rate"
SLO_P95_MS = PREFIX + "slo-p95-ms"
WATCH_ALIAS = PREFIX + "watch-alias"

Strategy = Literal["canary", "direct", "manual"]
STRATEGIES: tuple[Strategy, ...] = ("canary", "direct", "manual")


@dataclass(frozen=True)
class LifecyclePolicy:
    """How new versions go in and what the deployment promises; defaults where an annotation is absent."""

    rollout_strategy: Strategy = "canary"
    canary_percent: int = 20
    analysis_seconds: float = 60.0
    max_error_rate: float = 0.05
    max_latency_ratio: float = 2.0
    slo_error_rate: float = 0.05
    slo_p95_ms: float = 1000.0
    watch_alias: str | None = None

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None) -> LifecyclePolicy:
        """The policy the annotations say; raises AdmissionError naming every annotation that is wrong."""
        found = annotations or {}
        values: dict[str, Any] = {}
        errors: list[FieldError] = []
        for name, (attribute, parse, expected) in _PARSERS.items():
            if name not in found:
                continue
            try:
                values[attribute] = parse(found[name])
            except ValueError:
                errors.append(FieldError(f"metadata.annotations[{name}]",
                                         f"{found[name]!r} is not {expected}"))
        if errors:
            raise AdmissionError(errors)
        return cls(**values)

    def annotations(self) -> dict[str, str]:
        """Only the values that differ from the defaults, as annotations (what ``configure`` writes)."""
        defaults = LifecyclePolicy()
        out: dict[str, str] = {}
        for name, (attribute, _, _) in _PARSERS.items():
            value = getattr(self, attribute)
            if value != getattr(defaults, attribute) and value is not None:
                out[name] = _format(value)
        return out


def _format(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _strategy(text: str) -> Strategy:
    for strategy in STRATEGIES:
        if text == strategy:
            return strategy
    raise ValueError(text)


def _percent(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 99:
        raise ValueError(text)
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def _alias(text: str) -> str:
    if not text.strip():
        raise ValueError(text)
    return text.strip()


_PARSERS = {
    ROLLOUT_STRATEGY: ("rollout_strategy", _strategy, "one of " + ", ".join(STRATEGIES)),
    CANARY_PERCENT: ("canary_percent", _percent, "a whole percent from 1 to 99"),
    ANALYSIS_WINDOW: ("analysis_seconds", _positive, "a number of seconds above 0"),
    MAX_ERROR_RATE: ("max_error_rate", _share, "a share from 0 to 1"),
    MAX_LATENCY_RATIO: ("max_latency_ratio", _positive, "a ratio above 0"),
    SLO_ERROR_RATE: ("slo_error_rate", _share, "a share from 0 to 1"),
    SLO_P95_MS: ("slo_p95_ms", _positive, "milliseconds above 0"),
    WATCH_ALIAS: ("watch_alias", _alias, "an alias name"),
}
assert {a for a, _, _ in _PARSERS.values()} == {f.name for f in fields(LifecyclePolicy)}
