"""The manifests of a canary rollout, from the live InferenceService and the new version (pure).

Serverless (Knative): the same spec with the new ``storageUri`` and ``canaryTrafficPercent: N`` (tag routing
on, so ``latest-``/``prev-`` reach each side alone); KServe splits traffic between the new revision and the
last rolled-out one. Promotion removes ``canaryTrafficPercent``; rollback is three steps so that the stable
version answers throughout and the latest revision ends up being the stable spec again: the canary at 0 %
(everything back on the rolled-out revision at once), the old spec still at 0 % (a fresh revision of it
starts while the old one serves), then the old spec alone once that revision is Ready.

Standard (RawDeployment): KServe's ``spec.canary[]`` entry named after the version (``v2``, Deployment
``{isvc}-v2-predictor``) at N %. Promotion is KServe's: the stable predictor takes the canary's name and
model and the entry goes; rollback removes the entry.

The version labels (``odh.serving/registered-model``, ``odh.serving/model-version``) change only on
promotion; while it is watched the canary's version is in ``serving.odh.io/canary-version``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.kserve.reconcile.canary import predictor_object_name
from serving.kserve.reconcile.serverless import ENABLE_TAG_ROUTING_ANNOTATION
from serving.kserve.types import FRAMEWORK_SHORTCUTS
from serving.policy import DEPLOYMENT_MODE_ANNOTATION, MODEL_NAME_LABEL, MODEL_VERSION_LABEL

CANARY_VERSION_ANNOTATION = "serving.odh.io/canary-version"
CANARY_MODEL_ANNOTATION = "serving.odh.io/canary-model"
Mode = Literal["Serverless", "Standard"]
_IMPLEMENTATIONS = ("model", *FRAMEWORK_SHORTCUTS)
# What a stored object carries that an apply must not send back (the store owns these).
_KEPT_METADATA = ("name", "namespace", "labels", "annotations")


@dataclass(frozen=True)
class NewVersion:
    """The registry version going in."""

    model_name: str
    version: str
    storage_uri: str


@dataclass(frozen=True)
class Step:
    """One apply; ``wait_ready``: wait for the InferenceService to be Ready at this generation before the next."""

    manifest: dict[str, Any]
    wait_ready: bool
    why: str


@dataclass(frozen=True)
class RolloutPlan:
    mode: Mode
    stable: dict[str, Any]
    canary: dict[str, Any]
    promote: list[Step] = field(default_factory=list)
    rollback: list[Step] = field(default_factory=list)
    canary_name: str | None = None  # Standard: the spec.canary[] predictor name
    # The ``direct`` strategy: the new version replaces the stable one with no canary and no watch. Serverless:
    # a new revision takes all traffic once Ready; Standard: the same Deployment rolls (old replicas serve
    # until new ones are ready). Either way a version that never gets Ready leaves the old one serving.
    direct: list[Step] = field(default_factory=list)


def deployment_mode(isvc: dict[str, Any]) -> Mode:
    """Serverless when the annotation says so or the platform reports Knative mode; Standard otherwise."""
    annotation = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if annotation in ("Serverless", "Knative"):
        return "Serverless"
    if annotation in ("Standard", "RawDeployment"):
        return "Standard"
    return "Serverless" if (isvc.get("status") or {}).get("deploymentMode") == "Knative" else "Standard"


def serving_version(isvc: dict[str, Any]) -> tuple[str, str] | None:
    """(registered model, version) the deployment's labels say it serves; None when it does not say."""
    labels = (isvc.get("metadata") or {}).get("labels") or {}
    name, version = labels.get(MODEL_NAME_LABEL), labels.get(MODEL_VERSION_LABEL)
    return (name, version) if name and version else None


def clean_manifest(live: dict[str, Any]) -> dict[str, Any]:
    """The live object as a user would apply it: no status, no store-owned metadata."""
    meta = live.get("metadata") or {}
    return {
        "apiVersion": live.get("apiVersion", "serving.kserve.io/v1beta1"),
        "kind": live.get("kind", "InferenceService"),
        "metadata": {key: copy.deepcopy(meta[key]) for key in _KEPT_METADATA if meta.get(key) is not None},
        "spec": copy.deepcopy(live.get("spec") or {}),
    }


def plan_rollout(live: dict[str, Any], new: NewVersion, percent: int, model_format: str | None = None) -> RolloutPlan:
    """Canary, promotion and rollback manifests for putting ``new`` into ``live`` at ``percent`` %."""
    if not 1 <= percent <= 99:
        raise ValueError(f"canary_percent {percent} is out of range: use a whole percent from 1 to 99")
    serving = _implementation_key(live["spec"]["predictor"])
    current = ((live["spec"]["predictor"][serving].get("modelFormat") or {}).get("name") if serving == "model" else serving)
    if model_format and current and model_format != current:
        raise ValueError(f"model_format {model_format!r} differs from the {current!r} model serving now: a canary "
                         f"keeps the runtime; deploy the new format under another name, or retire and deploy")
    stable = clean_manifest(live)
    stable["metadata"].setdefault("annotations", {})
    for key in (CANARY_VERSION_ANNOTATION, CANARY_MODEL_ANNOTATION):
        stable["metadata"]["annotations"].pop(key, None)
    stable["spec"].pop("canary", None)
    stable["spec"]["predictor"].pop("canaryTrafficPercent", None)
    mode = deployment_mode(live)
    if mode == "Serverless":
        return _serverless(stable, new, percent)
    return _standard(stable, new, percent)


