"""MLflow webhook signatures, events and what a new version asks of a deployment (pure).

Signed with MLflow's own signing function (mlflow/webhooks/delivery.py), so a change in how MLflow signs
fails here rather than in production."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from mlflow.webhooks.constants import WEBHOOK_DELIVERY_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER
from mlflow.webhooks.delivery import _generate_hmac_signature

from serving.registry.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IgnoredEvent,
    NewVersionEvent,
    Served,
    WebhookRefused,
    decide,
    parse_event,
    sign,
    unseen_versions,
    verify,
)

SECRET = "s3cret-for-tests"
NOW = 1_760_000_000.0


def mlflow_delivery(data: dict[str, object], entity: str = "model_version", action: str = "created",
                    secret: str = SECRET, timestamp: float = NOW) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as MLflow's _send_webhook_request builds them."""
    payload = json.dumps({"entity": entity, "action": action, "timestamp": "2025-10-09T00:00:00+00:00", "data": data})
    delivery_id, unix = str(uuid.uuid4()), str(int(timestamp))
    headers = {WEBHOOK_DELIVERY_ID_HEADER: delivery_id, WEBHOOK_TIMESTAMP_HEADER: unix,
               WEBHOOK_SIGNATURE_HEADER: _generate_hmac_signature(secret, delivery_id, unix, payload)}
    return {k.lower(): v for k, v in headers.items()}, payload.encode()


CREATED = {"name": "iris", "version": "2", "source": "models:/m-1", "run_id": None, "tags": {}, "description": None}


def refused(headers: dict[str, str], body: bytes, *, now: float = NOW) -> WebhookRefused:
    with pytest.raises(WebhookRefused) as caught:
        verify(SECRET, headers, body, now=now)
    return caught.value


def test_our_header_names_are_mlflows() -> None:
    ours = (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER)
    assert ours == (WEBHOOK_SIGNATURE_HEADER.lower(), WEBHOOK_TIMESTAMP_HEADER.lower(), WEBHOOK_DELIVERY_ID_HEADER.lower())


def test_sign_matches_mlflow_for_unicode_bodies() -> None:
    body = json.dumps({"data": {"description": "modèle ✓"}}, ensure_ascii=False)
    assert sign(SECRET, "id-1", "123", body.encode()) == _generate_hmac_signature(SECRET, "id-1", "123", body)


def test_a_delivery_mlflow_signed_verifies() -> None:
    headers, body = mlflow_delivery(CREATED)
    delivery = verify(SECRET, headers, body, now=NOW + 10)
    assert delivery.delivery_id == headers[DELIVERY_ID_HEADER]
    assert delivery.timestamp == int(NOW)


@pytest.mark.parametrize("forge", ["wrong secret", "body", "delivery id", "timestamp", "signature bytes"])
def test_forged_deliveries_fail_the_signature_check(forge: str) -> None:
    headers, body = mlflow_delivery(CREATED, secret="not-the-secret" if forge == "wrong secret" else SECRET)
    if forge == "body":
        body = body.replace(b'"2"', b'"3"')
    elif forge == "delivery id":
        headers[DELIVERY_ID_HEADER] = str(uuid.uuid4())
    elif forge == "timestamp":
        headers[TIMESTAMP_HEADER] = str(int(NOW) + 1)
    elif forge == "signature bytes":
        headers[SIGNATURE_HEADER] = "v1," + sign("x", "y", "z", b"")[3:]
    assert refused(headers, body).check == "signature"


@pytest.mark.parametrize(("offset", "word"), [(301, "ago"), (-301, "ahead"), (86_400 * 365, "ago")])
def test_stale_or_future_timestamps_are_refused(offset: float, word: str) -> None:
    headers, body = mlflow_delivery(CREATED)
    error = refused(headers, body, now=NOW + offset)
    assert error.check == "timestamp" and word in error.message


def test_the_replay_window_edges() -> None:
    headers, body = mlflow_delivery(CREATED)
    verify(SECRET, headers, body, now=NOW + 300)
    verify(SECRET, headers, body, now=NOW - 300)


@pytest.mark.parametrize(("header", "value"), [
    (SIGNATURE_HEADER, None), (TIMESTAMP_HEADER, None), (DELIVERY_ID_HEADER, None),
    (SIGNATURE_HEADER, ""), (SIGNATURE_HEADER, "v2,AAAA"), (SIGNATURE_HEADER, "v1,"), (SIGNATURE_HEADER, "v1,@@not-base64@@"),
    (SIGNATURE_HEADER, "sha256=abcdef"), (TIMESTAMP_HEADER, "soon"), (TIMESTAMP_HEADER, "-5"), (TIMESTAMP_HEADER, "1e9"),
    (TIMESTAMP_HEADER, "9" * 40), (DELIVERY_ID_HEADER, "x" * 500), (DELIVERY_ID_HEADER, "id\nwith-newline"),
])
def test_malformed_headers_are_refused_by_name(header: str, value: str | None) -> None:
    headers, body = mlflow_delivery(CREATED)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    error = refused(headers, body)
    assert error.check == "headers"
    assert header in error.message


def test_an_oversized_body_is_refused_before_any_hmac() -> None:
    headers, body = mlflow_delivery({**CREATED, "description": "x" * 70_000})
    assert refused(headers, body).check == "size"


def test_no_secret_configured_refuses_everything() -> None:
    headers, body = mlflow_delivery(CREATED, secret="")
    with pytest.raises(WebhookRefused) as caught:
        verify("", headers, body, now=NOW)
    assert caught.value.check == "signature"


