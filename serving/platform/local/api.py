"""The daemon's control API, served on a Unix socket in the state directory.

Kubernetes-flavoured and small: apply (POST), get, list, delete objects; plus the daemon's info, its
replicas, and ``GET /get`` for ``odh get`` (any kind by its kubectl names, replicas as Pods). Errors are
JSON with the fields that were rejected, so the client can re-raise them: 422 for an object admission
refused (naming each field), 400 for a body that is not one JSON object, 413 for one that is too large.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.errors import AdmissionError, FieldError, NotFoundError
from serving.kserve.objects import USER_KINDS
from serving.manifests import MAX_DEPTH, nesting_depth
from serving.platform.local.listing import KindInfo, UnknownKindError, api_object, build_list, pod_object, resolve_kind, select

if TYPE_CHECKING:
    from serving.platform.local.daemon import Daemon

# kube-apiserver's own limit on a request body; an InferenceService is a few KB.
MAX_BODY_BYTES = 3 << 20
MAX_BODY_DEPTH = MAX_DEPTH

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_FIELD_ERRORS = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "reason": {"type": "string"}}}},
    },
    "required": ["error", "errors"],
}
# A Kubernetes object as users write one: permissive below the top level (admission checks the rest).
KUBE_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["serving.kserve.io/v1beta1", "serving.kserve.io/v1alpha2",
                                                  "serving.kserve.io/v1alpha1"]},
        "kind": {"type": "string", "enum": list(USER_KINDS)},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": True,
        },
        "spec": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}
_BAD_REQUEST = {"description": "the body is not one JSON object", "content": {"application/json": {"schema": _FIELD_ERRORS}}}
_REFUSED = {"description": "admission refused the object; each rejected field is named",
            "content": {"application/json": {"schema": _FIELD_ERRORS}}}
_NOT_FOUND = {"description": "no such object", "content": {"application/json": {"schema": _ERROR}}}
_TOO_LARGE = {"description": f"the body is over {MAX_BODY_BYTES} bytes", "content": {"application/json": {"schema": _ERROR}}}
_FORBIDDEN = {"description": "the peer's uid is not the daemon's own or root", "content": {"application/json": {"schema": _ERROR}}}


class BadBody(Exception):
    """A request body that is not one JSON object within the limits (400, or 413 when too large)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


async def read_object(request: Request, limit: int = MAX_BODY_BYTES, max_depth: int = MAX_BODY_DEPTH) -> dict[str, Any]:
    """The request body as one JSON object, read no further than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadBody(f"the body is {declared} bytes; the limit is {limit}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadBody(f"the body is over the limit of {limit} bytes", 413)
    if not body.strip():
        raise BadBody("the request body is empty: send the object as JSON")
    try:
        obj = json.loads(body)
    except RecursionError:
        raise BadBody(f"the body nests deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadBody(f"the body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadBody(f"the body must be a JSON object (a Kubernetes object), not {_json_type(obj)}")
    if nesting_depth(obj) > max_depth:
        raise BadBody(f"the body nests deeper than {max_depth} levels")
    return obj


def build_api(daemon: Daemon) -> FastAPI:
    app = FastAPI(title="odh platform", responses={403: _FORBIDDEN})

    @app.exception_handler(AdmissionError)
    async def admission_failed(_: Request, exc: AdmissionError) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "kind": exc.kind, "name": exc.name,
             "errors": [{"field": e.field, "reason": e.reason} for e in exc.errors]},
            status_code=422,
        )

    @app.exception_handler(BadBody)
    async def bad_body(_: Request, exc: BadBody) -> JSONResponse:
        return JSONResponse({"error": exc.reason, "errors": [{"field": "body", "reason": exc.reason}]},
                            status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": "; ".join(f"{e['field']}: {e['reason']}" for e in errors), "errors": errors},
                            status_code=400)

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
            "limits": {"max_replicas": daemon.limits.max_replicas},
            "ignored": daemon.ignored(),
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        """The gateway's Prometheus counters (requests by route and code, upstream errors, in flight)."""
        return PlainTextResponse(daemon.gateway.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/pods")
    async def pods() -> list[dict[str, Any]]:
        return daemon.pods()

    @app.get("/get", responses={400: _BAD_REQUEST, 404: _NOT_FOUND})
    async def kubectl_get(kind: str, namespace: str | None = None, name: str | None = None) -> Any:
        """``kubectl get``: the objects of ``kind`` (any of its kubectl names: ``isvc``, ``deployments``,
        ``services.serving.knative.dev``...) in ``namespace`` (every one when omitted) as a ``List``, or the
        one called ``name`` (404 with the apiserver's message when there is none). Pods are the replicas."""
        try:
            info = resolve_kind(kind)
        except UnknownKindError as exc:
            return JSONResponse({"error": str(exc), "errors": [{"field": "kind", "reason": str(exc)}]}, status_code=400)
        found = select(_objects_of(daemon, info), namespace if info.namespaced else None, name)
        if name is None:
            return build_list(found)
        if not found:
            raise NotFoundError(info.not_found(name))
        return found[0]

    @app.post(
        "/apis/{kind}",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": KUBE_OBJECT_SCHEMA}}}},
        responses={400: _BAD_REQUEST, 413: _TOO_LARGE, 422: _REFUSED},
    )
    async def apply(request: Request,
                    kind: str = Path(description="the object's kind", json_schema_extra={"enum": list(USER_KINDS)})) -> dict[str, Any]:
        """Admit and store an object of one of the kinds users apply; anything else is refused naming ``kind``."""
        obj = await read_object(request)
        obj.setdefault("kind", kind)
        if obj["kind"] != kind:
            raise AdmissionError([FieldError("kind", f"is {obj['kind']!r} but was posted to {kind}")], kind=kind)
        return daemon.apply(obj)

    @app.get("/apis/{kind}")
    async def list_objects(kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return daemon.store.list(kind, namespace)

    @app.get("/apis/{kind}/{namespace}/{name}", responses={404: _NOT_FOUND})
    async def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        return daemon.store.get(kind, _ns(namespace), name)

    @app.delete("/apis/{kind}/{namespace}/{name}", responses={404: _NOT_FOUND})
    async def delete(kind: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete any stored object, of any kind: also how objects no one can apply any more are removed."""
        if not daemon.delete(kind, _ns(namespace), name):
            raise NotFoundError(f"{kind} {namespace}/{name} not found")
        await daemon.settle()
        return {"deleted": True}

    return app


def _objects_of(daemon: Daemon, info: KindInfo) -> list[dict[str, Any]]:
    """Every object of ``info``'s kind as the API serves it; Pods made from the replicas the daemon runs."""
    if not info.from_pods:
        return [api_object(info, obj) for obj in daemon.store.list(info.store_kind)]
    node = socket.gethostname()
    pods = []
    for replica in daemon.pods():
        deployment = daemon.store.find("Deployment", replica["namespace"], replica["deployment"]) or {}
        labels = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        pods.append(pod_object(replica, labels=labels, node_name=node))
    return pods


def _ns(namespace: str) -> str:
    # Cluster-scoped objects are addressed with "-" as their namespace in URLs.
    return "" if namespace == "-" else namespace


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "null")

