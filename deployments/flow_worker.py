"""The flow worker: serves the catalog's flows as Prefect deployments and runs their flow runs in this
already-warm process.

    python -m deployments.flow_worker --state-dir ~/.odh      # what `odh up` starts (pid, log in the state dir)
    odh flows serve                                          # the same, in the foreground, any PREFECT_API_URL

Why not Prefect's ``serve()``: it starts every flow run in a freshly spawned interpreter, which imports
Prefect, MLflow and the flows again (~8 s on a loaded 2-core machine) before the first task. Here the
flows are imported once; a run created in the UI, by a schedule or by ``odh deploy`` starts in a thread
of this process within one poll (0.5 s).

What it does, each poll: asks the API for the due SCHEDULED runs of its deployments (which also keeps them
"Ready" in the UI), moves each to Pending (the server refuses a run another worker took) and runs it with
Prefect's own engine (``run_flow``) in a thread, a bounded number at once. A flow that raises ends Failed
through the engine; anything that escapes the engine marks the run Crashed with the error; neither stops the
worker. A run cancelled in the UI is marked Cancelled at once and its thread stops at its next task (the
server refuses task runs of a flow run that is not Running): a Python thread cannot be killed mid-task.
SIGTERM stops polling, waits briefly for runs in flight and marks the rest Crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployments.catalog import CATALOG, ServedFlow

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import FlowRunResponse

log = logging.getLogger("odh.flow_worker")

POLL_INTERVAL_S = 0.5
DEFAULT_LIMIT = 4  # runs at once: a deploy mostly waits on the platform, but the machine has 2 cores
STOP_GRACE_S = 10.0
WORKER_FILE = "flow_worker.json"  # {"pid", "api_url", "ready", "deployments", "missing"} in the state dir


@dataclass(frozen=True)
class Served:
    """A flow of the catalog, loaded and applied as a deployment."""

    entry: ServedFlow
    flow: Flow[..., Any]
    deployment_id: UUID


@dataclass
class _InFlight:
    run_id: UUID
    served: Served
    future: Future[None]
    cancelled: bool = False


@dataclass
class FlowWorker:
    """Polls for due runs of ``served`` deployments and runs them in threads of this process."""

    served: dict[UUID, Served]
    limit: int = DEFAULT_LIMIT
    poll_interval: float = POLL_INTERVAL_S
    stopping: threading.Event = field(default_factory=threading.Event)
    _in_flight: dict[UUID, _InFlight] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = None

    def run_forever(self) -> None:
        from prefect.client.orchestration import get_client

        self._pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="flow-run")
        log.info("polling for runs of %s every %.1fs (%d at once)",
                 ", ".join(s.entry.name for s in self.served.values()), self.poll_interval, self.limit)
        try:
            with get_client(sync_client=True) as client:
                while not self.stopping.is_set():
                    started = time.monotonic()
                    try:
                        self.poll_once(client)
                    except Exception:  # the API restarting or a hiccup: log it, keep polling
                        log.exception("poll failed; trying again")
                    self.stopping.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))
                self._drain(client)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def poll_once(self, client: SyncPrefectClient) -> None:
        """One round: forget finished runs, honour cancellations, start due runs while slots are free."""
        for run_id in [rid for rid, f in self._in_flight.items() if f.future.done()]:
            del self._in_flight[run_id]
        self._honour_cancellations(client)
        due = client.get_scheduled_flow_runs_for_deployments(
            deployment_ids=list(self.served), scheduled_before=datetime.now(UTC))
        for run in self._skip_superseded(client, due):
            if len(self._in_flight) >= self.limit:
                break
            if run.id in self._in_flight or run.deployment_id not in self.served:
                continue
            served = self.served[run.deployment_id]
            if served.entry.interval_env and any(f.served is served for f in self._in_flight.values()):
                continue  # a scheduled flow runs one at a time; the next due run waits for this one
            self._start(client, run, served)

    def _skip_superseded(self, client: SyncPrefectClient, due: Sequence[FlowRunResponse]) -> list[FlowRunResponse]:
        """Of several due auto-scheduled runs of one deployment (the worker was busy or down), only the
        latest runs; the older ones are cancelled with a message, so a backlog does not replay."""
        from prefect.states import Cancelled

        latest: dict[UUID, FlowRunResponse] = {}
        for run in due:
            if run.auto_scheduled and run.deployment_id is not None:
                latest[run.deployment_id] = run  # sorted by start time: the last one wins
        keep: list[FlowRunResponse] = []
        for run in due:
            if run.auto_scheduled and run.deployment_id is not None and latest[run.deployment_id] is not run:
                client.set_flow_run_state(run.id, Cancelled(message="skipped: a later scheduled run of this "
                                                            "deployment was already due"), force=True)
                continue
            keep.append(run)
        return keep

    def _start(self, client: SyncPrefectClient, run: FlowRunResponse, served: Served) -> None:
        from prefect.exceptions import Abort
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state_sync

        try:
            state = propose_state_sync(client, Pending(), flow_run_id=run.id)
        except Abort as exc:  # another worker took it, or it was cancelled meanwhile
            log.info("run %s (%s) not started: %s", run.name, run.id, exc)
            return
        if not state.is_pending():
            log.info("run %s (%s) not started: the server says %s", run.name, run.id, state.type.value)
            return
        fresh = client.read_flow_run(run.id)
        assert self._pool is not None
        log.info("starting %s run %s (%s)", served.entry.name, fresh.name, fresh.id)
        future = self._pool.submit(_execute, served, fresh)
        self._in_flight[run.id] = _InFlight(run.id, served, future)

    def _honour_cancellations(self, client: SyncPrefectClient) -> None:
        """Runs in flight that someone set Cancelling (the UI's Cancel) are marked Cancelled."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType
        from prefect.states import Cancelled

        open_ids = [rid for rid, f in self._in_flight.items() if not f.cancelled]
        if not open_ids:
            return
        cancelling = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=open_ids),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))))
        for run in cancelling:
            self._in_flight[run.id].cancelled = True
            client.set_flow_run_state(run.id, Cancelled(message="Cancelled: the flow worker stops it at its next task"),
                                      force=True)
            log.info("run %s (%s) cancelled", run.name, run.id)

    def _drain(self, client: SyncPrefectClient) -> None:
        """On stop: wait a little for runs in flight, then mark those still running Crashed."""
        from prefect.states import Crashed

        deadline = time.monotonic() + STOP_GRACE_S
        for flight in list(self._in_flight.values()):
            try:
                flight.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # timed out (or failed, which the engine already recorded)
                pass
            if not flight.future.done():
                client.set_flow_run_state(flight.run_id, Crashed(message="the flow worker stopped while this run was in "
                                                                 "flight; run it again"), force=True)
                log.warning("run %s marked Crashed: the worker stopped", flight.run_id)


