"""``operate``: phase 7, what every deployment is doing, written where people look, and alerts when it goes bad.

Each run measures a window of the gateway's metrics (since the previous run, or ``window_seconds`` on the
first), assesses every deployment's traffic, health and SLO, writes the figures to the MLflow version each
serves, alerts on what changed since the last run (through a webhook and/or a Prefect notification block)
and publishes the serving overview under the artifact key ``serving-overview``: the platform's dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

from prefect import flow, get_run_logger
from prefect.blocks.core import Block
from prefect.runtime import flow_run

from serving.operate import Alert, Assessment, Delivery, Snapshot, remembered_states, render_overview, transitions
from tasks.operate import assess_all, publish_overview, record_metrics, remember, scrape, send_alerts

MAX_WINDOW_SECONDS = 300.0


@dataclass(frozen=True)
class OperateReport:
    """What one operate run saw and did."""

    window_seconds: float
    assessments: list[Assessment]
    alerts: list[Alert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    overview: str = ""

    def assessment(self, key: str) -> Assessment | None:
        return next((a for a in self.assessments if a.key == key), None)


def _operate_run_name() -> str:
    """``operate-all-20250101-120000``, or with the namespace it looks at."""
    namespace = flow_run.parameters.get("namespace") or "all"
    return f"operate-{namespace}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def check_parameters(window_seconds: float, alert_webhook_url: str | None, notification_block: str | None) -> None:
    """Refuse bad input before anything is read or written, naming the parameter and the fix."""
    if not 0 < window_seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"window_seconds: {window_seconds} is not between 0 and {MAX_WINDOW_SECONDS:g}; "
                         "give the seconds between the two scrapes of a first run (default 5)")
    if alert_webhook_url is not None:
        parsed = urlparse(alert_webhook_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"alert_webhook_url: {alert_webhook_url!r} is not an http(s) URL; "
                             "give the receiver's full URL, e.g. http://127.0.0.1:9000/alerts")
    if notification_block is not None and notification_block.count("/") != 1:
        raise ValueError(f"notification_block: {notification_block!r} is not BLOCK-TYPE/NAME; give a saved "
                         "notification block as its type slug and name, e.g. custom-webhook/ops or slack-webhook/team")


def load_notification_block(name: str) -> Block:
    """The saved block, checked to be a notification block (it has ``notify``)."""
    try:
        block: Block = Block.load(name)  # type: ignore[assignment] # sync in a sync flow
    except ValueError as exc:
        raise ValueError(f"notification_block: no saved block {name!r} ({exc}); save one first "
                         "(e.g. CustomWebhookNotificationBlock(...).save('ops')) or fix the name") from exc
    if not callable(getattr(block, "notify", None)):
        raise ValueError(f"notification_block: {name!r} is a {type(block).__name__}, not a notification block")
    return block


@flow(name="operate", flow_run_name=_operate_run_name, log_prints=False)
def operate(namespace: str | None = None, window_seconds: float = 5.0, alert_webhook_url: str | None = None,
            notification_block: str | None = None, state_dir: str | None = None) -> OperateReport:
    """Assess every deployment (of ``namespace``; all when None): health, traffic, SLO; record and alert.

    ``window_seconds``: how far apart a first run's two scrapes are (later runs measure since the previous
    run, when that was under 10 minutes ago). ``alert_webhook_url`` receives alerts as JSON POSTs;
    ``notification_block`` names a saved Prefect notification block as ``BLOCK-TYPE/NAME``. Alerts go out
    when a deployment becomes unhealthy (not Ready, crash loop) or breaks its SLO, and when it recovers.
    """
    check_parameters(window_seconds, alert_webhook_url, notification_block)
    block = load_notification_block(notification_block) if notification_block else None
    logger = get_run_logger()
    observation, previous = scrape(window_seconds, state=state_dir)
    seconds = observation.after.taken_at - observation.before.taken_at
    assessments = assess_all(observation, namespace)
    metrics = record_metrics(assessments, observation.after.taken_at, state=state_dir)
    states = previous.alert_states if previous is not None else {}
    alerts = transitions(assessments, states)
    deliveries = send_alerts(alerts, alert_webhook_url, block, notification_block)
    delivered = not deliveries or any(d.ok for d in deliveries)
    live = {s.key for s in observation.inventory.served}
    remember(Snapshot(scrape=observation.after, restarts=observation.inventory.restarts(), gateway=observation.gateway,
                      alert_states=remembered_states(states, assessments, delivered, live)), state=state_dir)
    notes = [f"metrics: {line}" for line in metrics]
    if not observation.measured:
        notes.append("window: since the previous operate run")
    overview = render_overview(assessments, taken_at=observation.after.taken_at, window_seconds=seconds,
                               namespace=namespace, alerts=alerts, deliveries=deliveries, notes=notes)
    publish_overview(overview, _summary(assessments, alerts, deliveries, seconds))
    logger.info("operate: %d deployment(s), %d alert(s), window %.1f s", len(assessments), len(alerts), seconds)
    return OperateReport(seconds, assessments, alerts, deliveries, metrics, overview)


def _summary(assessments: list[Assessment], alerts: list[Alert], deliveries: list[Delivery], seconds: float) -> str:
    bad = [a for a in assessments if a.state != "ok"]
    lines = [f"# operate: {len(assessments)} deployment(s) over {seconds:.1f} s", "",
             f"- needing attention: {', '.join(f'{a.key} ({a.state})' for a in bad) or 'none'}",
             f"- alerts sent: {len(alerts)}"]
    lines += [f"- {d.channel}: {'delivered' if d.ok else 'FAILED: ' + d.detail}" for d in deliveries]
    return "\n".join(lines) + "\n"
