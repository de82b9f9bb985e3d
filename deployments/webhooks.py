"""The webhook receiver the platform runs: MLflow's registry events start ``on-new-model-version`` runs.

    POST /webhooks/mlflow   MLflow model-registry webhook deliveries (HMAC-signed)
    GET  /healthz           liveness

A delivery is checked before anything in it is believed: content type, size (declared and actual), a
deadline for the body, then MLflow's signature and timestamp (serving/registry/webhooks.py). Only then is
the ``on-new-model-version`` deployment started through the Prefect REST API, with the delivery id as the
flow run's idempotency key, so a delivery MLflow retries (same id) starts one run, even across restarts
of this receiver. Answers: 202 + flow run id; 200 for events we do not act on; 401 for a missing or bad
signature or a stale timestamp; 400/408/413/415 for bodies that are not MLflow's; 503 + Retry-After when
Prefect cannot take the run (MLflow retries 503). Never 500: the handler turns every failure into one of these.

MLflow refuses webhook URLs on loopback and plain http unless its server runs with
``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` and ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https``; see
``register_mlflow_webhook``.

    python -m deployments.webhooks --state-dir ~/.odh --port 4300 --prefect-api-url http://127.0.0.1:4200/api
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.background import StartError, spawn, stop, wait_started
from serving.registry.webhooks import (
    MAX_BODY_BYTES,
    IgnoredEvent,
    NewVersionEvent,
    WebhookRefused,
    parse_event,
    verify,
)

log = logging.getLogger("odh.webhooks")

SECRET_ENV = "ODH_WEBHOOK_SECRET"
SECRET_FILE = "webhook-secret"
INFO_FILE = "webhooks.json"
WEBHOOK_PORT = 4300
PATH = "/webhooks/mlflow"
FLOW = "on-new-model-version"
DEPLOYMENT = "on-new-model-version"
BODY_DEADLINE_S = 10.0
BODY_DEADLINE_ENV = "ODH_WEBHOOK_BODY_DEADLINE_S"  # seconds a sender has for its whole body (default 10)
SEEN_DELIVERIES = 10_000
_STATUS = {"headers": 401, "signature": 401, "timestamp": 401, "size": 413, "content-type": 415,
           "json": 400, "payload": 400}


def load_or_create_secret(state: Path) -> str:
    """``$ODH_WEBHOOK_SECRET``, else ``<state>/webhook-secret`` (made once, mode 0600, readable by its owner only)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    path = state / SECRET_FILE
    state.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        # O_EXCL: two starters racing make one secret; 0600 from creation, never world-readable for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it (a new secret is made) or set {SECRET_ENV}")
    return secret


