"""Serve the lifecycle flows as Prefect deployments, so they can be started from the Prefect UI.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

Each flow appears with typed parameters; ``deploy-model`` takes a model URI and a name, ``retire`` a name.
"""

from __future__ import annotations

from prefect import serve

from flows import deploy_model, retire


def main() -> None:
    serve(
        deploy_model.to_deployment(name="deploy-model", tags=["odh", "lifecycle"],
                                   description="Phases 1-6: upload, register, configure, deploy, initialize, register service."),
        retire.to_deployment(name="retire", tags=["odh", "lifecycle"], description="Phase 8: retire a deployment."),
    )


if __name__ == "__main__":
    main()
