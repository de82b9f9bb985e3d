"""Serve the lifecycle flows as Prefect deployments, so they can be started from the Prefect UI.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

The same as ``odh flows serve``: the flows of ``deployments.catalog`` become deployments with typed
parameters, descriptions and schedules, and their runs execute in this process (``deployments.flow_worker``),
which imports the flows once instead of spawning a fresh interpreter per run as Prefect's ``serve()`` does.
"""

from __future__ import annotations

import sys

from deployments.flow_worker import main as worker_main


def main() -> None:
    worker_main(sys.argv[1:])


if __name__ == "__main__":
    main()
