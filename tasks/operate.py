"""The operate flow's steps: observe the platform, assess every deployment, record metrics, alert, publish.

Each calls into ``serving.operate`` (and ``serving.registry.version_metrics``); what Prefect adds is
retries for transient failures and the notification block, which only exists on Prefect's side.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.core import Block

from serving.config import mlflow_artifact_root, mlflow_tracking_uri
from serving.errors import RegistryError
from serving.operate import (
    Alert,
    Assessment,
    Delivery,
    Observation,
    Snapshot,
    assess,
    load_snapshot,
    message,
    observe,
    save_snapshot,
    webhook,
)
from serving.platform.local.client import LocalPlatform
from serving.registry.version_metrics import VersionMetrics
from tasks._common import RETRIES, RETRY_DELAYS, resolve_state, retry_on_transient

OVERVIEW_KEY = "serving-overview"
SUMMARY_KEY = "operate-run"


@task(name="scrape", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def scrape(window_seconds: float, state: str | None = None) -> tuple[Observation, Snapshot | None]:
    """Two gateway scrapes and the platform's objects: since the last run's scrape when it is fresh, else a
    window measured now; returns the observation and the snapshot it started from."""
    root = resolve_state(state)
    snapshot = load_snapshot(root)
    with LocalPlatform(root) as platform:
        return observe(platform, snapshot, window_seconds), snapshot


@task(name="assess")
def assess_all(observation: Observation, namespace: str | None) -> list[Assessment]:
    return assess(observation.before, observation.after, observation.inventory, observation.previous_restarts, namespace)


@task(name="record-metrics", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS)
def record_metrics(assessments: list[Assessment], taken_at: float, state: str | None = None) -> list[str]:
    """Write each deployment's figures to the MLflow version it serves; returns one line per deployment.
    The same window logged twice (a retry) adds nothing: the timestamp and step are the window's end."""
    root = resolve_state(state)
    store = VersionMetrics(mlflow_tracking_uri(root), mlflow_artifact_root(root))
    lines = []
    for assessment in assessments:
        served = assessment.served
        if not (served.model_name and served.model_version):
            lines.append(f"{served.key}: no registry version labels, nothing recorded")
            continue
        try:
            link = store.record(served.model_name, served.model_version, assessment.figures(),
                                timestamp_ms=int(taken_at * 1000), step=int(taken_at))
        except RegistryError as exc:  # labels naming a version the registry does not have: say so, go on
            lines.append(f"{served.key}: not recorded: {exc}")
            continue
        lines.append(f"{served.key}: {served.model_name} v{served.model_version} (logged model {link.model_id})")
    return lines


@task(name="alert")
def send_alerts(alerts: list[Alert], webhook_url: str | None, block: Block | None, block_name: str | None) -> list[Delivery]:
    """Send the alerts through every channel given; a channel that fails is reported, the run goes on."""
    if not alerts:
        return []
    logger = get_run_logger()
    for alert in alerts:
        logger.warning("alert: %s", alert.line())
    deliveries = []
    if webhook_url:
        deliveries.append(webhook(webhook_url, alerts))
    if block is not None:
        subject, body = message(alerts)
        try:
            block.notify(body, subject)  # type: ignore[attr-defined]
            deliveries.append(Delivery(block_name or "notification block", True))
        except Exception as exc:  # any receiver failure is reported, never fails the run
            logger.warning("notification block %s failed: %s", block_name, exc)
            deliveries.append(Delivery(block_name or "notification block", False, f"{type(exc).__name__}: {exc}"))
    for delivery in deliveries:
        if not delivery.ok:
            logger.warning("alert delivery through %s failed: %s", delivery.channel, delivery.detail)
    return deliveries


@task(name="remember")
def remember(snapshot: Snapshot, state: str | None = None) -> str:
    return str(save_snapshot(resolve_state(state), snapshot))


@task(name="overview")
def publish_overview(overview: str, summary: str) -> None:
    """The overview under its fixed key (the Prefect UI shows its latest version: the platform's dashboard)
    and this run's summary."""
    create_markdown_artifact(key=OVERVIEW_KEY, markdown=overview, description="Every deployment: mode, version, "
                             "replicas, traffic split, rate, errors, latency, SLO and health")
    create_markdown_artifact(key=SUMMARY_KEY, markdown=summary, description=f"operate run at {time.strftime('%H:%M:%S')}")
