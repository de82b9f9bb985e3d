"""One deployment's whole picture for a window: what it is, its traffic, its health and its SLO (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.operate.health import Health, assess_health
from serving.operate.inventory import Inventory, Served
from serving.operate.scrape import Scrape
from serving.operate.slo import SloState, evaluate_slo, policy_of
from serving.operate.window import TrafficFigures, traffic_figures


@dataclass(frozen=True)
class Assessment:
    served: Served
    traffic: TrafficFigures
    health: Health
    slo: SloState

    @property
    def key(self) -> str:
        return self.served.key

    @property
    def state(self) -> str:
        """The state alerts follow: ``ok``, or what is wrong (health first: a crash loop explains its SLO)."""
        if not self.health.healthy:
            return self.health.state
        return "slo-breached" if self.slo.breached else "ok"

    def figures(self) -> dict[str, float]:
        """The numbers written to the model version (latencies only when a request was measured)."""
        out = {"request_rate": self.traffic.request_rate, "error_rate": self.traffic.error_rate,
               "ready_replicas": float(self.health.ready_replicas), "restarts": float(self.health.restarts)}
        if self.traffic.p50_ms is not None:
            out["p50_ms"] = self.traffic.p50_ms
        if self.traffic.p95_ms is not None:
            out["p95_ms"] = self.traffic.p95_ms
        return out


def assess(before: Scrape, after: Scrape, inventory: Inventory, previous_restarts: Mapping[str, int],
           namespace: str | None = None) -> list[Assessment]:
    """Every deployment (of ``namespace``; all when None) between the two scrapes."""
    figures = traffic_figures(before, after, inventory)
    out = []
    for served in inventory.in_namespace(namespace):
        policy, invalid = policy_of(dict(served.annotations))
        traffic = figures[served.key]
        slo = evaluate_slo(policy, traffic) if policy is not None else SloState("invalid", (invalid,))
        out.append(Assessment(served, traffic, assess_health(served, inventory, previous_restarts), slo))
    return out
