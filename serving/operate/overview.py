"""The serving overview: one markdown table row per deployment, the platform's dashboard (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from serving.operate.alerts import Alert, Delivery
from serving.operate.assess import Assessment
from serving.operate.inventory import TrafficTarget

COLUMNS = ("Deployment", "Kind", "Mode", "Model", "Replicas", "Traffic", "RPS", "Errors", "p50", "p95", "SLO", "Health")


def traffic_split(targets: Sequence[TrafficTarget]) -> str:
    """``iris-predictor-00002: 80% (latest), iris-predictor-00001: 20% [prev]``."""
    parts = []
    for target in targets:
        notes = " (latest)" if target.latest else ""
        tag = f" [{target.tag}]" if target.tag else ""
        parts.append(f"{target.revision}: {target.percent}%{notes}{tag}")
    return ", ".join(parts) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(assessment: Assessment) -> tuple[str, ...]:
    served, traffic, health = assessment.served, assessment.traffic, assessment.health
    model = f"{served.model_name} v{served.model_version}" if served.model_name else "-"
    state = "Ready" if health.healthy else f"{health.state}: {health.reason}"
    if health.restarts:
        state += f" (restarts {health.restarts}, +{health.new_restarts})"
    return (f"{served.namespace}/{served.name}", served.kind, served.mode, model,
            f"{health.ready_replicas}/{health.desired_replicas}", traffic_split(served.traffic),
            f"{traffic.request_rate:.2f}", f"{traffic.error_rate:.1%}", _ms(traffic.p50_ms), _ms(traffic.p95_ms),
            assessment.slo.describe(), state)


def table(assessments: Iterable[Assessment]) -> str:
    rows = [row(a) for a in assessments]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) if rows else "No deployments."


def render_overview(assessments: Sequence[Assessment], *, taken_at: float, window_seconds: float,
                    namespace: str | None = None, alerts: Sequence[Alert] = (), deliveries: Sequence[Delivery] = (),
                    notes: Sequence[str] = ()) -> str:
    """The overview document: the table, then this run's alerts, their delivery and anything else of note."""
    when = datetime.fromtimestamp(taken_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    scope = f"namespace `{namespace}`" if namespace else "all namespaces"
    unhealthy = sum(1 for a in assessments if a.state != "ok")
    lines = [f"# Serving overview: {len(assessments)} deployment(s), {unhealthy} need attention",
             "", f"{when}, {scope}, traffic over the last {window_seconds:.1f} s.", "", table(assessments), ""]
    lines += ["## Alerts this run", ""]
    lines += [f"- {_cell(a.line())}" for a in alerts] or ["None: no deployment changed state."]
    if deliveries:
        lines += ["", "## Delivery", ""]
        lines += [f"- {d.channel}: {'delivered' if d.ok else 'FAILED'}{f' ({d.detail})' if d.detail else ''}" for d in deliveries]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
