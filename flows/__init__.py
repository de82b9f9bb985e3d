"""The lifecycle as Prefect flows, and the Python API to start them.

    from flows import deploy_model, retire
    deployment = deploy_model("model.joblib", name="iris")   # phases 1-6; returns a Deployment
    print(deployment.url)                                    # a base URL the kserve SDK accepts
    retire("iris")                                           # phase 8
"""

from flows.deploy_model import Deployment, deploy_model
from flows.retire import retire

__all__ = ["Deployment", "deploy_model", "retire"]
