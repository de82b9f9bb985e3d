"""The README's first command: deploy KServe's iris sample through the deploy flow and ask it twice.

    make demo            # or: .venv/bin/python -m deployments.demo [--keep]

Starts the embedded platform (state in ./.odh unless ODH_STATE_DIR says otherwise), runs the
``deploy-model`` flow on ``tests/fixtures/kserve-iris/model.joblib``, sends KServe's own V1 and V2 iris
requests through the gateway and prints the answers (KServe documents ``[1, 1]`` for both). The
platform is stopped at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

import httpx
from rich.console import Console

from serving.config import DEFAULT_GATEWAY_PORT, STATE_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
IRIS = REPO / "tests" / "fixtures" / "kserve-iris"
console = Console()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the platform running afterwards")
    args = parser.parse_args()
    state = Path(os.environ.get(STATE_DIR_ENV) or REPO / ".odh").resolve()
    os.environ[STATE_DIR_ENV] = str(state)

    from flows.prefect_env import configure_prefect
    from serving.platform.local import daemon_info, start_daemon, stop_daemon

    configure_prefect(state)
    port = DEFAULT_GATEWAY_PORT if daemon_info(state) or _port_free(DEFAULT_GATEWAY_PORT) else 0
    started = time.monotonic()
    with console.status("starting the embedded platform..."):
        info = start_daemon(state, port)
    console.print(f"[green]platform up[/]: gateway {info['gateway']}, state {state}")
    try:
        from deployments.cli import _show_flow_progress
        from flows import deploy_model

        with console.status("running the deploy-model flow (first run sets up Prefect and MLflow)...") as status:
            _show_flow_progress(status)
            result = deploy_model(model_uri=str(IRIS / "model.joblib"), name="iris", state_dir=str(state))
        console.print(f"[green]iris is Ready[/] in {time.monotonic() - started:.1f}s at {result.url} "
                      f"(registered model {result.model_name} version {result.model_version})")
        for protocol, body_file, path in (
            ("V1", "iris-input-v1.json", "/v1/models/iris:predict"),
            ("V2", "iris-input-v2.json", "/v2/models/iris/infer"),
        ):
            body = json.loads((IRIS / body_file).read_text())
            answer = httpx.post(result.url + path, json=body, timeout=30).raise_for_status().json()
            predictions = answer["predictions"] if protocol == "V1" else answer["outputs"][0]["data"]
            console.print(f"{protocol} {path} -> predictions {predictions}")
    finally:
        if not args.keep:
            with console.status("stopping the platform..."):
                stop_daemon(state)
            console.print("platform stopped (run with --keep to leave it up; `odh down` stops it)")


if __name__ == "__main__":
    main()
