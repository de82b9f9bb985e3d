"""Platform-wide autoscaler defaults: Knative's ``config-autoscaler`` ConfigMap, same keys, defaults and
validation (``pkg/autoscaler/config``). Values are strings, as in the ConfigMap's ``data``.

``AutoscalerConfig.from_data({"stable-window": "30s"})`` parses and validates; a bad value raises
``AutoscalerConfigError`` naming the key and the allowed range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.autoscaling.durations import parse_duration
from serving.errors import ServingError

KPA_CLASS = "kpa.autoscaling.knative.dev"
HPA_CLASS = "hpa.autoscaling.knative.dev"

# Knative's bounds (pkg/apis/autoscaling/register.go).
TARGET_MIN = 0.01
WINDOW_MIN = 6.0
WINDOW_MAX = 3600.0
PANIC_WINDOW_PERCENTAGE_MIN = 1.0
PANIC_WINDOW_PERCENTAGE_MAX = 100.0
PANIC_THRESHOLD_PERCENTAGE_MIN = 110.0
PANIC_THRESHOLD_PERCENTAGE_MAX = 1000.0
# Metrics are aggregated in one-second buckets; the decider ticks every two seconds.
BUCKET_SIZE = 1.0
TICK_INTERVAL = 2.0


class AutoscalerConfigError(ServingError):
    """A ``config-autoscaler`` key has a value Knative would reject; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"autoscaler.{key}: {message}")


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """The parsed ConfigMap. Durations are seconds; ``container_concurrency_target_fraction`` is 0..1."""

    pod_autoscaler_class: str = KPA_CLASS
    enable_scale_to_zero: bool = True
    allow_zero_initial_scale: bool = False
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    container_concurrency_target_fraction: float = 0.7
    container_concurrency_target_default: float = 100.0
    target_utilization: float = 0.7  # for rps; not a ConfigMap key in Knative either
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    panic_window_percentage: float = 10.0
    activator_capacity: float = 100.0
    panic_threshold_percentage: float = 200.0
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0
    stable_window: float = 60.0
    scale_down_delay: float = 0.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> AutoscalerConfig:
        """Parse ConfigMap-style ``data`` over Knative's defaults; unknown keys are an error (a typo would
        otherwise be silently ignored)."""
        values: dict[str, Any] = {}
        for key, raw in (data or {}).items():
            spec = _KEYS.get(key)
            if spec is None:
                raise AutoscalerConfigError(key, f"unknown key; known keys: {', '.join(sorted(_KEYS))}")
            field, parse = spec
            try:
                values[field] = parse(_as_text(raw))
            except ValueError as exc:
                raise AutoscalerConfigError(key, f"cannot parse {raw!r}: {exc}") from None
        # for legacy reasons a fraction in (0, 1] is accepted as well as a percentage
        fraction = values.get("container_concurrency_target_fraction")
        if fraction is not None and fraction > 1.0:
            values["container_concurrency_target_fraction"] = fraction / 100.0
        config = dataclasses.replace(cls(), **values)
        config.validate()
        return config

    def validate(self) -> None:
        def fail(key: str, message: str) -> None:
            raise AutoscalerConfigError(key, message)

        if self.scale_to_zero_grace_period <= 0:
            fail("scale-to-zero-grace-period", f"must be positive, was {self.scale_to_zero_grace_period:g}s")
        if self.scale_down_delay < 0:
            fail("scale-down-delay", f"cannot be negative, was {self.scale_down_delay:g}s")
        if round(self.scale_down_delay) != self.scale_down_delay:
            fail("scale-down-delay", f"{self.scale_down_delay:g}s must be specified with at most second precision")
        if self.scale_to_zero_pod_retention_period < 0:
            fail("scale-to-zero-pod-retention-period", f"cannot be negative, was {self.scale_to_zero_pod_retention_period:g}s")
        if self.target_burst_capacity < 0 and self.target_burst_capacity != -1:
            fail("target-burst-capacity", f"must be either non-negative or -1 (for unlimited), was {self.target_burst_capacity:g}")
        if not 0 < self.container_concurrency_target_fraction <= 1:
            fail("container-concurrency-target-percentage",
                 f"{self.container_concurrency_target_fraction * 100:g} is outside of valid range of (0, 100]")
        target = self.container_concurrency_target_fraction * self.container_concurrency_target_default
        if target < TARGET_MIN:
            fail("container-concurrency-target-default",
                 f"with container-concurrency-target-percentage yields a target concurrency of {target:g}, "
                 f"can't be less than {TARGET_MIN}")
        if self.requests_per_second_target_default < TARGET_MIN:
            fail("requests-per-second-target-default",
                 f"must be at least {TARGET_MIN}, was {self.requests_per_second_target_default:g}")
        if self.activator_capacity < 1:
            fail("activator-capacity", f"{self.activator_capacity:g}, must be at least 1")
        if self.max_scale_up_rate <= 1.0:
            fail("max-scale-up-rate", f"{self.max_scale_up_rate:g}, must be greater than 1.0")
        if self.max_scale_down_rate <= 1.0:
            fail("max-scale-down-rate", f"{self.max_scale_down_rate:g}, must be greater than 1.0")
        if not WINDOW_MIN <= self.stable_window <= WINDOW_MAX:
            fail("stable-window", f"{self.stable_window:g}s, must be in [{WINDOW_MIN:g}s; {WINDOW_MAX:g}s] range")
        if round(self.stable_window) != self.stable_window:
            fail("stable-window", f"{self.stable_window:g}s must be specified with at most second precision")
        if not PANIC_WINDOW_PERCENTAGE_MIN <= self.panic_window_percentage <= PANIC_WINDOW_PERCENTAGE_MAX:
            fail("panic-window-percentage", f"{self.panic_window_percentage:g}, must be in "
                 f"[{PANIC_WINDOW_PERCENTAGE_MIN:g}, {PANIC_WINDOW_PERCENTAGE_MAX:g}] interval")
        if not PANIC_THRESHOLD_PERCENTAGE_MIN <= self.panic_threshold_percentage <= PANIC_THRESHOLD_PERCENTAGE_MAX:
            # Knative checks this bound only on the annotation; a ConfigMap value outside it misbehaves the same way
            fail("panic-threshold-percentage", f"{self.panic_threshold_percentage:g}, must be in "
                 f"[{PANIC_THRESHOLD_PERCENTAGE_MIN:g}, {PANIC_THRESHOLD_PERCENTAGE_MAX:g}] interval")
        if self.initial_scale < 0 or (self.initial_scale == 0 and not self.allow_zero_initial_scale):
            fail("initial-scale", f"{self.initial_scale}, must be at least 0 "
                 "(or at least 1 when allow-zero-initial-scale is false)")
        if self.min_scale < 0:
            fail("min-scale", f"{self.min_scale}, must be at least 0")
        if self.max_scale_limit < 0:
            fail("max-scale-limit", f"{self.max_scale_limit}, must be at least 0")
        lowest_max = 1 if self.max_scale_limit > 0 else 0  # a default max-scale is required once a limit is set
        if self.max_scale < lowest_max or (self.max_scale_limit > 0 and self.max_scale > self.max_scale_limit):
            fail("max-scale", f"{self.max_scale}, must be in [{lowest_max}, max-scale-limit({self.max_scale_limit})] range")
        if self.max_scale > 0 and self.min_scale > self.max_scale:
            fail("min-scale", f"min-scale ({self.min_scale}) must be less than max-scale ({self.max_scale})")
        if self.pod_autoscaler_class not in (KPA_CLASS, HPA_CLASS):
            fail("pod-autoscaler-class", f"{self.pod_autoscaler_class!r}, must be {KPA_CLASS} or {HPA_CLASS}")

    def to_data(self) -> dict[str, str]:
        """The ConfigMap ``data`` that parses back to this config (durations in seconds)."""
        data: dict[str, str] = {}
        for key, (field, parse) in _KEYS.items():
            value = getattr(self, field)
            if parse is _duration:
                data[key] = f"{value:g}s"
            elif parse is _bool:
                data[key] = "true" if value else "false"
            elif key == "container-concurrency-target-percentage":
                data[key] = f"{value * 100:g}"
            else:
                data[key] = f"{value:g}" if isinstance(value, float) else str(value)
        return data


