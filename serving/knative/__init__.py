"""The embedded Knative Serving controller as pure functions: Service -> Revisions -> Route -> status.

Objects in, objects out, no I/O: the platform daemon stores what these return and passes back what it
observed. Naming, labels, conditions, reasons and messages follow knative/serving so that ``kubectl``
users and Knative tooling read our objects as theirs.
"""

from serving.knative.names import API_VERSION, GROUP, REVISION_KIND, SERVICE_KIND
from serving.knative.revisions import (
    GCConfig,
    RevisionNameTaken,
    collectable,
    configuration_generation,
    desired_revision,
    latest_created,
    make_revision,
    revisions_of,
    routing_updates,
)
from serving.knative.status import RevisionObservation, is_ready, latest_ready_revision, revision_status, service_status
from serving.knative.traffic import TrafficError, TrafficTarget, referenced_revisions, resolve_traffic, spec_traffic, validate_traffic

__all__ = [
    "API_VERSION",
    "GROUP",
    "REVISION_KIND",
    "SERVICE_KIND",
    "GCConfig",
    "RevisionNameTaken",
    "RevisionObservation",
    "TrafficError",
    "TrafficTarget",
    "collectable",
    "configuration_generation",
    "desired_revision",
    "is_ready",
    "latest_created",
    "latest_ready_revision",
    "make_revision",
    "referenced_revisions",
    "resolve_traffic",
    "revision_status",
    "revisions_of",
    "routing_updates",
    "service_status",
    "spec_traffic",
    "validate_traffic",
]
