"""The lifecycle as Prefect flows, and the Python API to start them.

    from flows import deploy_model, operate, retire, rollout
    deployment = deploy_model("model.joblib", name="iris")   # phases 1-6; returns a Deployment
    print(deployment.url)                                    # a base URL the kserve SDK accepts
    rollout("model-v2.joblib", name="iris")                  # a canary, watched, then promoted or rolled back
    operate()                                                # phase 7: health, metrics, alerts, the overview
    retire("iris")                                           # phase 8

Importing this package sets Prefect's environment for the state directory (``$ODH_STATE_DIR`` or
``~/.odh``) before Prefect is imported, as the ``odh`` command does: see ``flows.prefect_env``.
"""

from flows.prefect_env import configure_prefect
from serving.config import state_dir

configure_prefect(state_dir())

# Prefect is imported after its environment is set.
from flows.deploy_model import Deployment, deploy_model  # noqa: E402
from flows.on_new_version import on_new_model_version, poll_model_versions  # noqa: E402
from flows.operate import OperateReport, operate  # noqa: E402
from flows.retire import retire  # noqa: E402
from flows.rollout import RolloutResult, rollout  # noqa: E402

__all__ = [
    "Deployment",
    "OperateReport",
    "RolloutResult",
    "configure_prefect",
    "deploy_model",
    "on_new_model_version",
    "operate",
    "poll_model_versions",
    "retire",
    "rollout",
]
