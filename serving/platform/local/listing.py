"""``odh get``'s pure parts: the kinds the embedded platform stores, their kubectl names, and kubectl's output.

Each kind has kubectl's names (plural, singular, short names, ``plural.group`` and ``plural.version.group``,
case insensitive) and kubectl's columns: the printer columns of its CRD for custom resources (their
``jsonPath`` evaluated here, first match, as the apiserver's table convertor does), and kubectl's own
printers for Deployments, Services, Pods and HorizontalPodAutoscalers. ``-o json`` and ``-o yaml`` print
a ``List`` as ``kubectl get -o json`` does. Nothing here does I/O: the clock is passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KubeObject = dict[str, Any]
# A column's cell from an object, given the time "now" (for AGE).
CellFn = Callable[[KubeObject, datetime], str]

ODH_ANNOTATION_PREFIX = "serving.odh.io/"
POD_IP = "127.0.0.1"
OUTPUT_FORMATS = ("table", "wide", "json", "yaml", "name")
# kubectl's tabwriter: cells padded by 3 spaces, every column at least 6 wide.
_PADDING = 3
_MIN_WIDTH = 6


class UnknownKindError(ValueError):
    """A kind no entry of the table answers to; the message names every known kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        known = ", ".join(info.display_name for info in KINDS)
        super().__init__(f'the server doesn\'t have a resource type "{kind}"; known kinds: {known}')


@dataclass(frozen=True)
class Column:
    header: str
    cell: CellFn
    wide: bool = False  # shown with -o wide only
    json_path: str = ""  # a CRD printer column's path (kubectl's own printers have none)


@dataclass(frozen=True)
class KindInfo:
    """One kind as the store keeps it and as kubectl names and prints it."""

    store_kind: str  # the ObjectStore's key ("Service.serving.knative.dev" for Knative's Service)
    kind: str  # the API kind
    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    short_names: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    namespaced: bool = True
    from_pods: bool = False  # not stored: the daemon's replica processes, presented as Pods

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``plural.group``: how the apiserver names the resource in its errors."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def display_name(self) -> str:
        shorts = f" ({', '.join(self.short_names)})" if self.short_names else ""
        return f"{self.resource}{shorts}"

    def aliases(self) -> set[str]:
        names = {self.plural, self.singular, self.kind.lower(), *self.short_names}
        if self.group:
            names |= {f"{n}.{self.group}" for n in (self.plural, self.singular, self.kind.lower())}
            names.add(f"{self.plural}.{self.version}.{self.group}")
        return names

    def object_name(self, name: str) -> str:
        """What ``-o name`` prints: ``kind.group/name`` (``kind/name`` for the core group)."""
        prefix = f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()
        return f"{prefix}/{name}"

    def not_found(self, name: str) -> str:
        return f'{self.resource} "{name}" not found'


# -- cells ---------------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's AGE (apimachinery's HumanDuration): coarser the older, at most two units."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def format_age(timestamp: Any, now: datetime) -> str:
    """The age of an RFC 3339 timestamp at ``now``; ``<unknown>`` when there is none (as kubectl)."""
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return human_duration((now - then).total_seconds())


def _age(obj: KubeObject, now: datetime) -> str:
    return format_age(_meta(obj).get("creationTimestamp"), now)


def _name(obj: KubeObject, _: datetime) -> str:
    return str(_meta(obj).get("name", ""))