def _execute(served: Served, flow_run: FlowRun) -> None:
    """Run one flow run through Prefect's engine in this thread; the engine records Completed/Failed.
    What escapes it (a bug in the engine, a BaseException) is recorded as Crashed; nothing reaches the worker."""
    from prefect.flow_engine import run_flow

    try:
        outcome = run_flow(served.flow, flow_run=flow_run, return_type="state")
        if inspect.iscoroutine(outcome):  # an async flow: run it on this thread's own loop
            outcome = asyncio.run(outcome)
        log.info("%s run %s finished: %s", served.entry.name, flow_run.name, getattr(outcome, "name", outcome))
    except BaseException as exc:
        log.exception("%s run %s crashed", served.entry.name, flow_run.name)
        _mark_crashed(flow_run.id, exc)


def _mark_crashed(run_id: UUID, exc: BaseException) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
            if state is None or not state.is_final():
                client.set_flow_run_state(run_id, Crashed(message=f"{type(exc).__name__}: {exc}"), force=True)
    except Exception:
        log.exception("could not mark run %s Crashed", run_id)


def load_catalog(catalog: Sequence[ServedFlow]) -> tuple[list[tuple[ServedFlow, Flow[..., Any]]], dict[str, str]]:
    """The catalog's flows that import, and why each of the others does not (module not written yet...)."""
    from prefect import Flow

    loaded: list[tuple[ServedFlow, Flow[..., Any]]] = []
    missing: dict[str, str] = {}
    for entry in catalog:
        try:
            flow = entry.load()
        except (ImportError, AttributeError) as exc:
            missing[entry.name] = f"{entry.import_path}: {type(exc).__name__}: {exc}"
            log.warning("not serving %s: %s", entry.name, missing[entry.name])
            continue
        if not isinstance(flow, Flow) or flow.name != entry.name:
            missing[entry.name] = f"{entry.import_path} is not the Prefect flow {entry.name!r}"
            log.warning("not serving %s: %s", entry.name, missing[entry.name])
            continue
        loaded.append((entry, flow))
    return loaded, missing


