import sqlite3
from pathlib import Path

import pytest

from serving.errors import NotFoundError
from serving.platform.local.store import ObjectStore


def isvc(name: str = "iris", uri: str = "file:///m") -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name}, "spec": {"predictor": {"model": {"storageUri": uri}}}}


def test_put_defaults_namespace_and_counts_generations_on_spec_change_only(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "db.sqlite")
    first, changed = store.put(isvc())
    assert changed and first["metadata"]["namespace"] == "default" and first["metadata"]["generation"] == 1
    same, changed = store.put(isvc())
    assert not changed and same["metadata"]["generation"] == 1
    assert same["metadata"]["uid"] == first["metadata"]["uid"]
    updated, changed = store.put(isvc(uri="file:///other"))
    assert changed and updated["metadata"]["generation"] == 2


def test_status_is_kept_across_applies_and_survives_reopening(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "db.sqlite")
    store.put(isvc())
    assert store.set_status("InferenceService", "default", "iris", {"url": "http://x"})
    store.put(isvc(uri="file:///other"))
    store.close()
    reopened = ObjectStore(tmp_path / "db.sqlite")
    got = reopened.get("InferenceService", "default", "iris")
    assert got["status"] == {"url": "http://x"}
    assert got["spec"]["predictor"]["model"]["storageUri"] == "file:///other"


def test_list_filters_by_namespace_and_delete_reports_absence(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "db.sqlite")
    store.put(isvc("a"))
    other = isvc("b")
    other["metadata"]["namespace"] = "team"
    store.put(other)
    assert [o["metadata"]["name"] for o in store.list("InferenceService")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in store.list("InferenceService", "team")] == ["b"]
    assert store.delete("InferenceService", "team", "b")
    assert not store.delete("InferenceService", "team", "b")
    with pytest.raises(NotFoundError, match="team/b"):
        store.get("InferenceService", "team", "b")
    assert not store.set_status("InferenceService", "team", "b", {})


def test_cluster_scoped_objects_have_no_namespace(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "db.sqlite")
    stored, _ = store.put({"kind": "ClusterServingRuntime", "metadata": {"name": "rt", "namespace": "x"}, "spec": {}})
    assert stored["metadata"]["namespace"] == ""
    assert store.get("ClusterServingRuntime", "", "rt")["metadata"]["name"] == "rt"


def test_rows_that_are_junk_come_back_addressable_and_deletable(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "db.sqlite")
    store.put(isvc("good"))
    # As an older version (or a hand edit) might have left them: bodies that are not objects.
    raw = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    raw.execute("INSERT INTO objects(kind, namespace, name, body, status) VALUES (?,?,?,?,?)",
                ("InferenceService", "default", "junk", "[1, 2]", "not json"))
    raw.execute("INSERT INTO objects(kind, namespace, name, body, status) VALUES (?,?,?,?,?)",
                ("Nope", "default", "x", '{"metadata": "x"}', "{}"))
    raw.close()
    listed = store.list("InferenceService")
    assert [o["metadata"]["name"] for o in listed] == ["good", "junk"]
    assert listed[1] == {"kind": "InferenceService", "metadata": {"namespace": "default", "name": "junk"}, "status": {}}
    assert store.get("Nope", "default", "x")["metadata"] == {"namespace": "default", "name": "x"}
    assert store.kinds() == ["InferenceService", "Nope"]
    assert store.delete("Nope", "default", "x") and store.kinds() == ["InferenceService"]
