"""Names, labels and URLs KServe gives an InferenceService's predictor objects."""

from __future__ import annotations

from serving.kserve import template
from serving.kserve.types import InferenceService

# KServe's label keys (constants.InferenceServicePodLabelKey, KServiceComponentLabel).
ISVC_LABEL = "serving.kserve.io/inferenceservice"
COMPONENT_LABEL = "component"
APP_LABEL = "app"
PREDICTOR = "predictor"
CLUSTER_DOMAIN = "cluster.local"


def predictor_name(isvc_name: str) -> str:
    """``{isvc}-predictor``: the Deployment, Service and HPA name in Standard mode."""
    return f"{isvc_name}-{PREDICTOR}"


def predictor_selector(isvc_name: str) -> dict[str, str]:
    """The label that ties the Service and HPA to the predictor pods (KServe's ``app: isvc.<name>``)."""
    return {APP_LABEL: f"isvc.{predictor_name(isvc_name)}"}


def predictor_labels(isvc_name: str) -> dict[str, str]:
    return {ISVC_LABEL: isvc_name, COMPONENT_LABEL: PREDICTOR, **predictor_selector(isvc_name)}


def internal_url(isvc: InferenceService, scheme: str = "http") -> str:
    """The in-cluster address of the predictor Service (``status.address.url``)."""
    return f"{scheme}://{predictor_name(isvc.name)}.{isvc.namespace}.svc.{CLUSTER_DOMAIN}"


def external_url(
    isvc: InferenceService,
    ingress_domain: str,
    domain_template: str = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}",
    scheme: str = "http",
    component: str | None = None,
) -> str:
    """The public URL from the ingress ``domainTemplate``; ``component`` gives the per-component host."""
    name = predictor_name(isvc.name) if component == PREDICTOR else isvc.name
    host = template.render(domain_template, {"Name": name, "Namespace": isvc.namespace, "IngressDomain": ingress_domain})
    return f"{scheme}://{host}"
