"""``retire``: phase 8, remove a deployment and mark the model versions it served retired."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.retire import retire_deployment, retire_versions


@flow(name="retire")
def retire(name: str, namespace: str = "default", state_dir: str | None = None) -> list[str]:
    """Delete the InferenceService and its replicas; tag its versions ``odh.deployment.status=retired``."""
    logger = get_run_logger()
    existed = retire_deployment(name, namespace, state=state_dir)
    versions = retire_versions(name, namespace, state=state_dir)
    retired = [f"{v.name}/{v.version}" for v in versions]
    logger.info("retire: %s/%s %s; versions retired: %s", namespace, name,
                "deleted" if existed else "was already gone", ", ".join(retired) or "none")
    create_markdown_artifact(
        key=f"retire-{namespace}-{name}".lower(),
        markdown=f"# {namespace}/{name} retired\n\nVersions marked retired: {', '.join(retired) or 'none'}",
    )
    return retired