def test_parse_model_version_created() -> None:
    _, body = mlflow_delivery(CREATED)
    assert parse_event(body) == NewVersionEvent("model_version.created", "iris", "2")


def test_parse_alias_created() -> None:
    _, body = mlflow_delivery({"name": "iris", "alias": "champion", "version": "3"}, entity="model_version_alias")
    assert parse_event(body) == NewVersionEvent("model_version_alias.created", "iris", "3", "champion")


@pytest.mark.parametrize(("entity", "action"), [("registered_model", "created"), ("model_version_tag", "set"),
                                                ("model_version_alias", "deleted"), ("prompt_version", "created")])
def test_other_events_are_acknowledged_and_ignored(entity: str, action: str) -> None:
    _, body = mlflow_delivery({"name": "iris"}, entity=entity, action=action)
    assert parse_event(body) == IgnoredEvent(f"{entity}.{action}")


@pytest.mark.parametrize(("body", "check"), [
    (b"{not json", "json"), (b"\xff\xfe", "json"), (b"[1, 2]", "payload"), (b'{"entity": 1, "action": "created"}', "payload"),
    (b'{"entity": "model_version", "action": "created", "data": "iris"}', "payload"),
    (b'{"entity": "model_version", "action": "created", "data": {"name": "iris", "version": "two"}}', "payload"),
    (b'{"entity": "model_version", "action": "created", "data": {"version": "2"}}', "payload"),
    (b'{"entity": "model_version_alias", "action": "created", "data": {"name": "iris", "version": "2"}}', "payload"),
])
def test_malformed_payloads_are_refused(body: bytes, check: str) -> None:
    with pytest.raises(WebhookRefused) as caught:
        parse_event(body)
    assert caught.value.check == check


def test_mlflow_example_payloads_parse() -> None:
    """MLflow's own example payloads (what its "test webhook" button sends) parse into our events."""
    from mlflow.webhooks.types import ModelVersionAliasCreatedPayload, ModelVersionCreatedPayload

    created = json.dumps({"entity": "model_version", "action": "created", "data": ModelVersionCreatedPayload.example()})
    alias = json.dumps({"entity": "model_version_alias", "action": "created",
                        "data": ModelVersionAliasCreatedPayload.example()})
    assert parse_event(created.encode()) == NewVersionEvent("model_version.created", "example_model", "1")
    assert parse_event(alias.encode()) == NewVersionEvent("model_version_alias.created", "example_model", "1", "example_alias")


def test_real_clock_is_within_the_window() -> None:
    headers, body = mlflow_delivery(CREATED, timestamp=time.time())
    verify(SECRET, headers, body, now=time.time())


# --- decide: a table over the policy ---------------------------------------------------------------------

CREATED_V3 = NewVersionEvent("model_version.created", "iris", "3")
CHAMPION_V3 = NewVersionEvent("model_version_alias.created", "iris", "3", "champion")
CHALLENGER_V3 = NewVersionEvent("model_version_alias.created", "iris", "3", "challenger")


@pytest.mark.parametrize(("event", "serving", "strategy", "watch", "act", "says"), [
    (CREATED_V3, "2", "canary", None, "rollout", "new version 3 (canary)"),
    (CREATED_V3, "2", "direct", None, "rollout", "(direct)"),
    (CREATED_V3, None, "canary", None, "rollout", "new version 3"),
    (CREATED_V3, "2", "manual", None, "skip", "manual"),
    (CHAMPION_V3, "2", "manual", "champion", "skip", "manual"),
    (CREATED_V3, "3", "canary", None, "skip", "already serves"),
    (CREATED_V3, "4", "canary", None, "skip", "older than version 4"),
    (CHAMPION_V3, "2", "canary", None, "skip", "no alias is watched"),
    (CREATED_V3, "2", "canary", "champion", "skip", "a new version alone"),
    (CHALLENGER_V3, "2", "canary", "champion", "skip", "not 'challenger'"),
    (CHAMPION_V3, "2", "canary", "champion", "rollout", "alias 'champion' moved to version 3"),
    (CHAMPION_V3, "4", "canary", "champion", "rollout", "alias 'champion'"),  # an alias moved back is a rollback asked for
    (CHAMPION_V3, "3", "canary", "champion", "skip", "already serves"),
])
def test_decide(event: NewVersionEvent, serving: str | None, strategy: str, watch: str | None, act: str, says: str) -> None:
    decision = decide(event, Served("default", "iris", serving, strategy, watch))
    assert (decision.act, decision.namespace, decision.name) == (act, "default", "iris")
    assert says in decision.reason


def test_decide_skips_a_deployment_whose_policy_does_not_parse() -> None:
    served = Served("ns", "iris", "2", "canary", None, policy_error="canary-percent '300' is not a whole percent")
    decision = decide(CREATED_V3, served)
    assert decision.act == "skip" and "odh apply" in decision.reason and "300" in decision.reason


@pytest.mark.parametrize(("versions", "serving", "seen", "newest"), [
    (["1", "2"], ["1"], None, "2"),
    (["1", "2", "3"], ["1"], None, "3"),  # only the newest: v2 is superseded
    (["1", "2"], ["1"], "2", None),  # seen already
    (["1", "2"], ["2"], None, None),  # serving already
    (["1", "2", "3"], ["3", "1"], None, "3"),  # one deployment still on v1
    (["1"], [None], None, "1"),  # a deployment that does not say what it serves
    (["1", "10", "9"], ["9"], None, "10"),  # numbers, not strings
    ([], ["1"], None, None),
])
def test_unseen_versions(versions: list[str], serving: list[str | None], seen: str | None, newest: str | None) -> None:
    assert unseen_versions(versions, serving, seen) == newest
