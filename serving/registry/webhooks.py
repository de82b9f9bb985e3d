"""MLflow model-registry webhooks: the signature check, the events we act on, and what each one asks (pure).

MLflow (3.x, ``mlflow/webhooks/delivery.py``) signs a delivery the Standard Webhooks way:

    X-MLflow-Delivery-Id: <uuid4>            the same on every retry of one delivery
    X-MLflow-Timestamp:   <unix seconds>
    X-MLflow-Signature:   v1,<base64(HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>"))>

over the exact body bytes it posts (``json.dumps`` of ``{entity, action, timestamp, data}``). A receiver
recomputes the HMAC over the raw bytes (never over re-serialised JSON), compares in constant time, and
refuses a timestamp outside the replay window either way (a delivery id seen before is the receiver's
job: it keeps them). Every refusal names the check that failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_ID_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"
REPLAY_WINDOW_S = 300.0
MAX_BODY_BYTES = 64 * 1024
MAX_DELIVERY_ID = 128

VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"

Check = Literal["headers", "timestamp", "signature", "size", "content-type", "json", "payload"]


class WebhookRefused(ValueError):
    """A delivery that must not be acted on; ``check`` names which check failed."""

    def __init__(self, check: Check, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


@dataclass(frozen=True)
class Delivery:
    """The authenticated envelope of one delivery."""

    delivery_id: str
    timestamp: int


@dataclass(frozen=True)
class NewVersionEvent:
    """A registry event that may start a rollout: a version was created, or an alias was pointed at one."""

    event: str
    model_name: str
    version: str
    alias: str | None = None


@dataclass(frozen=True)
class IgnoredEvent:
    """An event we are subscribed to or sent (e.g. MLflow's test delivery) but do not act on."""

    event: str


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for ``body`` (what a test or a relay signs with)."""
    signed = b".".join((delivery_id.encode(), timestamp.encode(), body))
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float,
           window_s: float = REPLAY_WINDOW_S, max_body: int = MAX_BODY_BYTES) -> Delivery:
    """The delivery when ``body`` is MLflow's, signed with ``secret`` within ``window_s`` of ``now``.

    ``headers`` are looked up lower-case (Starlette's and httpx's headers are case-insensitive already).
    Raises WebhookRefused naming the failed check; nothing about the body is trusted before this returns.
    """
    if not secret:
        raise WebhookRefused("signature", "the receiver has no secret configured")
    if len(body) > max_body:
        raise WebhookRefused("size", f"body of {len(body)} bytes is over the {max_body}-byte limit")
    delivery_id = headers.get(DELIVERY_ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    for header, value in ((DELIVERY_ID_HEADER, delivery_id), (TIMESTAMP_HEADER, timestamp),
                          (SIGNATURE_HEADER, signature)):
        if not value:
            raise WebhookRefused("headers", f"{header} is missing: is the MLflow webhook created with a secret?")
    if len(delivery_id) > MAX_DELIVERY_ID or not delivery_id.isascii() or not delivery_id.isprintable():
        raise WebhookRefused("headers", f"{DELIVERY_ID_HEADER} is not a delivery id")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise WebhookRefused("headers", f"{TIMESTAMP_HEADER} {timestamp[:32]!r} is not unix seconds")
    age = now - int(timestamp)
    if abs(age) > window_s:
        when = "old" if age > 0 else "in the future"
        raise WebhookRefused("timestamp", f"signed {abs(age):.0f} s {'ago' if age > 0 else 'ahead'}: "
                             f"too {when} for the {window_s:.0f} s replay window (check the clocks)")
    version, _, encoded = signature.partition(",")
    if version != SIGNATURE_VERSION or not encoded:
        raise WebhookRefused("headers", f"{SIGNATURE_HEADER} is not '{SIGNATURE_VERSION},<base64>'")
    try:
        given = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRefused("headers", f"{SIGNATURE_HEADER} is not base64") from exc
    expected = base64.b64decode(sign(secret, delivery_id, timestamp, body).partition(",")[2])
    if not hmac.compare_digest(given, expected):
        raise WebhookRefused("signature", "the HMAC does not match: wrong secret, or the body was altered")
    return Delivery(delivery_id, int(timestamp))


def parse_event(body: bytes) -> NewVersionEvent | IgnoredEvent:
    """The typed event of a verified body; raises WebhookRefused ("json"/"payload") when it is not MLflow's shape."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRefused("json", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise WebhookRefused("payload", "the body is not a JSON object")
    entity, action, data = document.get("entity"), document.get("action"), document.get("data")
    if not isinstance(entity, str) or not isinstance(action, str):
        raise WebhookRefused("payload", "'entity' and 'action' must be strings")
    event = f"{entity}.{action}"
    if event not in (VERSION_CREATED, ALIAS_CREATED):
        return IgnoredEvent(event)
    if not isinstance(data, dict):
        raise WebhookRefused("payload", f"{event}: 'data' must be an object")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version.isdigit():
        raise WebhookRefused("payload", f"{event}: data.name must be a model name and data.version a version number")
    if event == VERSION_CREATED:
        return NewVersionEvent(event, name, version)
    alias = data.get("alias")
    if not isinstance(alias, str) or not alias:
        raise WebhookRefused("payload", f"{event}: data.alias must be an alias name")
    return NewVersionEvent(event, name, version, alias)


# --- what a new version asks of each deployment that serves the model ----------------------------------

Act = Literal["rollout", "skip"]


@dataclass(frozen=True)
class Served:
    """A deployment serving a registered model, as far as deciding goes."""

    namespace: str
    name: str
    serving_version: str | None
    strategy: str  # LifecyclePolicy.rollout_strategy
    watch_alias: str | None
    policy_error: str | None = None  # the lifecycle annotations do not parse: nothing is rolled out


@dataclass(frozen=True)
class Decision:
    namespace: str
    name: str
    act: Act
    reason: str


def decide(event: NewVersionEvent, served: Served) -> Decision:
    """Whether ``event`` rolls ``served`` out, and why (the run's artifact shows each reason).

    - ``manual``: never; a person runs ``odh rollout``.
    - ``watch_alias`` set: only that alias's events act, a bare ``created`` waits for the alias to move.
    - no watched alias: only ``created`` acts, and only for a version newer than the one serving; alias
      events are ignored (rollout itself moves ``champion`` on promotion, which must not start another).
    - the version that already serves is never rolled out again.
    """
    def skip(reason: str) -> Decision:
        return Decision(served.namespace, served.name, "skip", reason)

    if served.policy_error is not None:
        return skip(f"lifecycle annotations are wrong, fix them with `odh apply`: {served.policy_error}")
    if served.strategy == "manual":
        return skip("rollout strategy is manual: run `odh rollout` to roll it out")
    if served.serving_version == event.version:
        return skip(f"version {event.version} already serves")
    if served.watch_alias is not None:
        if event.alias is None:
            return skip(f"watches alias {served.watch_alias!r}: a new version alone does not roll out")
        if event.alias != served.watch_alias:
            return skip(f"watches alias {served.watch_alias!r}, not {event.alias!r}")
        return Decision(served.namespace, served.name, "rollout",
                        f"alias {event.alias!r} moved to version {event.version} ({served.strategy})")
    if event.alias is not None:
        return skip(f"alias {event.alias!r} moved, but no alias is watched (serving.odh.io/watch-alias)")
    if served.serving_version is not None and served.serving_version.isdigit() \
            and int(event.version) < int(served.serving_version):
        return skip(f"version {event.version} is older than version {served.serving_version} serving")
    return Decision(served.namespace, served.name, "rollout", f"new version {event.version} ({served.strategy})")


def unseen_versions(versions: list[str], serving: list[str | None], seen: str | None) -> str | None:
    """The newest of ``versions`` above the oldest version serving and above the last one seen, if any (polling).

    The oldest, not the newest: a deployment still on v1 wants v3 even when another already serves it.
    """
    serving_numbers = [int(v) for v in serving if v is not None and v.isdigit()]
    floor = max(min(serving_numbers, default=0), int(seen) if seen is not None and seen.isdigit() else 0)
    newer = [int(v) for v in versions if v.isdigit() and int(v) > floor]
    return str(max(newer)) if newer else None