class FlowStarter:
    """Creates ``on-new-model-version`` flow runs through the Prefect REST API (what the UI's "Run" does)."""

    def __init__(self, api_url: str, state_dir: str | None, client: httpx.AsyncClient | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.state_dir = state_dir
        self._client = client or httpx.AsyncClient(timeout=10.0)

    async def start(self, event: NewVersionEvent, delivery_id: str) -> str:
        """The flow run id; raises httpx.HTTPError or LookupError when Prefect cannot take it."""
        from flows.naming import run_name

        found = await self._client.get(f"{self.api_url}/deployments/name/{FLOW}/{DEPLOYMENT}")
        if found.status_code == 404:
            raise LookupError(f"no {FLOW}/{DEPLOYMENT} deployment on {self.api_url}: is `odh up` serving the flows?")
        found.raise_for_status()
        parameters: dict[str, Any] = {"model_name": event.model_name, "version": event.version,
                                      "alias": event.alias, "state_dir": self.state_dir}
        created = await self._client.post(
            f"{self.api_url}/deployments/{found.json()['id']}/create_flow_run",
            json={"name": run_name(event.model_name, event.version), "parameters": parameters,
                  "idempotency_key": f"mlflow-webhook-{delivery_id}", "tags": ["odh", "webhook"]},
        )
        created.raise_for_status()
        return str(created.json()["id"])

    async def aclose(self) -> None:
        await self._client.aclose()


def create_app(secret: str, starter: FlowStarter, *, clock: Callable[[], float] = time.time,
               max_body: int = MAX_BODY_BYTES, body_deadline_s: float = BODY_DEADLINE_S) -> Starlette:
    """The receiver's ASGI app; ``clock`` is the wall clock the timestamps are checked against."""
    started: OrderedDict[str, str] = OrderedDict()  # delivery id -> flow run id, newest last, bounded

    async def mlflow_webhook(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body, body_deadline_s)
            delivery = verify(secret, request.headers, body, now=clock(), max_body=max_body)
            event = parse_event(body)
        except WebhookRefused as exc:
            log.warning("refused a delivery from %s: %s", request.client.host if request.client else "?", exc)
            return JSONResponse({"error": exc.message, "check": exc.check}, status_code=_STATUS[exc.check])
        except TimeoutError:
            return JSONResponse({"error": f"the body did not arrive within {body_deadline_s:g} s", "check": "deadline"},
                                status_code=408)
        except ClientDisconnect:
            return Response(status_code=400)
        if isinstance(event, IgnoredEvent):
            return JSONResponse({"ignored": event.event}, status_code=200)
        if delivery.delivery_id in started:
            return JSONResponse({"flow_run_id": started[delivery.delivery_id], "duplicate": True}, status_code=202)
        try:
            run_id = await starter.start(event, delivery.delivery_id)
        except (httpx.HTTPError, LookupError, KeyError, ValueError) as exc:
            log.error("could not start %s for %s v%s: %s", FLOW, event.model_name, event.version, exc)
            return JSONResponse({"error": f"could not start {FLOW}: {exc}"}, status_code=503,
                                headers={"Retry-After": "5"})
        started[delivery.delivery_id] = run_id
        while len(started) > SEEN_DELIVERIES:
            started.popitem(last=False)
        log.info("%s %s v%s (alias %s): flow run %s", event.event, event.model_name, event.version, event.alias, run_id)
        return JSONResponse({"flow_run_id": run_id, "event": event.event, "model_name": event.model_name,
                             "version": event.version, "alias": event.alias}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await starter.aclose()

    return Starlette(routes=[Route(PATH, mlflow_webhook, methods=["POST"]), Route("/healthz", healthz)],
                     lifespan=lifespan)


async def _read_body(request: Request, limit: int, deadline_s: float) -> bytes:
    """The body, refused early on a wrong content type, a declared or actual size over ``limit``, or a
    sender slower than ``deadline_s`` (raises TimeoutError)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebhookRefused("content-type", f"{content_type or 'no content type'} is not application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise WebhookRefused("size", f"content-length {declared[:20]} is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(deadline_s):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebhookRefused("size", f"body over the {limit}-byte limit")
            chunks.append(chunk)
    return b"".join(chunks)


# --- the background process ------------------------------------------------------------------------------

def start_receiver(state: Path, port: int, prefect_api_url: str, timeout: float = 60.0) -> str:
    """Run the receiver in the background for ``state``; returns its webhook URL (the one to give MLflow)."""
    running = receiver_url(state)
    if running is not None:
        return running
    state.mkdir(parents=True, exist_ok=True)
    load_or_create_secret(state)  # made here, so the caller can read it as soon as this returns
    url = f"http://127.0.0.1:{port}{PATH}"
    log_path = state / "webhooks.log"
    proc = spawn([sys.executable, "-m", "deployments.webhooks", "--state-dir", str(state), "--port", str(port),
                  "--prefect-api-url", prefect_api_url], log_path, cwd=Path(__file__).resolve().parent.parent)
    (state / INFO_FILE).write_text(json.dumps({"pid": proc.pid, "port": port, "url": url,
                                               "prefect_api_url": prefect_api_url}))
    try:
        wait_started(lambda: _healthy(port), proc, timeout, "the webhook receiver", log_path)
    except StartError:
        stop_receiver(state)
        raise
    return url


def stop_receiver(state: Path) -> bool:
    """Stop the receiver ``start_receiver`` started for ``state``; False when none was recorded."""
    return stop(state / INFO_FILE)


def receiver_url(state: Path) -> str | None:
    """The webhook URL of the receiver running for ``state``, if it answers."""
    try:
        info = json.loads((state / INFO_FILE).read_text())
        port, url = int(info["port"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _healthy(port) else None


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def register_mlflow_webhook(tracking_uri: str, url: str, secret: str, name: str = "odh-on-new-model-version") -> str:
    """Create (or point again) the MLflow webhook that sends new versions and alias moves to ``url``; its id.

    Needs an MLflow tracking *server* with a SQL backend (a file store has no webhooks; a client on the
    database directly sends none: deliveries come from the server's request handlers). For a loopback
    receiver the server must run with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true and
    MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    events: list[Any] = ["model_version.created", "model_version_alias.created"]
    for existing in client.list_webhooks():
        if existing.name == name:
            client.update_webhook(existing.webhook_id, url=url, events=events, secret=secret, status="ACTIVE")
            return str(existing.webhook_id)
    return str(client.create_webhook(name=name, url=url, events=events, secret=secret,
                                     description="odh-serving: start on-new-model-version").webhook_id)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="The MLflow webhook receiver: starts on-new-model-version runs.")
    parser.add_argument("--state-dir", required=True, help="the platform's state directory (secret, flow parameter)")
    parser.add_argument("--port", type=int, default=WEBHOOK_PORT)
    parser.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = Path(args.state_dir).expanduser().resolve()
    deadline = float(os.environ.get(BODY_DEADLINE_ENV) or BODY_DEADLINE_S)
    app = create_app(load_or_create_secret(state), FlowStarter(args.prefect_api_url, str(state)),
                     body_deadline_s=deadline)
    # Loopback only. Bounded: concurrent connections, a small header buffer, short keep-alive.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", limit_concurrency=64,
                timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024)


if __name__ == "__main__":
    main()
