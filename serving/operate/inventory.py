"""What serves on the platform, read from its objects: deployments, their revisions, replicas and pods (pure).

A *deployment* here is an InferenceService or an LLMInferenceService, keyed ``namespace/name`` as the
gateway keys its route. Everything KServe renders for one carries its name: the label
``serving.kserve.io/inferenceservice`` (Deployments, Knative Revisions, Pods through their template), or
``app.kubernetes.io/name`` with ``app.kubernetes.io/part-of: llminferenceservice`` for LLM-D. The gateway
reports latency per *revision*: a Serverless Revision (``iris-predictor-00002``) or a Standard Deployment
(``iris-predictor``, a raw canary's ``iris-canary-predictor``); ``revision_owner`` maps each to its deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL

ISVC_LABEL = "serving.kserve.io/inferenceservice"
PART_OF_LABEL = "app.kubernetes.io/part-of"
APP_NAME_LABEL = "app.kubernetes.io/name"
LLM_PART_OF = "llminferenceservice"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
INFERENCE_SERVICE = "InferenceService"
LLM_INFERENCE_SERVICE = "LLMInferenceService"
# KServe's deployment modes as status.deploymentMode or the annotation spell them, as the overview names them.
_MODES = {"Standard": "Standard", "RawDeployment": "Standard", "Serverless": "Serverless", "Knative": "Serverless",
          "ModelMesh": "ModelMesh"}

KubeObject = Mapping[str, Any]


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class TrafficTarget:
    """A revision's share of the deployment's traffic (``tag``: reachable alone as ``{tag}-{name}``)."""

    revision: str
    percent: int
    tag: str | None = None
    latest: bool = False


@dataclass(frozen=True)
class Served:
    """One deployment as the operate flow sees it."""

    kind: str
    namespace: str
    name: str
    mode: str
    model_name: str | None = None
    model_version: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    traffic: tuple[TrafficTarget, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class PodState:
    """One replica: whose it is, whether it is ready, how often it restarted and why it waits (if it does)."""

    namespace: str
    name: str
    owner: str  # the deployment key
    ready: bool
    restarts: int
    waiting_reason: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Replicas:
    ready: int = 0
    desired: int = 0


@dataclass(frozen=True)
class Inventory:
    served: tuple[Served, ...] = ()
    revision_owner: Mapping[str, str] = field(default_factory=dict)  # "ns/revision" -> deployment key
    pods: tuple[PodState, ...] = ()
    replicas: Mapping[str, Replicas] = field(default_factory=dict)  # deployment key -> ready/desired

    def in_namespace(self, namespace: str | None) -> tuple[Served, ...]:
        return tuple(s for s in self.served if namespace is None or s.namespace == namespace)

    def restarts(self) -> dict[str, int]:
        """Restarts per deployment key: the sum of its pods' restartCount."""
        out: dict[str, int] = {s.key: 0 for s in self.served}
        for pod in self.pods:
            out[pod.owner] = out.get(pod.owner, 0) + pod.restarts
        return out


def owner_key(obj: KubeObject) -> str | None:
    """The deployment an object rendered for one belongs to (``namespace/name``), from its labels."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    namespace = meta.get("namespace") or "default"
    if labels.get(ISVC_LABEL):
        return f"{namespace}/{labels[ISVC_LABEL]}"
    if labels.get(PART_OF_LABEL) == LLM_PART_OF and labels.get(APP_NAME_LABEL):
        return f"{namespace}/{labels[APP_NAME_LABEL]}"
    return None


def build_inventory(*, inference_services: Iterable[KubeObject] = (), llm_services: Iterable[KubeObject] = (),
                    deployments: Iterable[KubeObject] = (), revisions: Iterable[KubeObject] = (),
                    pods: Iterable[KubeObject] = ()) -> Inventory:
    """The inventory the platform's objects describe (``pods`` as ``odh get pods -o json`` lists them)."""
    served = [_inference_service(o) for o in inference_services] + [_llm_service(o) for o in llm_services]
    served.sort(key=lambda s: (s.namespace, s.name))
    known = {s.key for s in served}
    revision_owner: dict[str, str] = {}
    replicas: dict[str, Replicas] = {}
    for deployment in deployments:
        owner = owner_key(deployment)
        if owner not in known or owner is None:
            continue
        meta = deployment.get("metadata") or {}
        revision_owner[f"{meta.get('namespace') or 'default'}/{meta.get('name')}"] = owner
        status = deployment.get("status") or {}
        desired = (deployment.get("spec") or {}).get("replicas")
        if not isinstance(desired, int):
            desired = status.get("replicas") or 0
        before = replicas.get(owner, Replicas())
        replicas[owner] = Replicas(before.ready + int(status.get("readyReplicas") or 0), before.desired + int(desired))
    for revision in revisions:
        owner = owner_key(revision)
        if owner in known and owner is not None:
            meta = revision.get("metadata") or {}
            revision_owner[f"{meta.get('namespace') or 'default'}/{meta.get('name')}"] = owner
    for one in served:  # a revision the status routes to but whose objects are gone (being collected)
        for target in one.traffic:
            revision_owner.setdefault(f"{one.namespace}/{target.revision}", one.key)
    pod_states = tuple(p for p in (_pod(o) for o in pods) if p is not None and p.owner in known)
    return Inventory(tuple(served), revision_owner, pod_states, replicas)