def apply_deployments(loaded: Sequence[tuple[ServedFlow, Flow[..., Any]]]) -> dict[UUID, Served]:
    """Create or update one deployment per flow (no work pool: this worker runs them): typed parameters
    from the signature, the description, the tags and, for operate and polling, an interval schedule."""
    from prefect.deployments.runner import EntrypointType, RunnerDeployment

    served: dict[UUID, Served] = {}
    for entry, flow in loaded:
        deployment = RunnerDeployment.from_flow(
            flow, name=entry.name, interval=entry.interval_seconds(), description=entry.description,
            tags=list(entry.tags), entrypoint_type=EntrypointType.MODULE_PATH)
        deployment_id = deployment.apply()
        if not isinstance(deployment_id, UUID):  # apply() dispatches on the caller: this runs outside an event loop
            raise TypeError(f"{entry.name}: apply the deployments outside an event loop")
        served[deployment_id] = Served(entry, flow, deployment_id)
        log.info("deployment %s (%s)%s", entry.full_name, deployment_id,
                 f", every {entry.interval_seconds():g}s" if entry.interval_env else "")
    return served


def register_blocks() -> list[str]:
    """Register the block types of ``blocks`` with the server, as ``prefect block register -m blocks`` does,
    so they can be created from the UI."""
    from prefect.blocks.core import Block

    import blocks

    names: list[str] = []
    for _, cls in inspect.getmembers(blocks):
        if isinstance(cls, type) and issubclass(cls, Block) and cls is not Block:
            cls.register_type_and_schema()
            names.append(cls.get_block_type_name())
    return names


def _warm_up(state: Path | None) -> None:
    """Open the registry once, so the first run does not pay for MLflow's imports and database setup."""
    if state is None:
        return
    from tasks._common import registry_for

    try:
        registry_for(state).deployed_versions("odh-warm-up", "default")  # a read: creates the database, no rows
    except Exception:  # warming is an optimisation: the runs report real errors themselves
        log.warning("could not warm up the registry", exc_info=True)


def prepare_environment(state: Path | None) -> str:
    """Point Prefect (and the flows' default state directory) at ``state`` before Prefect is imported;
    returns the API URL. A worker needs a real server: no ephemeral one."""
    if state is not None:
        os.environ["ODH_STATE_DIR"] = str(state)  # runs started from the UI without state_dir act on this platform
    from flows.prefect_env import configure_prefect
    from serving.config import state_dir

    api_url = configure_prefect(state_dir(str(state) if state else None))
    if not api_url:
        raise SystemExit("error: no Prefect server to serve the flows to: set PREFECT_API_URL "
                         "(e.g. http://127.0.0.1:4200/api) or start one with `odh up`")
    return api_url


def serve(state: Path | None, limit: int = DEFAULT_LIMIT, poll_interval: float = POLL_INTERVAL_S,
          ready_file: Path | None = None) -> None:
    """Everything ``main`` does after parsing: set up, register, then poll until SIGTERM/SIGINT."""
    api_url = prepare_environment(state)
    started = time.monotonic()
    loaded, missing = load_catalog(CATALOG)
    log.info("flows imported in %.1fs", time.monotonic() - started)
    worker = FlowWorker({}, limit=limit, poll_interval=poll_interval)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.served = apply_deployments(loaded)
    log.info("block types registered: %s", ", ".join(register_blocks()))
    _warm_up(state)
    if ready_file is not None:
        ready_file.write_text(json.dumps({
            "pid": os.getpid(), "api_url": api_url, "ready": True,
            "deployments": {s.entry.full_name: str(d) for d, s in worker.served.items()}, "missing": missing,
        }))
    log.info("ready in %.1fs against %s", time.monotonic() - started, api_url)
    worker.run_forever()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.flow_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=None, help="the platform's state directory (pid, log, ready "
                        "file; default flows' target); omitted: PREFECT_API_URL and $ODH_STATE_DIR or ~/.odh")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="flow runs at once (default %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_S, help="seconds between polls")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit: at least 1")
    if not args.poll_interval > 0:
        parser.error("--poll-interval: seconds above 0, e.g. 0.5")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call, twice a second, otherwise
    ready_file = args.state_dir / WORKER_FILE if args.state_dir else None
    serve(args.state_dir, args.limit, args.poll_interval, ready_file)


if __name__ == "__main__":
    main()
