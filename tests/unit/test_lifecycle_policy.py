"""The lifecycle policy annotations: parsed with defaults, written back minimal, refused by name."""

from __future__ import annotations

import pytest

from serving.errors import AdmissionError
from serving.lifecycle import CANARY_PERCENT, MAX_ERROR_RATE, ROLLOUT_STRATEGY, SLO_P95_MS, LifecyclePolicy


def test_absent_annotations_give_the_defaults() -> None:
    assert LifecyclePolicy.from_annotations(None) == LifecyclePolicy()
    assert LifecyclePolicy().annotations() == {}


def test_annotations_round_trip() -> None:
    policy = LifecyclePolicy(rollout_strategy="direct", canary_percent=10, analysis_seconds=30, max_error_rate=0.01,
                             slo_p95_ms=250.5, watch_alias="staging")
    written = policy.annotations()
    assert written[ROLLOUT_STRATEGY] == "direct"
    assert written[CANARY_PERCENT] == "10"
    assert LifecyclePolicy.from_annotations({**written, "unrelated/annotation": "x"}) == policy


def test_every_bad_value_is_named_with_what_it_takes() -> None:
    with pytest.raises(AdmissionError) as caught:
        LifecyclePolicy.from_annotations({ROLLOUT_STRATEGY: "yolo", CANARY_PERCENT: "100", MAX_ERROR_RATE: "2",
                                          SLO_P95_MS: "fast"})
    fields = {error.field: error.reason for error in caught.value.errors}
    assert fields == {
        f"metadata.annotations[{ROLLOUT_STRATEGY}]": "'yolo' is not one of canary, direct, manual",
        f"metadata.annotations[{CANARY_PERCENT}]": "'100' is not a whole percent from 1 to 99",
        f"metadata.annotations[{MAX_ERROR_RATE}]": "'2' is not a share from 0 to 1",
        f"metadata.annotations[{SLO_P95_MS}]": "'fast' is not milliseconds above 0",
    }
