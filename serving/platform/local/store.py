"""The embedded platform's object store: Kubernetes-shaped objects in SQLite.

It is the daemon's source of truth: restarting the daemon re-reads every object and converges on it
again, so nothing deployed is lost. Specs and statuses are stored apart so a status write never races
a user's apply.
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.errors import NotFoundError

KubeObject = dict[str, Any]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, namespace, name)
)
"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """A small thread-safe key-value store of objects keyed by (kind, namespace, name).

    ``kind`` is the store kind (``store_kind``): group-qualified for Knative's Service and Revision."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def put(self, obj: KubeObject) -> tuple[KubeObject, bool]:
        """Store ``obj``; returns (stored object, whether its spec changed).

        ``metadata.generation`` counts spec changes as Kubernetes does; uid and creationTimestamp are
        kept from the first apply.
        """
        kind, namespace, name = key_of(obj)
        with self._lock:
            row = self._row(kind, namespace, name)
            body = json.loads(json.dumps({k: v for k, v in obj.items() if k != "status"}))
            meta = body.setdefault("metadata", {})
            meta["namespace"] = namespace
            if row is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now())
                meta["generation"] = 1
                changed = True
                status = "{}"
            else:
                old = json.loads(row[0])
                old_meta = old.get("metadata", {})
                meta["uid"] = old_meta.get("uid")
                meta["creationTimestamp"] = old_meta.get("creationTimestamp")
                changed = _content(old) != _content(body)
                meta["generation"] = old_meta.get("generation", 1) + (1 if changed else 0)
                status = row[1]
            self._db.execute(
                "INSERT INTO objects(kind, namespace, name, body, status) VALUES (?,?,?,?,?) "
                "ON CONFLICT(kind, namespace, name) DO UPDATE SET body = excluded.body",
                (kind, namespace, name, json.dumps(body), status),
            )
        return {**body, "status": json.loads(status)}, changed

    def get(self, kind: str, namespace: str, name: str) -> KubeObject:
        with self._lock:
            row = self._row(kind, namespace, name)
        if row is None:
            raise NotFoundError(f"{kind} {namespace}/{name} not found")
        return _decode(kind, namespace, name, *row)

    def find(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        try:
            return self.get(kind, namespace, name)
        except NotFoundError:
            return None

    def list(self, kind: str, namespace: str | None = None) -> list[KubeObject]:
        query = "SELECT namespace, name, body, status FROM objects WHERE kind = ?"
        params: tuple[str, ...] = (kind,)
        if namespace is not None:
            query += " AND namespace = ?"
            params += (namespace,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY namespace, name", params).fetchall()
        return [_decode(kind, ns, name, body, status) for ns, name, body, status in rows]

    def kinds(self) -> builtins.list[str]:  # ``list`` here is the method above
        """Every store kind with at least one stored object."""
        with self._lock:
            return [kind for (kind,) in self._db.execute("SELECT DISTINCT kind FROM objects ORDER BY kind")]

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Replace the status; returns False when the object is gone (deleted meanwhile)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE objects SET status = ? WHERE kind = ? AND namespace = ? AND name = ?",
                (json.dumps(status), kind, namespace, name),
            )
        return cursor.rowcount > 0

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (kind, namespace, name)
            )
        return cursor.rowcount > 0

    def close(self) -> None:
        self._db.close()

    def _row(self, kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        return self._db.execute(
            "SELECT body, status FROM objects WHERE kind = ? AND namespace = ? AND name = ?", (kind, namespace, name)
        ).fetchone()


def _decode(kind: str, namespace: str, name: str, body: str, status: str) -> KubeObject:
    """A stored row as an object. The row's key is the truth for kind, namespace and name: a body that
    no longer decodes to an object (a database written by another version, or by hand) still comes back
    addressable, so the daemon can report it and ``odh delete`` can remove it."""
    obj = _json_object(body)
    if obj is None:
        log.warning("stored %s %s/%s is not a JSON object; it is kept only so that it can be deleted", kind, namespace, name)
        obj = {}
    meta = obj.get("metadata")
    obj = {**obj, "kind": object_kind(kind),
           "metadata": {**(meta if isinstance(meta, dict) else {}), "namespace": namespace, "name": name}}
    return {**obj, "status": _json_object(status) or {}}


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# API groups whose kinds share a name with a core kind: their objects are stored under ``Kind.group``
# (kubectl's spelling) so that a Knative Service ``x-predictor`` and the core Service of the same name
# are two objects. Core and KServe kinds keep their plain names, so databases written before still read.
KNATIVE_GROUP = "serving.knative.dev"
QUALIFIED_GROUPS = frozenset({KNATIVE_GROUP})
KNATIVE_SERVICE = f"Service.{KNATIVE_GROUP}"
KNATIVE_REVISION = f"Revision.{KNATIVE_GROUP}"


def store_kind(obj: KubeObject) -> str:
    """The kind ``obj`` is stored (and listed, fetched, deleted) under: ``Kind.group`` for the groups in
    ``QUALIFIED_GROUPS``, the plain kind otherwise."""
    kind = obj.get("kind")
    if not kind or not isinstance(kind, str):
        raise ValueError("an object needs kind and metadata.name")
    api_version = obj.get("apiVersion")
    group = api_version.partition("/")[0] if isinstance(api_version, str) and "/" in api_version else ""
    return f"{kind}.{group}" if group in QUALIFIED_GROUPS else kind


def object_kind(kind: str) -> str:
    """The ``kind`` field of an object stored under ``kind`` (``Service.serving.knative.dev`` -> ``Service``)."""
    return kind.partition(".")[0]


def key_of(obj: KubeObject) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    kind = store_kind(obj)
    name = meta.get("name")
    if not name:
        raise ValueError("an object needs kind and metadata.name")
    # Cluster-scoped kinds live under the empty namespace.
    namespace = "" if kind in CLUSTER_SCOPED else (meta.get("namespace") or "default")
    return kind, namespace, name


CLUSTER_SCOPED = frozenset({"ClusterServingRuntime"})


def _content(body: KubeObject) -> Any:
    """What counts as a spec change: everything but server-managed metadata."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k not in {"generation", "uid", "creationTimestamp", "resourceVersion"}}
    return {**{k: v for k, v in body.items() if k not in {"metadata", "status"}}, "metadata": meta}
