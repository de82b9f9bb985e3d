"""The lifecycle as Prefect flows, and the Python API to start them.

    from flows import deploy_model, retire
    deployment = deploy_model("model.joblib", name="iris")   # phases 1-6; returns a Deployment
    print(deployment.url)                                    # a base URL the kserve SDK accepts
    retire("iris")                                           # phase 8

Importing this package sets Prefect's environment for the state directory (``$ODH_STATE_DIR`` or
``~/.odh``) before Prefect is imported, as the ``odh`` command does: see ``flows.prefect_env``.
"""

from flows.prefect_env import configure_prefect
from serving.config import state_dir

configure_prefect(state_dir())

from flows.deploy_model import Deployment, deploy_model  # noqa: E402 - Prefect is imported after its environment
from flows.retire import retire  # noqa: E402

__all__ = ["Deployment", "configure_prefect", "deploy_model", "retire"]