def _as_text(raw: Any) -> str:
    # YAML turns `true` and `60` into bool and int; the ConfigMap's data are strings, so accept both
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw).strip()


def _bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError("expected true or false")


def _int32(text: str) -> int:
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise ValueError("out of the 32-bit integer range")
    return value


def _duration(text: str) -> float:
    return parse_duration(text)


_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "pod-autoscaler-class": ("pod_autoscaler_class", str),
    "enable-scale-to-zero": ("enable_scale_to_zero", _bool),
    "allow-zero-initial-scale": ("allow_zero_initial_scale", _bool),
    "max-scale-up-rate": ("max_scale_up_rate", float),
    "max-scale-down-rate": ("max_scale_down_rate", float),
    "container-concurrency-target-percentage": ("container_concurrency_target_fraction", float),
    "container-concurrency-target-default": ("container_concurrency_target_default", float),
    "requests-per-second-target-default": ("requests_per_second_target_default", float),
    "target-burst-capacity": ("target_burst_capacity", float),
    "panic-window-percentage": ("panic_window_percentage", float),
    "activator-capacity": ("activator_capacity", float),
    "panic-threshold-percentage": ("panic_threshold_percentage", float),
    "initial-scale": ("initial_scale", _int32),
    "min-scale": ("min_scale", _int32),
    "max-scale": ("max_scale", _int32),
    "max-scale-limit": ("max_scale_limit", _int32),
    "stable-window": ("stable_window", _duration),
    "scale-down-delay": ("scale_down_delay", _duration),
    "scale-to-zero-grace-period": ("scale_to_zero_grace_period", _duration),
    "scale-to-zero-pod-retention-period": ("scale_to_zero_pod_retention_period", _duration),
}

CONFIG_KEYS: tuple[str, ...] = tuple(_KEYS)
