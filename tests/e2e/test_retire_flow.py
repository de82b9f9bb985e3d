"""The retire flow end to end under load: every request the gateway accepted is answered, new ones get a clean
404 (never a reset or a 5xx), the alias goes unless another live deployment serves the version, the version is
tagged retired, the cache entry nothing references any more is pruned, and retiring again is a no-op."""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from load import LoadResult, load_in_background
from support import IRIS_DIR, served_by, wait_until, write_constant_model

from serving.config import mlflow_tracking_uri, model_cache_dir
from serving.platform.local import LocalPlatform
from serving.registry import ModelRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

V1_BODY = json.loads((IRIS_DIR / "iris-input-v1.json").read_text())


def load_on(url: str, clients: int = 3) -> AbstractContextManager[LoadResult]:
    return load_in_background(url, V1_BODY, clients=clients, identify=served_by)


def cache_entries(state: Path) -> set[str]:
    entries = model_cache_dir(state) / "sha256"
    return {p.name for p in entries.iterdir()} if entries.is_dir() else set()


def test_retire_under_load_loses_no_request_unaliases_prunes_and_is_idempotent(odh_state: Path, tmp_path: Path) -> None:
    from flows.deploy_model import deploy_model
    from flows.retire import retire

    model = write_constant_model(tmp_path)
    (model / "NOTES.txt").write_text(f"retire test model {uuid.uuid4()}\n")  # content (and cache entry) of its own
    name, twin = "retiree", "retiree-twin"
    before = cache_entries(odh_state)
    first = deploy_model(model_uri=str(model), name=name, state_dir=str(odh_state))
    # Its own entry (the model's content is unique). Entries other tests left unreferenced may be pruned by
    # any retire on this shared platform, so only this one is followed.
    mine = cache_entries(odh_state) - before
    assert len(mine) == 1, mine
    second = deploy_model(model_uri=f"models:/{name}/{first.model_version}", name=twin, alias=None,
                          state_dir=str(odh_state))
    assert (second.model_name, second.model_version) == (name, first.model_version)
    registry = ModelRegistry(mlflow_tracking_uri(odh_state))
    assert registry.alias_version(name, "champion") == first.model_version

    # The twin still serves the version: it is not retired, and its alias and cache entry stay.
    assert retire(name=name, state_dir=str(odh_state)) == []
    assert registry.alias_version(name, "champion") == first.model_version
    assert registry.get_version(name, first.model_version).tags["odh.deployment.status"] != "retired"
    assert mine <= cache_entries(odh_state)

    url = f"{second.url}/v1/models/{twin}:predict"
    with load_on(url) as during:
        wait_until(lambda: len(during.answers) >= 30, timeout=60, what="load flowing before the retire")
        retired = retire(name=twin, state_dir=str(odh_state))
        wait_until(lambda: any(a.status == 404 for a in during.answers[-10:]), timeout=60,
                   what="requests after the retire answered 404")
    assert retired == [f"{name}/{first.model_version}"]
    statuses = during.statuses
    assert set(statuses) == {200, 404}, during.describe_failures()
    assert all("no InferenceService routes" in (a.error or "") for a in during.failures if a.status == 404)
    assert set(during.by()) == {"v2"}  # the constant model answered every accepted request
    last_ok = max(i for i, a in enumerate(during.answers) if a.status == 200)
    first_404 = min(i for i, a in enumerate(during.answers) if a.status == 404)
    assert statuses[200] >= 30 and first_404 > 0 and last_ok < len(during.answers)

    assert registry.alias_version(name, "champion") is None
    version = registry.get_version(name, first.model_version)
    assert version.tags["odh.deployment.status"] == "retired" and version.aliases == ()
    with LocalPlatform(odh_state) as platform:
        assert all(i["metadata"]["name"] not in (name, twin) for i in platform.list("InferenceService"))
    assert not mine & cache_entries(odh_state), "the retired model's cache entry was not pruned"

    # Again: a harmless no-op.
    assert retire(name=twin, state_dir=str(odh_state)) == []
    assert registry.get_version(name, first.model_version).tags["odh.deployment.status"] == "retired"
