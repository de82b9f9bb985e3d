"""Serve the lifecycle flows as Prefect deployments, so they can be started from the Prefect UI.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

Each flow appears with typed parameters; ``deploy-model`` takes a model URI and a name, ``retire`` a name.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment

from flows import deploy_model, retire


def _deployment(flow: Flow[..., Any], name: str, description: str) -> RunnerDeployment:
    # ``to_deployment`` dispatches on the caller: from inside an event loop it returns a coroutine, which
    # ``serve`` cannot take. This module runs it outside one; say so plainly if that ever changes.
    made = flow.to_deployment(name=name, tags=["odh", "lifecycle"], description=description)
    if not isinstance(made, RunnerDeployment):
        raise TypeError(f"{name}: run deployments.serve outside an event loop (to_deployment returned {type(made).__name__})")
    return made


def main() -> None:
    serve(
        _deployment(deploy_model, "deploy-model", "Phases 1-6: upload, register, configure, deploy, initialize, register service."),
        _deployment(retire, "retire", "Phase 8: retire a deployment."),
    )


if __name__ == "__main__":
    main()
