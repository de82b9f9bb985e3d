"""``odh render``: an InferenceService manifest in, the Kubernetes objects a controller would create out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving.kserve.admission import AdmissionConfig, admit_inference_service
from serving.kserve.reconcile import ReconcileConfig, reconcile
from serving.kserve.runtimes import ResolvedRuntime, builtin_runtimes, resolve_runtime, split_runtimes
from serving.kserve.types import ClusterServingRuntime, ServingRuntime


def render(
    manifest: dict[str, Any],
    runtimes: Iterable[ServingRuntime | ClusterServingRuntime] | None = None,
    *,
    config: ReconcileConfig | None = None,
    previous_status: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Admit, resolve the runtime and reconcile: the desired child objects of ``manifest``.

    ``runtimes`` mixes namespaced and cluster runtimes (namespaced ones outside the InferenceService's
    namespace are ignored); it defaults to the built-in runtimes. A Serverless InferenceService renders
    its Knative Service; ``previous_status`` (its live status, if any) lets a canary split against the
    rolled-out revision. Raises ``AdmissionError``, ``RuntimeResolutionError`` or ``ReconcileError``.
    """
    config = config or ReconcileConfig()
    isvc = admit_inference_service(manifest, config=AdmissionConfig(default_deployment_mode=config.default_deployment_mode))
    runtime: ResolvedRuntime | None = None
    if isvc.spec.predictor.model is not None:
        namespaced, cluster = split_runtimes(builtin_runtimes() if runtimes is None else runtimes, isvc.namespace)
        runtime = resolve_runtime(isvc, namespaced, cluster)
    return reconcile(isvc, runtime, config, previous_status)
