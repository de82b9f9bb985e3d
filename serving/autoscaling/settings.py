"""A revision's KPA settings: its ``autoscaling.knative.dev/*`` annotations over the platform defaults.

Validation is Knative's (``pkg/apis/autoscaling/annotation_validation.go``): every bad annotation is
reported at once as an ``AdmissionError`` whose fields name the annotation and the allowed range.
Resolution is Knative's too (``MakeDecider``, ``ResolveMetricTarget``, ``MakeMetric``, ``ScaleBounds``,
``GetInitialScale``). ``predictor_annotations`` maps a KServe predictor's ``minReplicas``, ``maxReplicas``,
``scaleTarget`` and ``scaleMetric`` onto the annotations as KServe's Knative reconciler does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from serving.autoscaling.config import (
    BUCKET_SIZE,
    HPA_CLASS,
    KPA_CLASS,
    PANIC_THRESHOLD_PERCENTAGE_MAX,
    PANIC_THRESHOLD_PERCENTAGE_MIN,
    PANIC_WINDOW_PERCENTAGE_MAX,
    PANIC_WINDOW_PERCENTAGE_MIN,
    TARGET_MIN,
    WINDOW_MAX,
    WINDOW_MIN,
    AutoscalerConfig,
)
from serving.autoscaling.durations import parse_duration
from serving.errors import AdmissionError, FieldError

GROUP = "autoscaling.knative.dev"
CLASS = f"{GROUP}/class"
METRIC = f"{GROUP}/metric"
TARGET = f"{GROUP}/target"
TARGET_UTILIZATION = f"{GROUP}/target-utilization-percentage"
TARGET_BURST_CAPACITY = f"{GROUP}/target-burst-capacity"
WINDOW = f"{GROUP}/window"
PANIC_WINDOW_PERCENTAGE = f"{GROUP}/panic-window-percentage"
PANIC_THRESHOLD_PERCENTAGE = f"{GROUP}/panic-threshold-percentage"
MIN_SCALE = f"{GROUP}/min-scale"
MAX_SCALE = f"{GROUP}/max-scale"
INITIAL_SCALE = f"{GROUP}/initial-scale"
ACTIVATION_SCALE = f"{GROUP}/activation-scale"
SCALE_DOWN_DELAY = f"{GROUP}/scale-down-delay"
RETENTION = f"{GROUP}/scale-to-zero-pod-retention-period"
AGGREGATION = f"{GROUP}/metric-aggregation-algorithm"

CONCURRENCY = "concurrency"
RPS = "rps"
LINEAR = "linear"
WEIGHTED_EXPONENTIAL = "weighted-exponential"

# Knative reads the camelCase spelling when the kebab-case one is absent (kmap.KeyPriority).
_ALIASES: dict[str, tuple[str, ...]] = {
    MIN_SCALE: (MIN_SCALE, f"{GROUP}/minScale"),
    MAX_SCALE: (MAX_SCALE, f"{GROUP}/maxScale"),
    INITIAL_SCALE: (INITIAL_SCALE, f"{GROUP}/initialScale"),
    PANIC_THRESHOLD_PERCENTAGE: (PANIC_THRESHOLD_PERCENTAGE, f"{GROUP}/panicThresholdPercentage"),
    PANIC_WINDOW_PERCENTAGE: (PANIC_WINDOW_PERCENTAGE, f"{GROUP}/panicWindowPercentage"),
    SCALE_DOWN_DELAY: (SCALE_DOWN_DELAY, f"{GROUP}/scaleDownDelay"),
    RETENTION: (RETENTION, f"{GROUP}/scaleToZeroPodRetentionPeriod"),
    TARGET_BURST_CAPACITY: (TARGET_BURST_CAPACITY, f"{GROUP}/targetBurstCapacity"),
    TARGET_UTILIZATION: (TARGET_UTILIZATION, f"{GROUP}/targetUtilizationPercentage"),
    AGGREGATION: (AGGREGATION, f"{GROUP}/metricAggregationAlgorithm"),
}

_INT32_MAX = 2**31 - 1


def _get(annotations: Mapping[str, str], key: str) -> tuple[str, str] | None:
    for name in _ALIASES.get(key, (key,)):
        if name in annotations:
            return name, str(annotations[name])
    return None


def _field(key: str) -> str:
    return f"metadata.annotations.{key}"


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _int(text: str) -> int | None:
    try:
        return int(text.strip(), 10)
    except ValueError:
        return None


def validate_annotations(annotations: Mapping[str, str], config: AutoscalerConfig) -> list[FieldError]:
    """Every autoscaling annotation Knative would reject, with the allowed range (empty when all are fine)."""
    errors: list[FieldError] = []

    def bad(key: str, reason: str) -> None:
        errors.append(FieldError(_field(key), reason))

    autoscaler_class = annotations.get(CLASS, config.pod_autoscaler_class)
    if CLASS in annotations and autoscaler_class.endswith(".knative.dev") and autoscaler_class not in (KPA_CLASS, HPA_CLASS):
        bad(CLASS, f"invalid value {autoscaler_class!r}: use {KPA_CLASS} or {HPA_CLASS}")

    # min-scale, max-scale, activation-scale
    scales: dict[str, int] = {}
    for key in (MIN_SCALE, MAX_SCALE):
        found = _get(annotations, key)
        if found is None:
            continue
        name, text = found
        value = _int(text)
        if value is None or not 0 <= value <= _INT32_MAX:
            bad(name, f"expected an integer in [0, {_INT32_MAX}], got {text!r}")
        else:
            scales[key] = value
    low, high = scales.get(MIN_SCALE, 0), scales.get(MAX_SCALE, 0)
    if high != 0 and high < low:
        bad(MAX_SCALE, f"max-scale={high} is less than min-scale={low}")
    if MAX_SCALE in scales and config.max_scale_limit > 0:
        if high > config.max_scale_limit:
            bad(MAX_SCALE, f"expected 1 <= {high} <= {config.max_scale_limit} (the platform's max-scale-limit)")
        if high == 0:
            bad(MAX_SCALE, f"max-scale=0 (unlimited), must be less than {config.max_scale_limit}")
    found = _get(annotations, ACTIVATION_SCALE)
    if found is not None:
        name, text = found
        activation = _int(text)
        if activation is None:
            bad(name, f"expected an integer of at least 2, got {text!r}")
        elif low > activation:
            bad(name, f"min-scale={low} is greater than activation-scale={activation}")
        elif high != 0 and high < activation:
            bad(name, f"max-scale={high} is less than activation-scale={activation}")
        elif activation < 2:
            bad(name, f"activation-scale={activation} must be greater than 1")

    # floats
    for key, lowest, highest in ((PANIC_WINDOW_PERCENTAGE, PANIC_WINDOW_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX),
                                 (PANIC_THRESHOLD_PERCENTAGE, PANIC_THRESHOLD_PERCENTAGE_MIN, PANIC_THRESHOLD_PERCENTAGE_MAX),
                                 (TARGET_UTILIZATION, 1.0, 100.0)):
        found = _get(annotations, key)
        if found is not None:
            name, text = found
            number = _float(text)
            if number is None or not lowest <= number <= highest:
                bad(name, f"expected a number in [{lowest:g}, {highest:g}], got {text!r}")
    found = _get(annotations, TARGET)
    if found is not None:
        name, text = found
        number = _float(text)
        if number is None or number < TARGET_MIN:
            bad(name, f"expected a number of at least {TARGET_MIN:g}, got {text!r}")
    found = _get(annotations, TARGET_BURST_CAPACITY)
    if found is not None:
        name, text = found
        number = _float(text)
        if number is None or (number < 0 and number != -1):
            bad(name, f"expected a non-negative number or -1 (unlimited), got {text!r}")

    # durations
    found = _get(annotations, WINDOW)
    if found is not None:
        name, text = found
        seconds = _duration_or_none(text)
        if seconds is None or not WINDOW_MIN <= seconds <= WINDOW_MAX:
            bad(name, f"expected a duration in [{WINDOW_MIN:g}s, {WINDOW_MAX:g}s] such as \"60s\" or \"2m\", got {text!r}")
        elif seconds != math.floor(seconds):
            bad(name, f"{text!r} must be specified with at most second precision")
    for key in (RETENTION, SCALE_DOWN_DELAY):
        found = _get(annotations, key)
        if found is None:
            continue
        name, text = found
        seconds = _duration_or_none(text)
        if seconds is None or not 0 <= seconds <= WINDOW_MAX:
            bad(name, f"expected a duration in [0s, {WINDOW_MAX:g}s] such as \"90s\", got {text!r}")
        elif key == SCALE_DOWN_DELAY and seconds != round(seconds):
            bad(name, f"{text!r} must be specified with at most second precision")

    # metric, per class
    if METRIC in annotations:
        metric = annotations[METRIC]
        if (autoscaler_class == KPA_CLASS and metric not in (CONCURRENCY, RPS)) or (autoscaler_class == HPA_CLASS and metric == ""):
            allowed = f"{CONCURRENCY} or {RPS}" if autoscaler_class == KPA_CLASS else "a non-empty metric (cpu, memory, ...)"
            bad(METRIC, f"invalid value {metric!r} for class {autoscaler_class}: use {allowed}")

    if autoscaler_class == KPA_CLASS:
        found = _get(annotations, AGGREGATION)
        if found is not None and found[1] not in ("", LINEAR, WEIGHTED_EXPONENTIAL, "weightedExponential"):
            bad(found[0], f"invalid value {found[1]!r}: use {LINEAR} or {WEIGHTED_EXPONENTIAL}")

    found = _get(annotations, INITIAL_SCALE)
    if found is not None:
        name, text = found
        initial = _int(text)
        if initial is None or initial < 0:
            bad(name, f"expected an integer of at least 0, got {text!r}")
        elif initial == 0 and not config.allow_zero_initial_scale:
            bad(name, "0 is not allowed by the platform (set autoscaler.allow-zero-initial-scale: \"true\")")
    return errors


def _duration_or_none(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class KPASettings:
    """Everything the KPA of one revision needs, resolved. Durations in seconds; 0 max_scale = unbounded."""

    metric: str = CONCURRENCY
    target: float = 70.0  # per-pod target: total x utilization
    total: float = 100.0  # per-pod capacity the target is a fraction of
    target_burst_capacity: float = 211.0
    panic_threshold: float = 2.0  # a factor: 2.0 is 200 %
    stable_window: float = 60.0
    panic_window: float = 6.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_down_delay: float = 0.0
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0
    activation_scale: int = 0  # 0 or 1: unset (one replica on activation)
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    reachable: bool = True
    aggregation: str = LINEAR
    # Knative scales a revision that failed to activate back to zero after the progress deadline (600 s) + 30 s.
    activation_timeout: float = 630.0


def kpa_settings(annotations: Mapping[str, str] | None = None, config: AutoscalerConfig | None = None,
                 container_concurrency: int = 0, reachable: bool = True, kind: str = "Revision",
                 name: str = "") -> KPASettings:
    """Resolve ``annotations`` over ``config``; raises ``AdmissionError`` listing every bad annotation."""
    annotations = annotations or {}
    config = config or AutoscalerConfig()
    errors = validate_annotations(annotations, config)
    if errors:
        raise AdmissionError(errors, kind=kind, name=name)

    def value(key: str) -> str | None:
        found = _get(annotations, key)
        return found[1] if found is not None else None

    metric = annotations.get(METRIC) or CONCURRENCY
    # ResolveMetricTarget
    if metric == RPS:
        total, utilization = config.requests_per_second_target_default, config.target_utilization
    else:
        total = float(container_concurrency) or config.container_concurrency_target_default
        utilization = config.container_concurrency_target_fraction
    if (text := value(TARGET)) is not None:
        total = float(text)
        if metric == CONCURRENCY and container_concurrency:
            # never aim above what the container accepts
            total = min(total, float(container_concurrency))
    if (text := value(TARGET_UTILIZATION)) is not None:
        utilization = float(text) / 100.0
    target = max(TARGET_MIN, total * utilization)

    stable_window = parse_duration(text) if (text := value(WINDOW)) is not None else config.stable_window
    panic_percentage = float(text) if (text := value(PANIC_WINDOW_PERCENTAGE)) is not None else config.panic_window_percentage
    panic_window = max(BUCKET_SIZE, float(round(stable_window * panic_percentage / 100.0)))
    threshold = float(text) if (text := value(PANIC_THRESHOLD_PERCENTAGE)) is not None else config.panic_threshold_percentage
    tbc = float(text) if (text := value(TARGET_BURST_CAPACITY)) is not None else config.target_burst_capacity
    delay = parse_duration(text) if (text := value(SCALE_DOWN_DELAY)) is not None else config.scale_down_delay
    retention = (parse_duration(text) if (text := value(RETENTION)) is not None
                 else config.scale_to_zero_pod_retention_period)

    min_scale = int(text) if (text := value(MIN_SCALE)) is not None else config.min_scale
    max_scale = int(text) if (text := value(MAX_SCALE)) is not None else config.max_scale
    initial = config.initial_scale
    if (text := value(INITIAL_SCALE)) is not None and (int(text) != 0 or config.allow_zero_initial_scale):
        initial = int(text)
    activation = int(text) if (text := value(ACTIVATION_SCALE)) is not None else 0
    aggregation = WEIGHTED_EXPONENTIAL if value(AGGREGATION) in (WEIGHTED_EXPONENTIAL, "weightedExponential") else LINEAR
    return KPASettings(
        metric=metric, target=target, total=total, target_burst_capacity=tbc, panic_threshold=threshold / 100.0,
        stable_window=stable_window, panic_window=panic_window, max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate, scale_down_delay=delay, initial_scale=initial,
        min_scale=min_scale if reachable else 0, max_scale=max_scale, activation_scale=activation,
        enable_scale_to_zero=config.enable_scale_to_zero, scale_to_zero_grace_period=config.scale_to_zero_grace_period,
        scale_to_zero_pod_retention_period=retention if reachable else 0.0, reachable=reachable, aggregation=aggregation)


def autoscaler_class(annotations: Mapping[str, str], config: AutoscalerConfig | None = None) -> str:
    """The revision's autoscaler class: its annotation, else the platform's ``pod-autoscaler-class``."""
    return annotations.get(CLASS) or (config or AutoscalerConfig()).pod_autoscaler_class


def predictor_annotations(min_replicas: int | None = None, max_replicas: int | None = None,
                          scale_target: int | None = None, scale_metric: str | None = None) -> dict[str, str]:
    """The Knative annotations KServe writes for a Serverless predictor's scaling fields.

    ``minReplicas`` unset means KServe's default of 1 (set 0 to allow scale to zero); ``maxReplicas`` 0 or
    unset leaves max-scale unbounded; ``scaleMetric`` ``cpu``/``memory`` select the HPA class, the others
    (``concurrency``, ``rps``) stay on KPA. User annotations already on the object win over these.
    """
    annotations = {MIN_SCALE: str(1 if min_replicas is None else min_replicas)}
    if max_replicas:
        annotations[MAX_SCALE] = str(max_replicas)
    if scale_metric:
        annotations[METRIC] = scale_metric
        if scale_metric in ("cpu", "memory"):
            annotations[CLASS] = HPA_CLASS
    if scale_target is not None:
        annotations[TARGET] = str(scale_target)
    return annotations
