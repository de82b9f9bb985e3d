"""Runtime resolution: which ServingRuntime serves a predictor, by KServe's own rules.

An explicit ``model.runtime`` names the runtime (namespace first, then cluster). Otherwise KServe's
GetSupportingRuntimes: keep runtimes that are enabled, single-model, support ``mt:<format>[:<version>]``
through an autoSelect format, and speak the predictor's protocol (unset = v1); sort each group by lowest
protocol, newest creationTimestamp, name, then stable-sort by the format's priority (higher first, unset
last) so priority decides first; namespace runtimes come before cluster runtimes; take the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from serving.errors import RuntimeResolutionError
from serving.kserve.types import (
    ClusterServingRuntime,
    InferenceService,
    ModelSpec,
    ServingRuntime,
    ServingRuntimeSpec,
)

BUILTIN_RUNTIMES_DIR = Path(__file__).resolve().parents[2] / "infra" / "runtimes"

# KServe's GetProtocolVersionInt: lower is preferred; anything else (or no list at all) is Unknown.
_PROTOCOL_RANK = {"v1": 0, "v2": 1, "grpc-v1": 2, "grpc-v2": 3}
_UNKNOWN_PROTOCOL = 4
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ResolvedRuntime:
    name: str
    kind: Literal["ServingRuntime", "ClusterServingRuntime"]
    spec: ServingRuntimeSpec


def resolve_runtime(
    isvc: InferenceService,
    namespace_runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
) -> ResolvedRuntime:
    """Pick the runtime for ``isvc``'s predictor model, or raise ``RuntimeResolutionError``.

    ``namespace_runtimes`` are those in the InferenceService's namespace (the caller filters).
    """
    model = isvc.spec.predictor.model
    if model is None:
        raise RuntimeResolutionError(
            "InvalidPredictorSpec",
            f"InferenceService {isvc.name!r} has no predictor model to pick a runtime for (custom containers need none)",
        )
    multinode = isvc.spec.predictor.worker_spec is not None
    if model.runtime:
        return _explicit(model, multinode, namespace_runtimes, cluster_runtimes)

    for group, kind in ((namespace_runtimes, "ServingRuntime"), (cluster_runtimes, "ClusterServingRuntime")):
        candidates = [rt for rt in _sorted(group) if _eligible(rt.spec, model, multinode)]
        # Stable sort keeps the protocol/age/name order among equal priorities.
        candidates.sort(key=lambda rt: _priority_key(rt.spec, model.model_format.name))
        if candidates:
            return ResolvedRuntime(candidates[0].name, kind, candidates[0].spec)  # type: ignore[arg-type]
    raise RuntimeResolutionError("NoSupportingRuntime", f"no runtime found to support {_describe(model)}")


def _explicit(
    model: ModelSpec,
    multinode: bool,
    namespace_runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
) -> ResolvedRuntime:
    name = model.runtime
    found: ServingRuntime | None = next((rt for rt in namespace_runtimes if rt.name == name), None)
    kind = "ServingRuntime"
    if found is None:
        found = next((rt for rt in cluster_runtimes if rt.name == name), None)
        kind = "ClusterServingRuntime"
    if found is None:
        raise RuntimeResolutionError(
            "RuntimeNotRecognized",
            f"waiting for runtime {name!r} to become available: no ServingRuntime or ClusterServingRuntime has that name",
        )
    spec = found.spec
    if spec.disabled:
        raise RuntimeResolutionError("RuntimeDisabled", f"runtime {name!r} is disabled; enable it or choose another runtime")
    if spec.multi_model:
        raise RuntimeResolutionError(
            "NoSupportingRuntime", f"runtime {name!r} is a multi-model (ModelMesh) runtime and cannot serve a single model"
        )
    # An explicitly named runtime supports a format whether or not autoSelect is set (KServe).
    if not _supports_format(spec, model, require_auto_select=False):
        raise RuntimeResolutionError(
            "NoSupportingRuntime", f"runtime {name!r} does not support {_format_label(model)} ({_describe(model)})"
        )
    if not _supports_protocol(spec, _protocol(model)):
        raise RuntimeResolutionError(
            "NoSupportingRuntime", f"runtime {name!r} does not support protocol {_protocol(model)} ({_describe(model)})"
        )
    if (spec.worker_spec is not None) != multinode:
        raise RuntimeResolutionError(
            "NoSupportingRuntime", f"runtime {name!r} {'needs' if spec.worker_spec is not None else 'does not support'} a workerSpec"
        )
    return ResolvedRuntime(found.name, kind, spec)  # type: ignore[arg-type]


def _protocol(model: ModelSpec) -> str:
    return model.protocol_version or "v1"


def _format_label(model: ModelSpec) -> str:
    fmt = model.model_format
    return f"mt:{fmt.name}:{fmt.version}" if fmt.version is not None else f"mt:{fmt.name}"


def _describe(model: ModelSpec) -> str:
    fmt = model.model_format
    version = fmt.version if fmt.version is not None else "(any)"
    return f"model format {fmt.name!r} version {version} with protocol {_protocol(model)}"


def _supports_format(spec: ServingRuntimeSpec, model: ModelSpec, *, require_auto_select: bool) -> bool:
    """KServe's RuntimeSupportsModel: the model's ``mt:`` label is among the runtime's labels."""
    labels: set[str] = set()
    for fmt in spec.supported_model_formats or []:
        if require_auto_select and not fmt.auto_select:
            continue
        labels.add(f"mt:{fmt.name}")
        if fmt.version is not None:
            labels.add(f"mt:{fmt.name}:{fmt.version}")
    return _format_label(model) in labels