def _conditions(obj: KubeObject) -> tuple[Condition, ...]:
    found = (obj.get("status") or {}).get("conditions") or []
    return tuple(Condition(str(c.get("type", "")), str(c.get("status", "Unknown")), str(c.get("reason") or ""),
                           str(c.get("message") or "")) for c in found)


def _base(obj: KubeObject) -> tuple[str, str, dict[str, str], dict[str, str]]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name", "")), dict(meta.get("labels") or {}),
            dict(meta.get("annotations") or {}))


def _inference_service(obj: KubeObject) -> Served:
    namespace, name, labels, annotations = _base(obj)
    status = obj.get("status") or {}
    mode_text = status.get("deploymentMode") or annotations.get(MODE_ANNOTATION) or "Standard"
    mode = _MODES.get(str(mode_text), str(mode_text))
    predictor = (status.get("components") or {}).get("predictor") or {}
    traffic = tuple(TrafficTarget(str(t.get("revisionName", "")), int(t.get("percent") or 0), t.get("tag"),
                                  bool(t.get("latestRevision"))) for t in predictor.get("traffic") or [])
    if not traffic and mode == "Standard":
        traffic = _standard_traffic(obj, name)
    return Served(INFERENCE_SERVICE, namespace, name, mode, labels.get(MODEL_NAME_LABEL), labels.get(MODEL_VERSION_LABEL),
                  annotations, _conditions(obj), traffic)


def _standard_traffic(obj: KubeObject, name: str) -> tuple[TrafficTarget, ...]:
    """Standard mode: the stable predictor Deployment and each Ready raw canary with its percent (KServe's
    ``applyCanaryWeights``: a canary that is not Ready gets nothing; the stable one the rest)."""
    predictor = ((obj.get("spec") or {}).get("predictor") or {}).get("name")
    stable = f"{name}-{predictor}-predictor" if predictor else f"{name}-predictor"
    canary = [TrafficTarget(f"{name}-{c.get('name')}-predictor", int(c.get("trafficPercent") or 0))
              for c in (obj.get("status") or {}).get("canaryStatuses") or [] if c.get("ready")]
    rest = max(0, 100 - sum(t.percent for t in canary))
    return (TrafficTarget(stable, rest), *canary)


def _llm_service(obj: KubeObject) -> Served:
    namespace, name, labels, annotations = _base(obj)
    return Served(LLM_INFERENCE_SERVICE, namespace, name, "LLM-D", labels.get(MODEL_NAME_LABEL),
                  labels.get(MODEL_VERSION_LABEL), annotations, _conditions(obj), ())


def _pod(obj: KubeObject) -> PodState | None:
    owner = owner_key(obj)
    if owner is None:
        return None
    meta = obj.get("metadata") or {}
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    ready = bool(statuses) and all(bool(s.get("ready")) for s in statuses)
    waiting = next(((s.get("state") or {}).get("waiting") for s in statuses if (s.get("state") or {}).get("waiting")), None)
    reason = str(waiting.get("reason")) if waiting and waiting.get("reason") else None
    message = str(waiting.get("message") or "") if waiting else ""
    return PodState(str(meta.get("namespace") or "default"), str(meta.get("name", "")), owner, ready, restarts, reason, message)
