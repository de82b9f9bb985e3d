"""Phase 7, operate: what every deployment is doing, measured from the platform's own metrics (pure of Prefect).

``observe`` reads two gateway scrapes and the platform's objects; ``assess`` turns them into each
deployment's traffic (rate, errors, p50/p95), health (Ready, replicas, restarts, crash loops) and SLO
state; ``alerts`` decides what changed since the last run; ``overview`` renders the dashboard table;
``snapshot`` keeps what the next run compares against.
"""

from serving.operate.alerts import Alert, Delivery, message, remembered_states, transitions, webhook
from serving.operate.assess import Assessment, assess
from serving.operate.health import Health, assess_health
from serving.operate.inventory import Inventory, PodState, Served, TrafficTarget, build_inventory
from serving.operate.observe import Observation, observe, read_inventory
from serving.operate.overview import render_overview
from serving.operate.scrape import Histogram, Scrape, parse_metrics, scrape_gateway
from serving.operate.slo import SloState, evaluate_slo
from serving.operate.snapshot import Snapshot, load_snapshot, save_snapshot
from serving.operate.window import TrafficFigures, histogram_quantile, traffic_figures

__all__ = [
    "Alert", "Assessment", "Delivery", "Health", "Histogram", "Inventory", "Observation", "PodState", "Scrape", "Served",
    "SloState", "Snapshot", "TrafficFigures", "TrafficTarget", "assess", "assess_health", "build_inventory",
    "evaluate_slo", "histogram_quantile", "load_snapshot", "message", "observe", "parse_metrics", "read_inventory",
    "remembered_states", "render_overview", "save_snapshot", "scrape_gateway", "traffic_figures", "transitions", "webhook",
]
