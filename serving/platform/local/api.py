"""The daemon's control API, served on a Unix socket in the state directory.

Kubernetes-flavoured and small: apply (POST), get, list, delete objects; plus the daemon's info and
its replicas. Errors are JSON with the fields that were rejected, so the client can re-raise them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.errors import AdmissionError, FieldError, NotFoundError

if TYPE_CHECKING:
    from serving.platform.local.daemon import Daemon


def build_api(daemon: Daemon) -> FastAPI:
    app = FastAPI(title="odh platform")

    @app.exception_handler(AdmissionError)
    async def admission_failed(_: Request, exc: AdmissionError) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "kind": exc.kind, "name": exc.name,
             "errors": [{"field": e.field, "reason": e.reason} for e in exc.errors]},
            status_code=422,
        )

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "gateway": f"http://{daemon.gateway_host}:{daemon.gateway_port}",
            "gateway_port": daemon.gateway_port,
            "state_dir": str(daemon.files.state),
            "routes": daemon.routes.snapshot(),
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        """The gateway's Prometheus counters (requests by route and code, upstream errors, in flight)."""
        return PlainTextResponse(daemon.gateway.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/pods")
    async def pods() -> list[dict[str, Any]]:
        return daemon.pods()

    @app.post("/apis/{kind}")
    async def apply(kind: str, request: Request) -> dict[str, Any]:
        obj = await request.json()
        if not isinstance(obj, dict):
            raise AdmissionError([FieldError("", "the body must be a JSON object")], kind=kind)
        obj.setdefault("kind", kind)
        if obj["kind"] != kind:
            raise AdmissionError([FieldError("kind", f"is {obj['kind']!r} but was posted to {kind}")], kind=kind)
        return daemon.apply(obj)

    @app.get("/apis/{kind}")
    async def list_objects(kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return daemon.store.list(kind, namespace)

    @app.get("/apis/{kind}/{namespace}/{name}")
    async def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        return daemon.store.get(kind, _ns(namespace), name)

    @app.delete("/apis/{kind}/{namespace}/{name}")
    async def delete(kind: str, namespace: str, name: str) -> dict[str, Any]:
        if not daemon.delete(kind, _ns(namespace), name):
            raise NotFoundError(f"{kind} {namespace}/{name} not found")
        await daemon.settle()
        return {"deleted": True}

    return app


def _ns(namespace: str) -> str:
    # Cluster-scoped objects are addressed with "-" as their namespace in URLs.
    return "" if namespace == "-" else namespace
