"""The one list of flows the platform serves as Prefect deployments (``odh up``, ``odh flows serve``,
``python -m deployments.serve``).

Pure data: no Prefect import, so the CLI can read names and schedules without paying for it. Each flow is
named by import path and loaded only by the process that runs it (``load``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TAGS: tuple[str, ...] = ("odh", "lifecycle")
OPERATE_INTERVAL_ENV = "ODH_OPERATE_INTERVAL_S"
POLL_INTERVAL_ENV = "ODH_POLL_INTERVAL_S"
DEFAULT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class ServedFlow:
    """One flow served as the deployment ``<name>/<name>``; ``interval_env`` names its schedule's setting."""

    import_path: str  # "package.module:attribute"
    name: str  # the flow's name, which is also the deployment's name
    description: str
    tags: tuple[str, ...] = TAGS
    interval_env: str | None = None  # set: an interval schedule, seconds from this variable (default 60)

    @property
    def full_name(self) -> str:
        """``flow/deployment``, as ``prefect deployment run`` and the REST API's by-name lookup spell it."""
        return f"{self.name}/{self.name}"

    def interval_seconds(self, env: Mapping[str, str] | None = None) -> float | None:
        """The schedule's interval, or None for a flow that runs only when asked."""
        if self.interval_env is None:
            return None
        raw = (os.environ if env is None else env).get(self.interval_env, "").strip()
        if not raw:
            return DEFAULT_INTERVAL_S
        try:
            seconds = float(raw)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            raise ValueError(f"{self.interval_env}={raw!r}: expected a number of seconds above 0, e.g. {self.interval_env}=60")
        return seconds

    def load(self) -> Any:
        """The flow object (imports its module); ImportError/AttributeError when it is not there."""
        module, _, attribute = self.import_path.partition(":")
        return getattr(importlib.import_module(module), attribute)


CATALOG: tuple[ServedFlow, ...] = (
    ServedFlow("flows.deploy_model:deploy_model", "deploy-model",
               "Phases 1-6: upload, register, configure, deploy, initialize and register the service of one model."),
    ServedFlow("flows.rollout:rollout", "rollout",
               "A new version as a canary, watched against the stable one, then promoted (the alias moves) "
               "or rolled back with the reason."),
    ServedFlow("flows.operate:operate", "operate",
               "Phase 7: health, traffic, errors and latency of every deployment; metrics to MLflow, alerts, "
               "and the serving-overview artifact.",
               interval_env=OPERATE_INTERVAL_ENV),
    ServedFlow("flows.retire:retire", "retire",
               "Phase 8: drain and delete a deployment, remove its alias, mark its versions retired."),
    ServedFlow("flows.on_new_version:on_new_model_version", "on-new-model-version",
               "A new registry version (webhook, poll or CI): roll it out as the deployment's policy says."),
    ServedFlow("flows.on_new_version:poll_model_versions", "poll-model-versions",
               "For registries without webhooks: look for new model versions and start on-new-model-version.",
               interval_env=POLL_INTERVAL_ENV),
)


def by_name(name: str) -> ServedFlow:
    """The catalog entry for a flow (or deployment) name; ValueError naming the known ones otherwise."""
    for served in CATALOG:
        if served.name == name:
            return served
    raise ValueError(f"no served flow is called {name!r}; served flows: {', '.join(s.name for s in CATALOG)}")