def _supports_protocol(spec: ServingRuntimeSpec, protocol: str) -> bool:
    """KServe's IsProtocolVersionSupported: a runtime listing none speaks v1 and v2."""
    if not spec.protocol_versions:
        return protocol in ("v1", "v2")
    return protocol in spec.protocol_versions


def _eligible(spec: ServingRuntimeSpec, model: ModelSpec, multinode: bool) -> bool:
    return (
        not spec.disabled
        and not spec.multi_model
        and _supports_format(spec, model, require_auto_select=True)
        and _supports_protocol(spec, _protocol(model))
        and (spec.worker_spec is not None) == multinode
    )


def _protocol_rank(protocols: list[str] | None) -> int:
    if not protocols:
        return _UNKNOWN_PROTOCOL
    return min(_PROTOCOL_RANK.get(p, _UNKNOWN_PROTOCOL) for p in protocols)


def _created(rt: ServingRuntime) -> datetime:
    stamp = rt.metadata.creation_timestamp
    if stamp is None:
        return _EPOCH
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _sorted(runtimes: Iterable[ServingRuntime]) -> list[ServingRuntime]:
    # Lowest protocol first, then newest, then name: sort by the last key first and rely on stability.
    ordered = sorted(runtimes, key=lambda rt: rt.name)
    ordered.sort(key=_created, reverse=True)
    ordered.sort(key=lambda rt: _protocol_rank(rt.spec.protocol_versions))
    return ordered


def _priority_key(spec: ServingRuntimeSpec, format_name: str) -> tuple[int, int]:
    priority = spec.priority_for(format_name)
    return (1, 0) if priority is None else (0, -priority)


# --------------------------------------------------------------------------- loading


def _parse_runtime(doc: dict[str, Any]) -> ServingRuntime | ClusterServingRuntime:
    if doc.get("kind") == "ClusterServingRuntime":
        return ClusterServingRuntime.model_validate(doc)
    if doc.get("kind") == "ServingRuntime":
        return ServingRuntime.model_validate(doc)
    raise ValueError(f"not a ServingRuntime or ClusterServingRuntime: kind {doc.get('kind')!r}")


def load_runtimes(path: str | Path) -> list[ServingRuntime | ClusterServingRuntime]:
    """Read runtimes from a YAML file (multi-document allowed) or every ``*.yaml``/``*.yml`` in a directory.

    Documents of other kinds are skipped, so a directory of mixed manifests can be pointed at.
    """
    path = Path(path)
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    runtimes: list[ServingRuntime | ClusterServingRuntime] = []
    for file in files:
        with file.open() as handle:
            for doc in yaml.safe_load_all(handle):
                if isinstance(doc, dict) and doc.get("kind") in ("ServingRuntime", "ClusterServingRuntime"):
                    runtimes.append(_parse_runtime(doc))
    return runtimes


def builtin_runtimes() -> list[ClusterServingRuntime]:
    """The ClusterServingRuntimes this project ships (``infra/runtimes/``)."""
    return [rt for rt in load_runtimes(BUILTIN_RUNTIMES_DIR) if isinstance(rt, ClusterServingRuntime)]


def split_runtimes(
    runtimes: Iterable[ServingRuntime | ClusterServingRuntime], namespace: str
) -> tuple[list[ServingRuntime], list[ClusterServingRuntime]]:
    """Split a mixed list into (runtimes in ``namespace``, cluster runtimes).

    A namespaced runtime without a namespace is taken to live in the InferenceService's namespace.
    """
    namespaced: list[ServingRuntime] = []
    cluster: list[ClusterServingRuntime] = []
    for rt in runtimes:
        if isinstance(rt, ClusterServingRuntime):
            cluster.append(rt)
        elif (rt.metadata.namespace or namespace) == namespace:
            namespaced.append(rt)
    return namespaced, cluster