def analysis_targets(live: dict[str, Any], plan: RolloutPlan) -> tuple[str, str]:
    """(stable revision, canary revision) as the gateway's metrics name them, once the canary is Ready."""
    name = live["metadata"]["name"]
    if plan.mode == "Serverless":
        predictor = ((live.get("status") or {}).get("components") or {}).get("predictor") or {}
        stable, canary = predictor.get("latestRolledoutRevision"), predictor.get("latestReadyRevision")
        if not stable or not canary or stable == canary:
            raise ValueError(f"{name}: the canary revision is not Ready yet (rolled out {stable!r}, latest ready {canary!r})")
        return stable, canary
    stable_name = plan.stable["spec"]["predictor"].get("name")
    return predictor_object_name(name, stable_name), predictor_object_name(name, plan.canary_name)


def canary_ready(live: dict[str, Any], plan: RolloutPlan, generation: int | None) -> bool:
    """The canary applied at ``generation`` is Ready and takes its share: a new ready revision next to the
    rolled-out one (Serverless), or its ``canaryStatuses`` entry Ready (Standard)."""
    status = live.get("status") or {}
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return False
    if plan.mode == "Serverless":
        predictor = (status.get("components") or {}).get("predictor") or {}
        latest = predictor.get("latestReadyRevision")
        return bool(latest) and latest == predictor.get("latestCreatedRevision") != predictor.get("latestRolledoutRevision")
    return any(s.get("name") == plan.canary_name and s.get("ready") for s in status.get("canaryStatuses") or [])


def canary_failure(live: dict[str, Any], plan: RolloutPlan) -> str | None:
    """Why the canary cannot become Ready, when the platform already says so (None: not failed, maybe starting)."""
    if plan.mode != "Serverless":
        return None
    for condition in (live.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PredictorConfigurationReady" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'RevisionFailed'}: {condition.get('message') or 'the canary revision failed'}"
    return None


def _annotated(manifest: dict[str, Any], new: NewVersion) -> dict[str, Any]:
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[CANARY_MODEL_ANNOTATION] = new.model_name
    annotations[CANARY_VERSION_ANNOTATION] = new.version
    return manifest


def _promoted_metadata(manifest: dict[str, Any], new: NewVersion) -> dict[str, Any]:
    annotations = manifest["metadata"].setdefault("annotations", {})
    for key in (CANARY_VERSION_ANNOTATION, CANARY_MODEL_ANNOTATION):
        annotations.pop(key, None)
    labels = manifest["metadata"].setdefault("labels", {})
    labels[MODEL_NAME_LABEL] = new.model_name
    labels[MODEL_VERSION_LABEL] = new.version
    return manifest


def _implementation_key(predictor: dict[str, Any]) -> str:
    for key in _IMPLEMENTATIONS:
        if isinstance(predictor.get(key), dict):
            return key
    raise ValueError("spec.predictor has no model (model or a framework such as sklearn): nothing to roll out")


def _implementation(predictor: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = predictor[_implementation_key(predictor)]
    return found


def _serverless(stable: dict[str, Any], new: NewVersion, percent: int) -> RolloutPlan:
    canary = _annotated(copy.deepcopy(stable), new)
    canary["metadata"]["annotations"][ENABLE_TAG_ROUTING_ANNOTATION] = "true"
    _implementation(canary["spec"]["predictor"])["storageUri"] = new.storage_uri
    canary["spec"]["predictor"]["canaryTrafficPercent"] = percent
    promoted = _promoted_metadata(copy.deepcopy(canary), new)
    promoted["spec"]["predictor"].pop("canaryTrafficPercent")
    zero = copy.deepcopy(canary)
    zero["spec"]["predictor"]["canaryTrafficPercent"] = 0
    stable_at_zero = copy.deepcopy(stable)
    stable_at_zero["spec"]["predictor"]["canaryTrafficPercent"] = 0
    return RolloutPlan("Serverless", stable, canary, promote=[
        Step(promoted, True, "canaryTrafficPercent removed: the new revision takes all traffic"),
    ], direct=[
        Step(promoted, True, "the new model in place: its revision takes all traffic once Ready"),
    ], rollback=[
        Step(zero, False, "canary at 0 %: the rolled-out revision takes all traffic at once"),
        Step(stable_at_zero, True, "the stable spec back at 0 %: a revision of it starts while the old one serves"),
        Step(stable, True, "the stable spec alone: its new revision takes all traffic"),
    ])


def _standard(stable: dict[str, Any], new: NewVersion, percent: int) -> RolloutPlan:
    predictor = stable["spec"]["predictor"]
    name = f"v{new.version}"
    if name == predictor.get("name"):
        name = f"{name}-canary"
    canary = _annotated(copy.deepcopy(stable), new)
    # The canary names only what differs; KServe merges it over the stable predictor (same implementation key).
    key = _implementation_key(predictor)
    canary["spec"]["canary"] = [{"trafficPercent": percent, "predictor": {
        "name": name, key: {"storageUri": new.storage_uri}}}]
    promoted = _promoted_metadata(copy.deepcopy(stable), new)
    promoted["spec"]["predictor"]["name"] = name
    _implementation(promoted["spec"]["predictor"])["storageUri"] = new.storage_uri
    replaced = _promoted_metadata(copy.deepcopy(stable), new)
    _implementation(replaced["spec"]["predictor"])["storageUri"] = new.storage_uri
    return RolloutPlan("Standard", stable, canary, promote=[
        Step(promoted, True, f"the stable predictor becomes {name!r} with the new model; the canary entry goes"),
    ], direct=[
        Step(replaced, True, "the new model in the stable predictor: its Deployment rolls to it"),
    ], rollback=[
        Step(stable, True, "spec.canary removed: the canary's Deployment goes, the stable one takes all traffic"),
    ], canary_name=name)
