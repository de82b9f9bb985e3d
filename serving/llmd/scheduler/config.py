"""YAML configuration: which filters, scorers (with weights) and picker each profile runs, plus flow
control, P/D and session-affinity settings. Every error names the bad key as a dotted path.

A plugin entry is either its type name (``- healthy``) or a mapping with ``type``, an optional
``weight`` (scorers only) and the plugin's own parameters, each checked against the plugin's schema.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import filters as F
from . import scorers as S
from .flow_control import FlowControlConfig
from .picker import MaxScorePicker
from .types import Priority, SchedulerConfigError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- plugin parameter schemas ------------------------------------------------------------------------


class _NoParams(_Strict):
    pass


class RoleParams(_Strict):
    roles: list[Literal["both", "prefill", "decode"]] = Field(default=["decode", "both"], min_length=1)


class LowQueueParams(_Strict):
    threshold: int = Field(default=128, ge=0)


class CapacityFilterParams(_Strict):
    max_kv_usage: float = Field(default=1.0, gt=0.0, le=1.0)
    max_waiting: int | None = Field(default=None, ge=1)


class CapacityAwareParams(_Strict):
    kv_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    fill: float = Field(default=0.9, gt=0.0, le=2.0)
    # Weight of evicting live blocks against computing new ones; above 1 a placement that thrashes
    # scores below 0, so load scorers alone cannot pull a request off its (full) prefix holder.
    overflow_weight: float = Field(default=1.0, ge=1.0, le=4.0)


class MaxScoreParams(_Strict):
    tolerance: float = Field(default=1e-9, ge=0.0)


@dataclass(frozen=True)
class BuildContext:
    """Shared state plugins may need: the pod block tracker and the seeded random source."""

    tracker: S.PodBlockTracker
    rng: random.Random


Factory = Callable[[Any, BuildContext], Any]

FILTERS: dict[str, tuple[type[BaseModel], Factory]] = {
    "healthy": (_NoParams, lambda p, c: F.HealthyFilter()),
    "role": (RoleParams, lambda p, c: F.RoleFilter(p.roles)),
    "low-queue": (LowQueueParams, lambda p, c: F.LowQueueFilter(p.threshold)),
    "capacity": (CapacityFilterParams, lambda p, c: F.CapacityFilter(p.max_kv_usage, p.max_waiting)),
}

SCORERS: dict[str, tuple[type[BaseModel], Factory]] = {
    "precise-prefix": (_NoParams, lambda p, c: S.PrecisePrefixScorer()),
    "approx-prefix": (_NoParams, lambda p, c: S.ApproximatePrefixScorer(c.tracker)),
    "capacity-aware-prefix": (
        CapacityAwareParams,
        lambda p, c: S.CapacityAwarePrefixScorer(c.tracker, p.kv_threshold, p.fill, p.overflow_weight),
    ),
    "queue": (_NoParams, lambda p, c: S.QueueScorer()),
    "kv-utilization": (_NoParams, lambda p, c: S.KVUtilizationScorer()),
    "load": (_NoParams, lambda p, c: S.LoadScorer()),
}

PICKERS: dict[str, tuple[type[BaseModel], Factory]] = {
    "max-score": (MaxScoreParams, lambda p, c: MaxScorePicker(c.rng, p.tolerance)),
}


# -- the document ------------------------------------------------------------------------------------


class PluginSpec(BaseModel):
    """``type`` plus free parameters; the parameters are checked against the plugin's own schema."""

    model_config = ConfigDict(extra="allow")
    type: str
    weight: float | None = Field(default=None, ge=0.0)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _plugin_entry(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class ProfileConfig(_Strict):
    filters: list[PluginSpec] = Field(default_factory=list)
    scorers: list[PluginSpec] = Field(default_factory=list)
    picker: PluginSpec = Field(default_factory=lambda: PluginSpec(type="max-score"))

    @field_validator("filters", "scorers", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return [_plugin_entry(v) for v in value] if isinstance(value, list) else value

    @field_validator("picker", mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        return _plugin_entry(value)


class PDConfig(_Strict):
    enabled: bool = False
    # Uncached prompt tokens on the chosen decode pod above which prefill runs on a prefill pod.
    threshold_tokens: int = Field(default=1024, ge=0)
    profile: str = "prefill"


class SessionAffinityConfig(_Strict):
    enabled: bool = False
    # A session leaves its pod once the pod is this busy (affinity until saturated, like prefixes).
    kv_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    max_waiting: int = Field(default=16, ge=0)
    max_sessions: int = Field(default=100_000, ge=1)


class SaturationConfig(_Strict):
    max_waiting: int = Field(default=16, ge=1)
    kv_threshold: float = Field(default=0.95, gt=0.0, le=1.0)


class FlowControlSettings(_Strict):
    max_queue: int = Field(default=1024, ge=0)
    default_queue_timeout_s: float = Field(default=30.0, gt=0.0)
    sheddable: list[Literal["interactive", "streaming", "batch"]] = Field(default=["batch"])
    tenant_quotas: dict[str, int] = Field(default_factory=dict)
    default_tenant_quota: int | None = Field(default=None, ge=1)
    saturation: SaturationConfig = Field(default_factory=SaturationConfig)

    def build(self) -> FlowControlConfig:
        return FlowControlConfig(
            max_queue=self.max_queue,
            default_queue_timeout_s=self.default_queue_timeout_s,
            sheddable=frozenset(Priority.parse(s) for s in self.sheddable),
            tenant_quotas=dict(self.tenant_quotas),
            default_tenant_quota=self.default_tenant_quota,
            saturation_max_waiting=self.saturation.max_waiting,
            saturation_kv_threshold=self.saturation.kv_threshold,
        )


class TrackerConfig(_Strict):
    # How far back a block counts as live in a pod's working set (seconds on the router's clock).
    window_s: float = Field(default=30.0, gt=0.0)
    # Used until a pod's num_blocks is known from vllm:cache_config_info.
    default_capacity_blocks: int = Field(default=4096, ge=1)


class SchedulerConfig(_Strict):
    profiles: dict[str, ProfileConfig] = Field(min_length=1)
    main_profile: str = "decode"
    pd: PDConfig = Field(default_factory=PDConfig)
    session_affinity: SessionAffinityConfig = Field(default_factory=SessionAffinityConfig)
    flow_control: FlowControlSettings = Field(default_factory=FlowControlSettings)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    seed: int | None = None


# -- loading -----------------------------------------------------------------------------------------


def _dotted(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _raise_from(exc: ValidationError, prefix: str = "") -> None:
    errors = exc.errors()
    first = errors[0]
    key = _dotted(tuple(first["loc"]), prefix)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    if len(errors) > 1:
        rest = "; ".join(f"{_dotted(tuple(e['loc']), prefix)}: {e['msg']}" for e in errors[1:])
        message = f"{message} (also: {rest})"
    raise SchedulerConfigError(key, message) from None


def parse_config(data: Mapping[str, Any] | None) -> SchedulerConfig:
    """Validate a config mapping (the YAML document); raise ``SchedulerConfigError`` naming the bad key."""
    if not isinstance(data, Mapping):
        raise SchedulerConfigError("", f"a scheduler config must be a mapping, got {type(data).__name__}")
    try:
        config = SchedulerConfig.model_validate(dict(data))
    except ValidationError as exc:
        _raise_from(exc)
    if config.main_profile not in config.profiles:
        raise SchedulerConfigError("main_profile", f"no profile named {config.main_profile!r}")
    if config.pd.enabled and config.pd.profile not in config.profiles:
        raise SchedulerConfigError("pd.profile", f"no profile named {config.pd.profile!r}")
    # Check every plugin's type and parameters now, so a typo fails at load, not at first request.
    for pname, profile in config.profiles.items():
        base = f"profiles.{pname}"
        for i, spec in enumerate(profile.filters):
            if spec.weight is not None:
                raise SchedulerConfigError(f"{base}.filters[{i}].weight", "filters take no weight")
            _params(FILTERS, "filter", spec, f"{base}.filters[{i}]")
        for i, spec in enumerate(profile.scorers):
            _params(SCORERS, "scorer", spec, f"{base}.scorers[{i}]")
        _params(PICKERS, "picker", profile.picker, f"{base}.picker")
    return config


def _params(registry: Mapping[str, tuple[type[BaseModel], Factory]], what: str, spec: PluginSpec, key: str) -> BaseModel:
    if spec.type not in registry:
        known = ", ".join(sorted(registry))
        raise SchedulerConfigError(f"{key}.type", f"unknown {what} {spec.type!r} (known: {known})")
    schema, _ = registry[spec.type]
    try:
        return schema.model_validate(spec.params)
    except ValidationError as exc:
        _raise_from(exc, key)
        raise  # unreachable; keeps type checkers calm


def build_plugin(registry: Mapping[str, tuple[type[BaseModel], Factory]], what: str, spec: PluginSpec, key: str, ctx: BuildContext) -> Any:
    params = _params(registry, what, spec, key)
    return registry[spec.type][1](params, ctx)


def load_config(source: str | Path | Mapping[str, Any] | None = None) -> SchedulerConfig:
    """Load a config from a mapping, a YAML file path, or the shipped ``default.yaml`` when None."""
    if source is None:
        source = DEFAULT_CONFIG_PATH
    if isinstance(source, Mapping):
        return parse_config(source)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchedulerConfigError("", f"cannot read scheduler config {path}: {exc}") from None
    return loads_config(text, origin=str(path))


def loads_config(text: str, origin: str = "<string>") -> SchedulerConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchedulerConfigError("", f"{origin} is not valid YAML: {exc}") from None
    return parse_config(data)