_PATH_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_-]+)            # .field
      | \[(?P<quote>['"])(?P<key>(?:\\.|(?!(?P=quote)).)*)(?P=quote)\]   # ['key.with\.dots']
      | \[\*\]                                  # [*]
      | \[\?\(@\.(?P<test>[A-Za-z0-9_.-]+)==(?P<want>'[^']*'|"[^"]*"|true|false|-?\d+)\)\]   # [?(@.f==v)]
    """,
    re.VERBOSE,
)


def json_path(obj: Any, path: str) -> list[Any]:
    """Every value ``path`` selects in ``obj``: the JSONPath forms CRD printer columns use (``.a.b``,
    ``['k\\.with\\.dots']``, ``[*]``, ``[?(@.field=='value')]``)."""
    values = [obj]
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[position:]!r}")
        position = match.end()
        values = _step(values, match)
    return values


def _step(values: list[Any], token: re.Match[str]) -> list[Any]:
    if token["field"] is not None or token["key"] is not None:
        key = token["field"] if token["field"] is not None else re.sub(r"\\(.)", r"\1", token["key"])
        return [v[key] for v in values if isinstance(v, dict) and key in v]
    items = [item for v in values if isinstance(v, list) for item in v]
    if token["test"] is None:  # [*]
        return items
    want = json.loads(token["want"].replace("'", '"')) if token["want"][0] in "'\"" else json.loads(token["want"])
    return [item for item in items if _lookup(item, token["test"]) == want]


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def crd_column(header: str, path: str, kind: str = "string", wide: bool = False) -> Column:
    """A CRD's printer column: the first value ``path`` selects, blank when none, as the apiserver prints it."""

    def cell(obj: KubeObject, now: datetime) -> str:
        found = json_path(obj, path)
        if not found or found[0] is None:
            return ""
        value = found[0]
        if kind == "date":
            return format_age(value, now)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    return Column(header.upper(), cell, wide, path)


_NAME = Column("NAME", _name)
_AGE = Column("AGE", _age)


# -- kubectl's own printers for the built-in kinds ----------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _section(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _containers(obj: KubeObject) -> list[dict[str, Any]]:
    template_spec = _section(_section(_section(obj, "spec"), "template"), "spec")
    return [c for c in template_spec.get("containers") or [] if isinstance(c, dict)]


def _labels_text(labels: Any) -> str:
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _deployment_desired(obj: KubeObject) -> int:
    # The store keeps no spec.replicas when an HPA owns the count: then what runs is the desired count.
    spec_replicas = _section(obj, "spec").get("replicas")
    return _int(spec_replicas) if isinstance(spec_replicas, int) else _int(_section(obj, "status").get("replicas"))


DEPLOYMENT_COLUMNS = (
    _NAME,
    Column("READY", lambda o, _: f"{_int(_section(o, 'status').get('readyReplicas'))}/{_deployment_desired(o)}"),
    Column("UP-TO-DATE", lambda o, _: str(_int(_section(o, "status").get("updatedReplicas")))),
    Column("AVAILABLE", lambda o, _: str(_int(_section(o, "status").get("availableReplicas")))),
    _AGE,
    Column("CONTAINERS", lambda o, _: ",".join(str(c.get("name", "")) for c in _containers(o)), wide=True),
    Column("IMAGES", lambda o, _: ",".join(str(c.get("image", "")) for c in _containers(o)), wide=True),
    Column("SELECTOR", lambda o, _: _labels_text(_section(_section(o, "spec"), "selector").get("matchLabels")), wide=True),
)


def _service_ports(obj: KubeObject) -> str:
    ports = [p for p in _section(obj, "spec").get("ports") or [] if isinstance(p, dict)]
    if not ports:
        return "<none>"
    return ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}" for p in ports
    )


SERVICE_COLUMNS = (
    _NAME,
    Column("TYPE", lambda o, _: str(_section(o, "spec").get("type") or "ClusterIP")),
    Column("CLUSTER-IP", lambda o, _: str(_section(o, "spec").get("clusterIP") or "<none>")),
    Column("EXTERNAL-IP", lambda o, _: ",".join(_section(o, "spec").get("externalIPs") or []) or "<none>"),
    Column("PORT(S)", lambda o, _: _service_ports(o)),
    _AGE,
    Column("SELECTOR", lambda o, _: _labels_text(_section(o, "spec").get("selector")), wide=True),
)


def _hpa_targets(obj: KubeObject) -> str:
    """kubectl's TARGETS: ``cpu: 40%/80%`` per metric, ``<unknown>`` for a current value not yet measured."""
    current: dict[str, dict[str, Any]] = {}
    for metric in _section(obj, "status").get("currentMetrics") or []:
        resource = metric.get("resource") if isinstance(metric, dict) else None
        if isinstance(resource, dict):
            current[str(resource.get("name"))] = _section(resource, "current")
    shown = []
    for metric in _section(obj, "spec").get("metrics") or []:
        if not isinstance(metric, dict):
            continue
        resource = _section(metric, "resource")
        name = str(resource.get("name", metric.get("type", "?")))
        target = _section(resource, "target")
        now = current.get(name, {})
        if "averageUtilization" in target:
            seen = f"{now['averageUtilization']}%" if "averageUtilization" in now else "<unknown>"
            shown.append(f"{name}: {seen}/{target['averageUtilization']}%")
        else:
            goal = target.get("averageValue", target.get("value", "?"))
            seen = str(now.get("averageValue", now.get("value", "<unknown>")))
            shown.append(f"{name}: {seen}/{goal}")
    if not shown:
        return "<none>"
    return ", ".join(shown[:2]) + (f" + {len(shown) - 2} more..." if len(shown) > 2 else "")


def _hpa_reference(obj: KubeObject) -> str:
    ref = _section(_section(obj, "spec"), "scaleTargetRef")
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


HPA_COLUMNS = (
    _NAME,
    Column("REFERENCE", lambda o, _: _hpa_reference(o)),
    Column("TARGETS", lambda o, _: _hpa_targets(o)),
    Column("MINPODS", lambda o, _: str(_section(o, "spec").get("minReplicas", "<unset>"))),
    Column("MAXPODS", lambda o, _: str(_section(o, "spec").get("maxReplicas", ""))),
    Column("REPLICAS", lambda o, _: str(_int(_section(o, "status").get("currentReplicas")))),
    _AGE,
)


def pod_status_text(pod: KubeObject) -> str:
    """kubectl's STATUS for a pod: an init container's progress, a waiting container's reason, Terminating."""
    status = _section(pod, "status")
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    inits = [s for s in status.get("initContainerStatuses") or [] if isinstance(s, dict)]
    initializing = False
    for index, init in enumerate(inits):
        state = _section(init, "state")
        terminated, waiting = _section(state, "terminated"), _section(state, "waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        initializing = True
        if terminated:
            reason = f"Init:{terminated.get('reason') or 'Error'}"
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(inits)}"
        break
    if not initializing:
        for container in reversed([s for s in status.get("containerStatuses") or [] if isinstance(s, dict)]):
            state = _section(container, "state")
            if _section(state, "waiting").get("reason"):
                reason = str(state["waiting"]["reason"])
            elif _section(state, "terminated").get("reason"):
                reason = str(state["terminated"]["reason"])
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_ready(pod: KubeObject) -> str:
    statuses = [s for s in _section(pod, "status").get("containerStatuses") or [] if isinstance(s, dict)]
    total = len(statuses) or len(_section(pod, "spec").get("containers") or [])
    return f"{sum(bool(s.get('ready')) for s in statuses)}/{total}"


POD_COLUMNS = (
    _NAME,
    Column("READY", lambda o, _: _pod_ready(o)),
    Column("STATUS", lambda o, _: pod_status_text(o)),
    Column("RESTARTS", lambda o, _: str(sum(_int(s.get("restartCount")) for s in _section(o, "status").get("containerStatuses") or []
                                            if isinstance(s, dict)))),
    _AGE,
    Column("IP", lambda o, _: str(_section(o, "status").get("podIP") or "<none>"), wide=True),
    Column("NODE", lambda o, _: str(_section(o, "spec").get("nodeName") or "<none>"), wide=True),
    Column("NOMINATED NODE", lambda o, _: str(_section(o, "status").get("nominatedNodeName") or "<none>"), wide=True),
    Column("READINESS GATES", lambda o, _: "<none>", wide=True),
)

def _quota_pairs(obj: KubeObject, prefix: str | None) -> str:
    """kubectl's REQUEST / LIMIT cells: ``used/hard`` per resource, sorted; ``prefix`` picks the
    ``limits.`` keys (``None``: every other key)."""
    status = _section(obj, "status")
    hard, used = _section(status, "hard") or _section(_section(obj, "spec"), "hard"), _section(status, "used")
    keys = sorted(k for k in hard if (k.startswith(prefix) if prefix else not k.startswith("limits.")))
    return ", ".join(f"{k}: {used.get(k, '0')}/{hard[k]}" for k in keys)


RESOURCEQUOTA_COLUMNS = (
    _NAME,
    _AGE,
    Column("REQUEST", lambda o, _: _quota_pairs(o, None)),
    Column("LIMIT", lambda o, _: _quota_pairs(o, "limits.")),
)
SECRET_COLUMNS = (
    _NAME,
    Column("TYPE", lambda o, _: str(o.get("type") or "Opaque")),
    Column("DATA", lambda o, _: str(len(_section(o, "data")))),
    _AGE,
)

# -- custom resources: their CRDs' printer columns -----------------------------------------------------

_READY = ".status.conditions[?(@.type=='Ready')].status"
_REASON = ".status.conditions[?(@.type=='Ready')].reason"
_CREATED = ".metadata.creationTimestamp"
ISVC_COLUMNS = (
    _NAME,
    crd_column("URL", ".status.url"),
    crd_column("Ready", _READY),
    crd_column("Prev", ".status.components.predictor.traffic[?(@.tag=='prev')].percent", "integer"),
    crd_column("Latest", ".status.components.predictor.traffic[?(@.latestRevision==true)].percent", "integer"),
    crd_column("PrevRolledoutRevision", ".status.components.predictor.traffic[?(@.tag=='prev')].revisionName"),
    crd_column("LatestReadyRevision", ".status.components.predictor.traffic[?(@.latestRevision==true)].revisionName"),
    crd_column("Age", _CREATED, "date"),
)
LLMISVC_COLUMNS = (
    _NAME,
    crd_column("URL", ".status.url"),
    crd_column("Ready", _READY),
    crd_column("Reason", _REASON),
    crd_column("Age", _CREATED, "date"),
    crd_column("URLs", ".status.addresses[*].url", wide=True),
)
RUNTIME_COLUMNS = (
    _NAME,
    crd_column("Disabled", ".spec.disabled", "boolean"),
    crd_column("ModelType", ".spec.supportedModelFormats[*].name"),
    crd_column("Containers", ".spec.containers[*].name"),
    crd_column("Age", _CREATED, "date"),
)
KSVC_COLUMNS = (
    _NAME,
    crd_column("URL", ".status.url"),
    crd_column("LatestCreated", ".status.latestCreatedRevisionName"),
    crd_column("LatestReady", ".status.latestReadyRevisionName"),
    crd_column("Ready", _READY),
    crd_column("Reason", _REASON),
)
REVISION_COLUMNS = (
    _NAME,
    crd_column("Config Name", ".metadata.labels['serving\\.knative\\.dev/configuration']"),
    crd_column("Generation", ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']"),
    crd_column("Ready", _READY),
    crd_column("Reason", _REASON),
    crd_column("Actual Replicas", ".status.actualReplicas", "integer"),
    crd_column("Desired Replicas", ".status.desiredReplicas", "integer"),
)
SCALEDOBJECT_COLUMNS = (
    _NAME,
    crd_column("ScaleTargetKind", ".status.scaleTargetKind"),
    crd_column("ScaleTargetName", ".spec.scaleTargetRef.name"),
    crd_column("Min", ".spec.minReplicaCount", "integer"),
    crd_column("Max", ".spec.maxReplicaCount", "integer"),
    crd_column("Triggers", ".spec.triggers[*].type"),
    crd_column("Authentication", ".spec.triggers[*].authenticationRef.name"),
    crd_column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
    crd_column("Active", '.status.conditions[?(@.type=="Active")].status'),
    crd_column("Fallback", '.status.conditions[?(@.type=="Fallback")].status'),
    crd_column("Paused", '.status.conditions[?(@.type=="Paused")].status'),
    crd_column("Age", _CREATED, "date"),
)
HTTPROUTE_COLUMNS = (_NAME, crd_column("Hostnames", ".spec.hostnames"), crd_column("Age", _CREATED, "date"))
# A CRD without printer columns prints NAME and AGE.
INFERENCEPOOL_COLUMNS = (_NAME, _AGE)

KSERVE = "serving.kserve.io"
KNATIVE = "serving.knative.dev"
KINDS: tuple[KindInfo, ...] = (
    KindInfo("InferenceService", "InferenceService", KSERVE, "v1beta1", "inferenceservices", "inferenceservice", ("isvc",),
             ISVC_COLUMNS),
    KindInfo("LLMInferenceService", "LLMInferenceService", KSERVE, "v1alpha2", "llminferenceservices", "llminferenceservice",
             ("llmisvc",), LLMISVC_COLUMNS),
    KindInfo("ServingRuntime", "ServingRuntime", KSERVE, "v1alpha1", "servingruntimes", "servingruntime", (), RUNTIME_COLUMNS),
    KindInfo("ClusterServingRuntime", "ClusterServingRuntime", KSERVE, "v1alpha1", "clusterservingruntimes",
             "clusterservingruntime", (), RUNTIME_COLUMNS, namespaced=False),
    KindInfo(f"Service.{KNATIVE}", "Service", KNATIVE, "v1", "services", "service", ("ksvc", "kservice"), KSVC_COLUMNS),
    KindInfo(f"Revision.{KNATIVE}", "Revision", KNATIVE, "v1", "revisions", "revision", ("rev",), REVISION_COLUMNS),
    KindInfo("Deployment", "Deployment", "apps", "v1", "deployments", "deployment", ("deploy",), DEPLOYMENT_COLUMNS),
    KindInfo("Service", "Service", "", "v1", "services", "service", ("svc",), SERVICE_COLUMNS),
    KindInfo("Pod", "Pod", "", "v1", "pods", "pod", ("po",), POD_COLUMNS, from_pods=True),
    KindInfo("HorizontalPodAutoscaler", "HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers",
             "horizontalpodautoscaler", ("hpa",), HPA_COLUMNS),
    KindInfo("ScaledObject", "ScaledObject", "keda.sh", "v1alpha1", "scaledobjects", "scaledobject", ("so",), SCALEDOBJECT_COLUMNS),
    KindInfo("InferencePool", "InferencePool", "inference.networking.k8s.io", "v1", "inferencepools", "inferencepool",
             ("infpool",), INFERENCEPOOL_COLUMNS),
    KindInfo("HTTPRoute", "HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", "httproute", (), HTTPROUTE_COLUMNS),
    KindInfo("ResourceQuota", "ResourceQuota", "", "v1", "resourcequotas", "resourcequota", ("quota",),
             RESOURCEQUOTA_COLUMNS),
    KindInfo("Secret", "Secret", "", "v1", "secrets", "secret", (), SECRET_COLUMNS),
)


def _alias_table() -> dict[str, KindInfo]:
    table: dict[str, KindInfo] = {}
    # The core group first: a bare "service" is the core Service, as in kubectl; Knative's is "ksvc".
    for info in sorted(KINDS, key=lambda k: k.group != ""):
        for alias in info.aliases():
            table.setdefault(alias, info)
    return table


def resolve_kind(text: str) -> KindInfo:
    """The kind ``text`` names, as kubectl reads it (``isvc``, ``Deployments``, ``services.serving.knative.dev``...)."""
    info = _ALIASES.get(text.strip().lower())
    if info is None:
        raise UnknownKindError(text)
    return info


# -- presenting objects --------------------------------------------------------------------------------


def api_object(info: KindInfo, stored: Mapping[str, Any]) -> KubeObject:
    """A stored object as the API serves it: its API kind (not the store's group-qualified key) and apiVersion."""
    obj = dict(stored)
    api_version = obj.pop("apiVersion", None)
    if not isinstance(api_version, str) or (api_version.rpartition("/")[0]) != info.group:
        api_version = info.api_version
    obj.pop("kind", None)
    return {"apiVersion": api_version, "kind": info.kind, **obj}


# A replica's state -> (pod phase, main container state, STATUS reason kubectl would show).
_REPLICA_STATES: dict[str, tuple[str, str, str | None]] = {
    "Pending": ("Pending", "waiting", "ContainerCreating"),
    "Initializing": ("Pending", "waiting", "PodInitializing"),
    "Starting": ("Running", "running", None),
    "Ready": ("Running", "running", None),
    "CrashLoopBackOff": ("Running", "waiting", "CrashLoopBackOff"),
    "Terminating": ("Running", "running", None),
    "Stopped": ("Succeeded", "terminated", "Completed"),
}


def pod_object(replica: Mapping[str, Any], *, labels: Mapping[str, str] | None = None, node_name: str = "",
               container: str = "kserve-container") -> KubeObject:
    """A replica process of the daemon (an entry of ``Daemon.pods()``) as a Kubernetes Pod.

    The loopback port, pid, replica state and last message have no Pod field: they are annotations under
    ``serving.odh.io/``. ``created`` (epoch seconds), when the replica reports it, is the creationTimestamp.
    """
    state = str(replica.get("state", ""))
    phase, container_state, reason = _REPLICA_STATES.get(state, ("Unknown", "waiting", None))
    message = str(replica.get("message") or "")
    annotations = {
        f"{ODH_ANNOTATION_PREFIX}deployment": str(replica.get("deployment", "")),
        f"{ODH_ANNOTATION_PREFIX}replica-state": state,
    }
    for key, annotation in (("port", "port"), ("pid", "pid"), ("failures_before_ready", "failures-before-ready")):
        if replica.get(key) is not None:
            annotations[f"{ODH_ANNOTATION_PREFIX}{annotation}"] = str(replica[key])
    if message:
        annotations[f"{ODH_ANNOTATION_PREFIX}message"] = message
    metadata: dict[str, Any] = {"name": str(replica.get("name", "")), "namespace": str(replica.get("namespace", "default")),
                                "labels": dict(labels or {}), "annotations": annotations}
    created = replica.get("created")
    if isinstance(created, int | float) and not isinstance(created, bool):
        metadata["creationTimestamp"] = _rfc3339(created)
    if state == "Terminating":
        metadata["deletionTimestamp"] = metadata.get("creationTimestamp", "")
    ready = bool(replica.get("ready"))
    detail: dict[str, Any] = {"reason": reason} if reason else {}
    if message and container_state == "waiting":
        detail["message"] = message
    container_status = {"name": container, "ready": ready, "started": container_state == "running",
                        "restartCount": _int(replica.get("restarts")), "state": {container_state: detail}}
    status: dict[str, Any] = {
        "phase": phase,
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "hostIP": POD_IP,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [container_status],
    }
    if state == "Initializing":  # the storage initializer is fetching the model
        status["initContainerStatuses"] = [{"name": "storage-initializer", "ready": False, "restartCount": 0,
                                            "state": {"running": {}}}]
    spec: dict[str, Any] = {"containers": [{"name": container}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_list(items: Iterable[KubeObject]) -> KubeObject:
    """What ``kubectl get KIND -o json`` prints for a listing."""
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": ""}}


def select(objects: Iterable[KubeObject], namespace: str | None, name: str | None = None) -> list[KubeObject]:
    """``objects`` in ``namespace`` (every namespace when None) called ``name`` (any when None), by namespace and name."""
    chosen = [o for o in objects if (namespace is None or _meta(o).get("namespace", "") == namespace)
              and (name is None or _meta(o).get("name") == name)]
    return sorted(chosen, key=lambda o: (str(_meta(o).get("namespace", "")), str(_meta(o).get("name", ""))))


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def render(self) -> str:
        """Plain aligned columns, as kubectl's tabwriter prints them (no box drawing)."""
        widths = [max([len(h), *(len(r[i]) for r in self.rows)]) for i, h in enumerate(self.headers)]
        lines = []
        for cells in [self.headers, *self.rows]:
            padded = [cell.ljust(max(_MIN_WIDTH, width + _PADDING)) for cell, width in zip(cells[:-1], widths, strict=False)]
            lines.append(("".join(padded) + cells[-1]).rstrip())
        return "\n".join(lines) + "\n"


def table(info: KindInfo, objects: Sequence[KubeObject], now: datetime, *, wide: bool = False,
          all_namespaces: bool = False) -> Table:
    """kubectl's table for ``objects``: its columns for the kind, wide ones with ``wide``, NAMESPACE first with ``-A``."""
    columns = [c for c in info.columns if wide or not c.wide]
    result = Table([c.header for c in columns])
    with_namespace = all_namespaces and info.namespaced
    if with_namespace:
        result.headers.insert(0, "NAMESPACE")
    for obj in objects:
        cells = [c.cell(obj, now) for c in columns]
        result.rows.append([str(_meta(obj).get("namespace", "")), *cells] if with_namespace else cells)
    return result


def no_resources_message(info: KindInfo, namespace: str | None) -> str:
    """What kubectl says on stderr when a listing is empty."""
    if namespace is None or not info.namespaced:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


_ALIASES = _alias_table()
