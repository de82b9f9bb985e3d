"""Reconcilers: an admitted InferenceService plus its runtime in, the desired child objects out.

One function per deployment mode; ``reconcile`` dispatches on the (normalised) deployment mode.
"""

from __future__ import annotations

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
from serving.kserve.reconcile.standard import reconcile_standard  # noqa: E402
from serving.kserve.runtimes import ResolvedRuntime  # noqa: E402
from serving.kserve.types import InferenceService  # noqa: E402


def reconcile(isvc: InferenceService, runtime: ResolvedRuntime | None, config: ReconcileConfig | None = None) -> list[dict]:
    """The desired child objects for ``isvc`` in its deployment mode.

    ``runtime`` is None only for a custom predictor (``spec.predictor.containers``).
    """
    config = config or ReconcileConfig()
    try:
        mode = deployment_mode(isvc, default=config.default_deployment_mode)
    except ValueError as exc:
        raise ReconcileError("InvalidDeploymentMode", str(exc)) from None
    if mode == "Standard":
        return reconcile_standard(isvc, runtime, config)
    raise ReconcileError(
        "DeploymentModeNotSupported",
        f"deployment mode {mode} is not supported yet; set the annotation serving.kserve.io/deploymentMode: Standard",
    )


__all__ = ["ReconcileConfig", "ReconcileError", "reconcile", "reconcile_standard"]
