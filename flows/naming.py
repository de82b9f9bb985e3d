"""Flow runs are named after what they act on (``iris-v3``), so the Prefect UI's run list reads at a glance.

A flow names its run up front with ``flow_run_name`` from its parameters, and once it knows more (the
registry version comes out of ``register``) it calls ``name_run`` to say so.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectException
from prefect.runtime import flow_run


def run_name(name: str, version: str | None = None) -> str:
    """``iris-v3``; ``iris`` while the version is not known yet."""
    return f"{name}-v{version}" if version else name


def name_run(name: str) -> None:
    """Rename the flow run in progress; a failure to rename is logged, never fails the run."""
    run_id = flow_run.get_id()
    if run_id is None or flow_run.get_name() == name:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(UUID(run_id), name=name)
    except (PrefectException, OSError) as exc:  # the name is a convenience: the work goes on
        get_run_logger().warning("could not rename the flow run to %s: %s", name, exc)
