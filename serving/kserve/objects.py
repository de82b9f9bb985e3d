"""The kinds users apply, and one admission entry point for all of them.

A platform stores only what passed here: anything else (a Deployment, a typo'd kind, a missing kind) is
refused naming ``kind`` and listing the kinds it takes. The children the reconcilers create
(Deployments, Services, HPAs, InferencePools, HTTPRoutes) are the platform's own, never applied by users.
"""

from __future__ import annotations

from typing import Any

from serving.errors import AdmissionError, FieldError
from serving.kserve.admission import AdmissionConfig, admit_inference_service, admit_serving_runtime, name_of
from serving.kserve.llmisvc import KIND as LLMISVC
from serving.kserve.llmisvc import admit_llm_inference_service

ISVC = "InferenceService"
USER_KINDS: tuple[str, ...] = (ISVC, LLMISVC, "ServingRuntime", "ClusterServingRuntime")


def kind_error(kind: Any) -> FieldError | None:
    """Why ``kind`` cannot be applied, or None when it can."""
    if isinstance(kind, str) and kind in USER_KINDS:
        return None
    got = "is missing" if kind is None or kind == "" else f"{kind!r} is not a kind you can apply"
    return FieldError("kind", f"{got}; accepted kinds: {', '.join(USER_KINDS)}")


def admit_object(obj: Any, *, max_replicas: int | None = None, config: AdmissionConfig | None = None) -> dict[str, Any]:
    """Default and validate any user object; returns the admitted plain object.

    ``max_replicas`` is the platform's replica limit (None: none); ``config`` the platform's admission
    defaults (its default deployment mode). Raises ``AdmissionError`` naming
    every rejected field; an unknown kind is refused before anything else is looked at.
    """
    if not isinstance(obj, dict):
        raise AdmissionError([FieldError("(root)", "must be a mapping (a Kubernetes object)")])
    kind = obj.get("kind")
    refused = kind_error(kind)
    if refused is not None:
        raise AdmissionError([refused], kind=kind if isinstance(kind, str) else "", name=name_of(obj))
    if kind == ISVC:
        return admit_inference_service(obj, max_replicas=max_replicas, config=config).to_dict()
    if kind == LLMISVC:
        return admit_llm_inference_service(obj, max_replicas=max_replicas)
    return admit_serving_runtime(obj).to_dict()
