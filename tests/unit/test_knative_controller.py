"""serving.knative on Knative's own cases: revision naming and immutability, GC, traffic rules, statuses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.knative import (
    GCConfig,
    RevisionNameTaken,
    RevisionObservation,
    TrafficError,
    collectable,
    desired_revision,
    resolve_traffic,
    revision_status,
    routing_updates,
    validate_traffic,
)
from serving.knative.names import child_name, revision_name
from serving.platform.local.store import KNATIVE_REVISION, KNATIVE_SERVICE, ObjectStore, store_kind

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _ksvc(image: str = "app:1", traffic: list[dict[str, Any]] | None = None, name: str = "svc") -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"image": image}]}}}
    if traffic is not None:
        spec["traffic"] = traffic
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ns", "uid": "u1", "annotations": {"serving.knative.dev/lastModifier": "alice"}},
            "spec": spec}


def _ready(revision: dict[str, Any], ready: bool | None = True) -> dict[str, Any]:
    state = {True: "True", False: "False", None: "Unknown"}[ready]
    return {**revision, "status": {"conditions": [{"type": "Ready", "status": state}]}}


def test_revision_names_follow_kmeta_child_name():
    assert revision_name("svc", 1) == "svc-00001"
    long = "a" * 60
    named = revision_name(long, 12)
    assert len(named) == 63 and named.endswith("-00012") and named.startswith("a" * 25)
    assert child_name(long, "-00012") != child_name("a" * 61, "-00012")


def test_a_template_change_stamps_the_next_immutable_revision():
    first, created = desired_revision(_ksvc(), [], now=NOW)
    assert created and first["metadata"]["name"] == "svc-00001"
    labels = first["metadata"]["labels"]
    assert labels["serving.knative.dev/configurationGeneration"] == "1" and labels["serving.knative.dev/service"] == "svc"
    assert labels["serving.knative.dev/configuration"] == "svc" and labels["serving.knative.dev/routingState"] == "pending"
    assert labels["app"] == "x" and first["metadata"]["annotations"]["serving.knative.dev/creator"] == "alice"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Service" and first["spec"] == {"containers": [{"image": "app:1"}]}
    # Unchanged template (and a traffic-only change): the same revision.
    same, created = desired_revision(_ksvc(traffic=[{"latestRevision": True, "percent": 100}]), [first], now=NOW)
    assert not created and same is first
    # Routing labels written later do not count as a template change.
    relabelled = routing_updates("svc", [first], {"svc-00001"}, now=NOW)[0]
    assert desired_revision(_ksvc(), [relabelled], now=NOW)[1] is False
    second, created = desired_revision(_ksvc("app:2"), [relabelled], now=NOW)
    assert created and second["metadata"]["name"] == "svc-00002"
    assert relabelled["spec"] == {"containers": [{"image": "app:1"}]}  # the old one is untouched


def test_a_named_template_reuses_its_revision_or_is_refused_when_the_name_is_taken():
    ksvc = _ksvc()
    ksvc["spec"]["template"]["metadata"]["name"] = "svc-blue"
    blue, created = desired_revision(ksvc, [], now=NOW)
    assert created and blue["metadata"]["name"] == "svc-blue"
    assert desired_revision(ksvc, [blue], now=NOW) == (blue, False)
    changed = copy.deepcopy(ksvc)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "app:2"
    with pytest.raises(RevisionNameTaken, match="svc-blue"):
        desired_revision(changed, [blue], now=NOW)


def _aged(name: str, generation: int, state: str, days: int) -> dict[str, Any]:
    stamp = (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "creationTimestamp": stamp,
                         "labels": {"serving.knative.dev/service": "svc", "serving.knative.dev/configurationGeneration": str(generation),
                                    "serving.knative.dev/routingState": state},
                         "annotations": {"serving.knative.dev/routingStateModified": stamp}}}


def test_gc_keeps_the_minimum_active_and_latest_ready_and_deletes_stale_reserve_revisions_oldest_first():
    revisions = [_aged(f"svc-{i:05d}", i, "reserve", 10 - i) for i in range(1, 6)] + [_aged("svc-00006", 6, "active", 0)]
    config = GCConfig(min_non_active_revisions=2)
    # 1..5 are reserve and days old; 5 is latest ready (never collected); keep 2 non-active.
    assert collectable("svc", revisions, "svc-00005", config, now=NOW) == ["svc-00001", "svc-00002"]
    assert collectable("svc", revisions, "svc-00005", GCConfig(min_non_active_revisions=20), now=NOW) == []
    fresh = GCConfig(retain_since_create_time=timedelta(days=30), retain_since_last_active_time=None,
                     min_non_active_revisions=0, max_non_active_revisions=1)
    # Nothing is stale, but past the maximum the oldest go regardless.
    assert collectable("svc", revisions, "svc-00005", fresh, now=NOW) == ["svc-00001", "svc-00002", "svc-00003"]
    revisions[0]["metadata"]["annotations"]["serving.knative.dev/no-gc"] = "true"
    assert "svc-00001" not in collectable("svc", revisions, "svc-00005", config, now=NOW)


@pytest.mark.parametrize(
    ("traffic", "field", "fragment"),
    [
        ([{"latestRevision": True, "percent": 60}], "spec.traffic", "sum to 60, want 100"),
        ([{"revisionName": "a", "latestRevision": True, "percent": 100}], "spec.traffic[0].latestRevision", "may not set revisionName"),
        ([{"configurationName": "c", "percent": 100}], "spec.traffic[0].configurationName", "not allowed"),
        ([{"latestRevision": True, "percent": 150}], "spec.traffic[0].percent", "from 0 to 100"),
        ([{"latestRevision": True, "percent": 50, "tag": "a"}, {"revisionName": "r", "percent": 50, "tag": "a"}],
         "spec.traffic[1].tag", "multiple definitions"),
        ([{"latestRevision": True, "percent": 100, "tag": "Bad_Tag"}], "spec.traffic[0].tag", "DNS-1035"),
        ([{"latestRevision": True, "percent": 100, "url": "http://x"}], "spec.traffic[0].url", "set by the platform"),
    ],
)
def test_invalid_traffic_is_refused_naming_the_field(traffic, field, fragment):
    errors = validate_traffic(traffic)
    assert any(e.field == field and fragment in e.reason for e in errors), errors


def test_traffic_resolves_latest_to_the_latest_ready_revision_and_merges_duplicates():
    one, two = _ready(_aged("svc-00001", 1, "active", 1)), _ready(_aged("svc-00002", 2, "active", 0), None)
    ksvc = _ksvc(traffic=[{"latestRevision": True, "percent": 30}, {"revisionName": "svc-00001", "percent": 50},
                          {"revisionName": "svc-00001", "percent": 20}, {"revisionName": "svc-00001", "percent": 0, "tag": "old"}])
    assert validate_traffic(ksvc["spec"]["traffic"]) == []
    targets = resolve_traffic(ksvc, [one, two], "svc-00001")
    assert [(t.revision_name, t.percent, t.tag, t.latest_revision) for t in targets] == [
        ("svc-00001", 30, "", True), ("svc-00001", 70, "", False), ("svc-00001", 0, "old", False)]
    assert targets[2].url == "http://old-svc.ns.example.com"


@pytest.mark.parametrize(
    ("revisions", "latest_ready", "traffic", "failed", "message"),
    [
        ([], None, None, False, "Configuration 'svc' is waiting for a Revision to become ready."),
        ([], None, [{"revisionName": "svc-00009", "percent": 100}], True, "Revision 'svc-00009' referenced in traffic not found."),
        (["unready"], None, [{"revisionName": "svc-00001", "percent": 100}], False, "Revision 'svc-00001' is not yet ready."),
        (["failed"], None, [{"revisionName": "svc-00001", "percent": 100}], True, "Revision 'svc-00001' failed to become ready."),
    ],
)
def test_unusable_traffic_says_why_as_knative_does(revisions, latest_ready, traffic, failed, message):
    made = [_ready(_aged("svc-00001", 1, "active", 0), None if r == "unready" else False) for r in revisions]
    with pytest.raises(TrafficError) as caught:
        resolve_traffic(_ksvc(traffic=traffic), made, latest_ready)
    assert (caught.value.reason, caught.value.failed, caught.value.message) == ("RevisionMissing", failed, message)


def test_revision_status_conditions_through_start_scale_to_zero_and_a_crash():
    revision = {"metadata": {"name": "svc-00001", "generation": 1}}
    conds = lambda status: {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}  # noqa: E731
    starting = revision_status(revision, RevisionObservation(1, 0), now=NOW)
    assert conds(starting) == {"Ready": ("Unknown", "Deploying"), "ResourcesAvailable": ("Unknown", "Deploying"),
                               "ContainerHealthy": ("Unknown", "Deploying"), "Active": ("Unknown", "Queued")}
    up = revision_status(revision, RevisionObservation(2, 2), starting, now=NOW + timedelta(seconds=5))
    assert conds(up)["Ready"] == ("True", None) and conds(up)["Active"] == ("True", None)
    assert (up["actualReplicas"], up["desiredReplicas"]) == (2, 2)
    idle = revision_status(revision, RevisionObservation(0, 0), up, now=NOW + timedelta(seconds=90))
    assert conds(idle)["Ready"] == ("True", None) and conds(idle)["Active"] == ("False", "NoTraffic")
    ready_since = next(c["lastTransitionTime"] for c in up["conditions"] if c["type"] == "Ready")
    assert next(c["lastTransitionTime"] for c in idle["conditions"] if c["type"] == "Ready") == ready_since
    crashed = revision_status(revision, RevisionObservation(1, 0, exit_code=2, failure_message="boom"), now=NOW)
    assert conds(crashed)["Ready"] == ("False", "ExitCode2")
    assert next(c["message"] for c in crashed["conditions"] if c["type"] == "ContainerHealthy") == "Container failed with: boom"
    never = revision_status(revision, RevisionObservation(1, 0, progress_deadline_exceeded=True), now=NOW)
    assert conds(never)["ResourcesAvailable"] == ("False", "ProgressDeadlineExceeded")


def test_store_keeps_a_knative_service_apart_from_a_core_service_of_the_same_name(tmp_path: Path):
    store = ObjectStore(tmp_path / "db.sqlite")
    core = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris-predictor"}, "spec": {"ports": []}}
    ksvc = {**_ksvc(name="iris-predictor"), "metadata": {"name": "iris-predictor"}}
    revision, _ = desired_revision(_ksvc(name="iris-predictor"), [], now=NOW)
    assert (store_kind(core), store_kind(ksvc), store_kind(revision)) == ("Service", KNATIVE_SERVICE, KNATIVE_REVISION)
    for obj in (core, ksvc, revision):
        store.put(obj)
    assert store.get("Service", "default", "iris-predictor")["spec"] == {"ports": []}
    got = store.get(KNATIVE_SERVICE, "default", "iris-predictor")
    assert (got["apiVersion"], got["kind"]) == ("serving.knative.dev/v1", "Service") and "template" in got["spec"]
    assert [r["metadata"]["name"] for r in store.list(KNATIVE_REVISION, "ns")] == ["iris-predictor-00001"]
    assert store.kinds() == [KNATIVE_REVISION, "Service", KNATIVE_SERVICE]
    assert store.delete(KNATIVE_SERVICE, "default", "iris-predictor") and store.find("Service", "default", "iris-predictor")
