"""``LocalPlatform``: the Platform interface over the embedded daemon's control socket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from serving.errors import AdmissionError, DaemonNotRunningError, FieldError, NotFoundError, PlatformError, ReadyTimeoutError
from serving.kserve.objects import kind_error
from serving.platform.base import KubeObject, condition, is_ready
from serving.platform.local.store import CLUSTER_SCOPED

POLL_SECONDS = 0.25
# Core kinds the daemon admits itself (tenancy.py: quotas and API-key Secrets); not KServe's, so kind_error
# does not know them. Named here rather than imported: tenancy.py pulls in the reconcilers.
_TENANCY_KINDS = ("ResourceQuota", "Secret")


class LocalPlatform:
    """Talks to ``odh up``'s daemon for one state directory."""

    def __init__(self, state: Path, timeout: float = 30.0) -> None:
        self.state = state
        self.socket = state / "api.sock"
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://odh", timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def is_running(self) -> bool:
        try:
            return self._request("GET", "/healthz").get("status") == "ok"
        except DaemonNotRunningError:
            return False

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/info")

    def pods(self) -> list[dict[str, Any]]:
        return self._request("GET", "/pods")

    def apply(self, obj: KubeObject) -> KubeObject:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        refused = kind_error(kind)
        # the daemon refuses it too; a kind that is no URL segment never gets there
        if refused is not None and kind not in _TENANCY_KINDS:
            raise AdmissionError([refused], kind=kind if isinstance(kind, str) else "")
        return self._request("POST", f"/apis/{_seg(str(kind))}", json=obj)

    def get(self, kind: str, namespace: str, name: str) -> KubeObject:
        return self._request("GET", _object_path(kind, namespace, name))

    def list(self, kind: str, namespace: str | None = None) -> list[KubeObject]:
        return self._request("GET", f"/apis/{_seg(kind)}", params={"namespace": namespace} if namespace else None)

    def kubectl_get(self, kind: str, namespace: str | None = None, name: str | None = None) -> KubeObject:
        """``kubectl get``: a ``List`` of ``kind`` (any kubectl name) in ``namespace`` (all when None), or the
        object called ``name`` (NotFoundError with the apiserver's message when there is none)."""
        params = {key: value for key, value in (("kind", kind), ("namespace", namespace), ("name", name)) if value is not None}
        return self._request("GET", "/get", params=params)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object of any kind (also one users can no longer apply); False when there was none."""
        try:
            self._request("DELETE", _object_path(kind, namespace, name))
        except NotFoundError:
            return False
        return True

    def wait_ready(self, kind: str, namespace: str, name: str, timeout: float, generation: int | None = None) -> KubeObject:
        """Wait for Ready=True (for ``generation`` or later, when given); fail fast on a terminal failure."""
        deadline = time.monotonic() + timeout
        obj = self.get(kind, namespace, name)
        while time.monotonic() < deadline:
            observed = obj.get("status", {}).get("observedGeneration", 0)
            if is_ready(obj) and (generation is None or observed >= generation):
                return obj
            time.sleep(POLL_SECONDS)
            obj = self.get(kind, namespace, name)
        ready = condition(obj, "Ready") or {}
        raise ReadyTimeoutError(
            f"{kind} {namespace}/{name} not Ready after {timeout:.0f}s: "
            f"{ready.get('reason', 'Unknown')}: {ready.get('message', '')}".rstrip(": "),
            obj.get("status"),
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            present = self.socket.exists()
        except PermissionError:
            raise PlatformError(self._not_yours()) from None
        if not present:
            raise DaemonNotRunningError(f"no odh daemon on {self.state}: start it with `odh up`")
        try:
            try:
                response = self._client.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # The daemon closed a kept-alive connection as this request went out (it restarts: `odh
                # restart`). Every control call is declarative (get, list, apply the same object, delete),
                # so sending it once more on a new connection is safe.
                response = self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            if "Permission denied" in str(exc):
                raise PlatformError(self._not_yours()) from exc
            raise DaemonNotRunningError(f"no odh daemon answers on {self.socket}: start it with `odh up`") from exc
        if response.status_code == 422:
            body = response.json()
            raise AdmissionError([FieldError(e["field"], e["reason"]) for e in body.get("errors", [])],
                                 kind=body.get("kind", ""), name=body.get("name", ""))
        if response.status_code == 404:
            raise NotFoundError(_error_of(response) or path)
        if response.status_code >= 400:
            raise PlatformError(f"the odh daemon answered {response.status_code} to {method} {path}: "
                                f"{_error_of(response) or response.text}")
        return response.json()

    def _not_yours(self) -> str:
        return (f"{self.state} belongs to another user: an odh daemon's state directory and control socket are "
                "its user's alone; use your own (--state-dir or ODH_STATE_DIR)")


def _error_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _seg(value: str) -> str:
    """One URL path segment: a name with '/' or '?' in it must not address something else."""
    return quote(value, safe="") or "-"


def _object_path(kind: str, namespace: str, name: str) -> str:
    return f"/apis/{_seg(kind)}/{_seg(_ns(kind, namespace))}/{_seg(name)}"


def _ns(kind: str, namespace: str) -> str:
    return "-" if kind in CLUSTER_SCOPED else namespace
