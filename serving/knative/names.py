"""Knative Serving's API names: group, kinds, label and annotation keys, and how children are named.

The keys are Knative's own (``knative.dev/serving/pkg/apis/serving/register.go``) so that objects we make
read the same to ``kubectl`` and to Knative tooling.
"""

from __future__ import annotations

import hashlib

GROUP = "serving.knative.dev"
API_VERSION = f"{GROUP}/v1"
SERVICE_KIND = "Service"
REVISION_KIND = "Revision"

SERVICE_LABEL = f"{GROUP}/service"
SERVICE_UID_LABEL = f"{GROUP}/serviceUID"
CONFIGURATION_LABEL = f"{GROUP}/configuration"
CONFIGURATION_GENERATION_LABEL = f"{GROUP}/configurationGeneration"
ROUTE_LABEL = f"{GROUP}/route"
ROUTING_STATE_LABEL = f"{GROUP}/routingState"
ROUTING_STATE_MODIFIED_ANNOTATION = f"{GROUP}/routingStateModified"
ROUTES_ANNOTATION = f"{GROUP}/routes"
CREATOR_ANNOTATION = f"{GROUP}/creator"
UPDATER_ANNOTATION = f"{GROUP}/lastModifier"
NO_GC_ANNOTATION = f"{GROUP}/no-gc"

# Revision routing states (v1.RoutingState): pending until the route has looked at it, active while
# traffic references it, reserve once no route does (then it may be garbage collected).
ROUTING_PENDING = "pending"
ROUTING_ACTIVE = "active"
ROUTING_RESERVE = "reserve"

# Kubernetes names are DNS labels: 63 characters at most.
_LONGEST = 63
_MD5_HEX = 32


def child_name(parent: str, suffix: str) -> str:
    """Knative's ``kmeta.ChildName``: ``parent + suffix``, or when too long a truncated parent plus the
    md5 of the whole parent (so distinct long parents stay distinct)."""
    if len(parent) <= _LONGEST - len(suffix):
        return parent + suffix
    head = _LONGEST - _MD5_HEX
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    if head - len(suffix) <= 0:
        whole = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        name = parent[:head] + whole
        name += suffix[: max(0, _LONGEST - len(name))]
        return name.rstrip("-")
    return parent[: head - len(suffix)] + digest + suffix


def revision_name(service: str, configuration_generation: int) -> str:
    """``{service}-{generation:05d}``: the name Knative gives a Revision the template does not name."""
    return child_name(service, f"-{configuration_generation:05d}")


def tag_host_name(name: str, tag: str) -> str:
    """Knative's default ``tag-template`` ``{{.Tag}}-{{.Name}}``: the host label of a tagged target."""
    return f"{tag}-{name}" if tag else name


def route_url(name: str, namespace: str, domain: str, tag: str = "", scheme: str = "http") -> str:
    """The external URL from Knative's default ``domain-template`` ``{{.Name}}.{{.Namespace}}.{{.Domain}}``."""
    return f"{scheme}://{tag_host_name(name, tag)}.{namespace}.{domain}"


def cluster_local_url(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """``status.address.url``: the in-cluster address of a Route."""
    return f"http://{name}.{namespace}.svc.{cluster_domain}"
