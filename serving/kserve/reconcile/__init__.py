"""Reconcilers: an admitted InferenceService plus its runtime in, the desired child objects out.

One function per deployment mode; ``reconcile`` dispatches on the (normalised) deployment mode.
"""

from __future__ import annotations

from typing import Any

from serving.errors import ServingError


class ReconcileError(ServingError):
    """The desired objects cannot be produced. ``reason`` is a status reason (CamelCase)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


# Imported after ReconcileError: the reconcilers raise it.
from serving.kserve.admission import deployment_mode  # noqa: E402
from serving.kserve.reconcile.config import ReconcileConfig  # noqa: E402
from serving.kserve.reconcile.serverless import reconcile_serverless  # noqa: E402
from serving.kserve.reconcile.standard import reconcile_standard  # noqa: E402
from serving.kserve.runtimes import ResolvedRuntime  # noqa: E402
from serving.kserve.types import InferenceService  # noqa: E402


def reconcile(
    isvc: InferenceService,
    runtime: ResolvedRuntime | None,
    config: ReconcileConfig | None = None,
    previous_status: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The desired child objects for ``isvc`` in its deployment mode.

    ``runtime`` is None only for a custom predictor (``spec.predictor.containers``). ``previous_status``
    is the InferenceService's current status: Serverless canaries split against its latest rolled-out
    revision (None: a first rollout).
    """
    config = config or ReconcileConfig()
    try:
        mode = deployment_mode(isvc, default=config.default_deployment_mode)
    except ValueError as exc:
        raise ReconcileError("InvalidDeploymentMode", str(exc)) from None
    if mode == "Standard":
        return reconcile_standard(isvc, runtime, config)
    if mode == "Knative":
        return reconcile_serverless(isvc, runtime, config, previous_status)
    raise ReconcileError(
        "DeploymentModeNotSupported",
        f"deployment mode {mode} is not supported; set the annotation serving.kserve.io/deploymentMode to Standard or Serverless",
    )


__all__ = ["ReconcileConfig", "ReconcileError", "reconcile", "reconcile_serverless", "reconcile_standard"]
