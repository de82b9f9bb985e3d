"""``LocalPlatform``: the Platform interface over the embedded daemon's control socket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from serving.errors import AdmissionError, DaemonNotRunningError, FieldError, NotFoundError, PlatformError, ReadyTimeoutError
from serving.platform.base import KubeObject, condition, is_ready
from serving.platform.local.store import CLUSTER_SCOPED

POLL_SECONDS = 0.25


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
        return self._request("POST", f"/apis/{obj.get('kind', '')}", json=obj)

    def get(self, kind: str, namespace: str, name: str) -> KubeObject:
        return self._request("GET", f"/apis/{kind}/{_ns(kind, namespace)}/{name}")

    def list(self, kind: str, namespace: str | None = None) -> list[KubeObject]:
        return self._request("GET", f"/apis/{kind}", params={"namespace": namespace} if namespace else None)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self._request("DELETE", f"/apis/{kind}/{_ns(kind, namespace)}/{name}")
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
        if not self.socket.exists():
            raise DaemonNotRunningError(f"no odh daemon on {self.state}: start it with `odh up`")
        try:
            response = self._client.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise DaemonNotRunningError(f"no odh daemon answers on {self.socket}: start it with `odh up`") from exc
        if response.status_code == 422:
            body = response.json()
            raise AdmissionError([FieldError(e["field"], e["reason"]) for e in body.get("errors", [])],
                                 kind=body.get("kind", ""), name=body.get("name", ""))
        if response.status_code == 404:
            raise NotFoundError(response.json().get("error", path))
        if response.status_code >= 400:
            raise PlatformError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()


def _ns(kind: str, namespace: str) -> str:
    return "-" if kind in CLUSTER_SCOPED else namespace
