"""Run a served flow through the Prefect REST API, as the UI does, and follow it to its end.

Plain httpx, no Prefect import: the CLI stays quick to start, and the run itself happens in the flow worker
that is already warm. Used by ``odh deploy`` and ``odh rollout`` when a Prefect server runs for the state
directory.

    outcome = run_flow_via_api("http://127.0.0.1:4200/api", "deploy-model", {"model_uri": ..., "name": "iris"},
                               run_name="iris", on_progress=print)
    outcome.state_type   # "COMPLETED", "FAILED", "CRASHED", "CANCELLED"
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
POLL_S = 0.1
RETRY_STATUS = frozenset({429, 502, 503})
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
NO_WORKER_NOTE_S = 15.0  # a run still Scheduled this long: say that no worker may be serving it


class FlowClientError(RuntimeError):
    """The run could not be created or followed: the message says what and what to do."""


@dataclass(frozen=True)
class FlowRunOutcome:
    flow_run_id: str
    state_type: str  # COMPLETED, FAILED, CRASHED, CANCELLED
    state_name: str
    message: str
    ui_url: str

    @property
    def ok(self) -> bool:
        return self.state_type == "COMPLETED"


def run_flow_via_api(
    api_url: str,
    flow_name: str,
    parameters: dict[str, Any],
    *,
    run_name: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    timeout: float = 900,
) -> FlowRunOutcome:
    """Create a run of the deployment ``flow_name/flow_name`` with ``parameters`` and wait for its final state.

    ``on_progress`` gets one line per task run that finishes (``upload``, ``register``...) and a note when no
    worker has picked the run up for a while. Raises FlowClientError when the deployment is unknown, the
    parameters are refused, or the run is not over within ``timeout`` seconds (it goes on in the worker).
    """
    api = api_url.rstrip("/")
    with httpx.Client(base_url=api, timeout=30.0) as client:
        deployment = _call(client, "GET", f"/deployments/name/{flow_name}/{flow_name}",
                           not_found=f"the Prefect server at {api} has no deployment {flow_name}/{flow_name}: "
                                     "`odh up` serves the flows (or run `odh flows serve` against this server)")
        body: dict[str, Any] = {"parameters": parameters, "idempotency_key": str(uuid.uuid4())}
        if run_name:
            body["name"] = run_name
        run = _call(client, "POST", f"/deployments/{deployment['id']}/create_flow_run", json=body)
        run_id = str(run["id"])
        ui_url = f"{api.removesuffix('/api')}/runs/flow-run/{run_id}"
        return _follow(client, run_id, ui_url, on_progress or (lambda line: None), timeout)


def _follow(client: httpx.Client, run_id: str, ui_url: str, on_progress: Callable[[str], None],
            timeout: float) -> FlowRunOutcome:
    started = time.monotonic()
    reported: set[str] = set()
    noted = False
    while True:
        run = _call(client, "GET", f"/flow_runs/{run_id}")
        state = run.get("state") or {}
        state_type = str(state.get("type", "SCHEDULED"))
        _report_tasks(client, run_id, reported, on_progress)
        if state_type in FINAL_STATES:
            return FlowRunOutcome(run_id, state_type, str(state.get("name", state_type.title())),
                                  str(state.get("message") or ""), ui_url)
        waited = time.monotonic() - started
        if state_type == "SCHEDULED" and waited > NO_WORKER_NOTE_S and not noted:
            noted = True
            on_progress(f"the run is still waiting for a flow worker after {waited:.0f}s "
                        "(`odh up` starts one; `odh flows serve` runs one in the foreground)")
        if waited > timeout:
            raise FlowClientError(f"flow run {run.get('name')} is still {state.get('name', state_type)} after "
                                  f"{timeout:g}s; follow it at {ui_url}")
        time.sleep(POLL_S)


def _report_tasks(client: httpx.Client, run_id: str, reported: set[str], on_progress: Callable[[str], None]) -> None:
    """One line per task run that reached a final state since the last look, in the order they started."""
    task_runs = _call(client, "POST", "/task_runs/filter",
                      json={"flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"})
    for task_run in task_runs:
        state = task_run.get("state") or {}
        if task_run["id"] in reported or state.get("type") not in FINAL_STATES:
            continue
        reported.add(task_run["id"])
        line = task_label(str(task_run.get("name", "")))
        if state.get("type") != "COMPLETED":
            line += f" {state.get('name')}: {state.get('message') or ''}".rstrip(": ")
        elif isinstance(task_run.get("total_run_time"), int | float):  # seconds, as the API serialises a timedelta
            line += f" ({task_run['total_run_time']:.2f}s)"
        on_progress(line)


def task_label(task_run_name: str) -> str:
    """``register-service-1a2`` -> ``register-service``: Prefect names a task run after its task plus a short key."""
    base, sep, key = task_run_name.rpartition("-")
    return base if sep and base and 0 < len(key) <= 3 and key.isalnum() else task_run_name


def _call(client: httpx.Client, method: str, path: str, *, json: Any = None, not_found: str | None = None) -> Any:
    """One API call; a busy server (503 when its SQLite is locked, 429, 502) or a dropped connection is retried
    with backoff, as Prefect's own client does. Safe for the one POST that creates: it carries an idempotency key."""
    delays = iter(RETRY_DELAYS_S)
    while True:
        try:
            response = client.request(method, path, json=json)
        except httpx.TransportError as exc:
            delay = next(delays, None)
            if delay is None:
                raise FlowClientError(f"the Prefect API at {client.base_url} did not answer {method} {path}: {exc}") from exc
        else:
            delay = next(delays, None) if response.status_code in RETRY_STATUS else None
            if delay is None:
                break
        time.sleep(delay)
    if response.status_code == 404 and not_found:
        raise FlowClientError(not_found)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise FlowClientError(f"the Prefect API refused {method} {path} ({response.status_code}): {detail}")
    return response.json()
