"""Canary rollouts, pure: the manifests that put a new version in as a canary, promote it or roll it back
(``plan``), and the verdict on a canary from the gateway's per-revision metrics (``analysis``)."""

from serving.rollout.analysis import (
    Decision,
    RevisionFigures,
    Thresholds,
    figures,
    judge,
)
from serving.rollout.plan import (
    CANARY_MODEL_ANNOTATION,
    CANARY_VERSION_ANNOTATION,
    NewVersion,
    RolloutPlan,
    Step,
    analysis_targets,
    canary_failure,
    canary_ready,
    clean_manifest,
    deployment_mode,
    plan_rollout,
    serving_version,
)

__all__ = [
    "CANARY_MODEL_ANNOTATION", "CANARY_VERSION_ANNOTATION", "Decision", "NewVersion",
    "RevisionFigures", "RolloutPlan", "Step", "Thresholds", "analysis_targets", "canary_failure",
    "canary_ready", "clean_manifest", "deployment_mode",
    "figures", "judge", "plan_rollout", "serving_version",
]
