"""Autoscaling algorithms as pure code: Knative's KPA, Kubernetes' HPA and an LLM engine scaler.

No sockets, threads or clocks: every call takes ``now`` (monotonic seconds), so a test drives time and the
daemon's loop passes ``time.monotonic()``. See docs/autoscaling.md for how the platform wires them.
"""

from serving.autoscaling.config import HPA_CLASS, KPA_CLASS, AutoscalerConfig, AutoscalerConfigError
from serving.autoscaling.hpa import HPA, Behavior, HPADecision, MetricTarget, PodSample, ScalingPolicy, ScalingRules
from serving.autoscaling.kpa import KPA, Activity, Decider, ScaleDecision, ScaleResult
from serving.autoscaling.llm import EngineDecision, EngineLoad, EngineScaler, EngineThresholds
from serving.autoscaling.meter import ConcurrencyMeter, Stat
from serving.autoscaling.settings import KPASettings, autoscaler_class, kpa_settings, predictor_annotations, validate_annotations

__all__ = [
    "HPA", "HPA_CLASS", "KPA", "KPA_CLASS", "Activity", "AutoscalerConfig", "AutoscalerConfigError", "Behavior",
    "ConcurrencyMeter", "Decider", "EngineDecision", "EngineLoad", "EngineScaler", "EngineThresholds", "HPADecision",
    "KPASettings", "MetricTarget", "PodSample", "ScaleDecision", "ScaleResult", "ScalingPolicy", "ScalingRules", "Stat",
    "autoscaler_class", "kpa_settings", "predictor_annotations", "validate_annotations",
]
