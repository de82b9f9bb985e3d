"""Knative's config-autoscaler keys and autoscaling annotations: defaults, resolution and validation."""

from __future__ import annotations

import pytest

from serving.autoscaling import AutoscalerConfig, AutoscalerConfigError, kpa_settings, predictor_annotations
from serving.autoscaling.settings import validate_annotations
from serving.errors import AdmissionError

A = "autoscaling.knative.dev/"


def test_knative_defaults() -> None:
    config = AutoscalerConfig.from_data({})
    assert (config.container_concurrency_target_default, config.container_concurrency_target_fraction) == (100, 0.7)
    assert (config.requests_per_second_target_default, config.target_burst_capacity, config.stable_window) == (200, 211, 60)
    assert (config.max_scale_up_rate, config.max_scale_down_rate, config.scale_to_zero_grace_period) == (1000, 2, 30)
    assert AutoscalerConfig.from_data(config.to_data()) == config
    s = kpa_settings({}, config)
    assert (s.target, s.total, s.panic_window, s.panic_threshold, s.initial_scale) == (70, 100, 6, 2.0, 1)


@pytest.mark.parametrize(("data", "key"), [
    ({"stable-window": "5s"}, "stable-window"), ({"stable-window": "60"}, "stable-window"),
    ({"max-scale-up-rate": "1"}, "max-scale-up-rate"),
    ({"container-concurrency-target-percentage": "0"}, "container-concurrency-target-percentage"),
    ({"initial-scale": "0"}, "initial-scale"), ({"target-burst-capacity": "-2"}, "target-burst-capacity"),
    ({"scale-to-zero-grace-period": "0s"}, "scale-to-zero-grace-period"), ({"min-scale": "3", "max-scale": "2"}, "min-scale"),
    ({"enable-scale-to-zero": "maybe"}, "enable-scale-to-zero"), ({"stable_window": "60s"}, "stable_window"),
])
def test_config_errors_name_the_key(data: dict[str, str], key: str) -> None:
    with pytest.raises(AutoscalerConfigError) as caught:
        AutoscalerConfig.from_data(data)
    assert caught.value.key == key and key in str(caught.value)


def test_percentage_or_fraction_and_zero_initial_scale_when_allowed() -> None:
    assert AutoscalerConfig.from_data({"container-concurrency-target-percentage": "80"}).container_concurrency_target_fraction == 0.8
    assert AutoscalerConfig.from_data({"container-concurrency-target-percentage": "0.8"}).container_concurrency_target_fraction == 0.8
    config = AutoscalerConfig.from_data({"initial-scale": "0", "allow-zero-initial-scale": "true"})
    assert kpa_settings({f"{A}initial-scale": "0"}, config).initial_scale == 0


def test_annotations_resolve_like_knative() -> None:
    s = kpa_settings({f"{A}metric": "rps", f"{A}target": "50", f"{A}target-utilization-percentage": "80", f"{A}window": "2m",
                      f"{A}panic-window-percentage": "5", f"{A}min-scale": "1", f"{A}maxScale": "4",
                      f"{A}scale-to-zero-pod-retention-period": "1m30s"})
    assert (s.metric, s.total, s.target, s.stable_window, s.panic_window) == ("rps", 50, 40, 120, 6)
    assert (s.min_scale, s.max_scale, s.scale_to_zero_pod_retention_period) == (1, 4, 90)
    # containerConcurrency caps a larger concurrency target
    assert kpa_settings({f"{A}target": "10"}, container_concurrency=4).total == 4


def test_every_bad_annotation_is_reported_with_its_range() -> None:
    with pytest.raises(AdmissionError) as caught:
        kpa_settings({f"{A}window": "3s", f"{A}panic-threshold-percentage": "50", f"{A}target": "0", f"{A}min-scale": "5",
                      f"{A}max-scale": "2", f"{A}activation-scale": "1", f"{A}metric": "cpu", f"{A}initial-scale": "0"},
                     name="iris")
    fields = [error.field for error in caught.value.errors]
    for key in ("window", "panic-threshold-percentage", "target", "max-scale", "activation-scale", "metric", "initial-scale"):
        assert f"metadata.annotations.{A}{key}" in fields
    assert "[6s, 3600s]" in str(caught.value) and "[110, 1000]" in str(caught.value)
    assert validate_annotations({f"{A}class": "hpa.autoscaling.knative.dev", f"{A}metric": "cpu"}, AutoscalerConfig()) == []


def test_predictor_fields_map_as_kserve_does() -> None:
    assert predictor_annotations() == {f"{A}min-scale": "1"}
    assert predictor_annotations(0, 3, 5, "rps") == {f"{A}min-scale": "0", f"{A}max-scale": "3", f"{A}target": "5", f"{A}metric": "rps"}
    assert predictor_annotations(scale_metric="cpu")[f"{A}class"] == "hpa.autoscaling.knative.dev"
