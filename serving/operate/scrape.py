"""One reading of the gateway's Prometheus text: what ``operate``, ``rollout`` and ``retire`` read of it.

A ``Scrape`` keeps only the families the window math and the drain read, keyed as the gateway labels them, so it is
small enough to persist between runs (``snapshot``) and compare with the next one. Bucket bounds stay the
``le`` strings Prometheus writes (``"+Inf"`` included): JSON has no infinity.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

ROUTE_REQUESTS = "odh_gateway_requests"
ROUTE_IN_FLIGHT = "odh_gateway_in_flight"
UPSTREAM_ERRORS = "odh_gateway_upstream_errors"
REVISION_REQUESTS = "odh_gateway_revision_requests"
REVISION_LATENCY = "odh_gateway_revision_request_duration_seconds"
SCRAPE_TIMEOUT = 5.0


class Histogram(BaseModel):
    """One histogram series: cumulative bucket counts by upper bound (``le``), their sum and count."""

    buckets: dict[str, float] = Field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0


class Scrape(BaseModel):
    """The gateway's figures at one instant (``taken_at``: Unix seconds).

    Keys: ``route`` is ``namespace/name`` (an InferenceService's route, or a tag's ``namespace/tag-name``);
    ``revision`` keys are ``namespace/revision``. Inner dicts map a status code or an error kind to its count.
    """

    taken_at: float
    route_requests: dict[str, dict[str, float]] = Field(default_factory=dict)
    route_in_flight: dict[str, float] = Field(default_factory=dict)  # a gauge: requests on the route right now
    upstream_errors: dict[str, dict[str, float]] = Field(default_factory=dict)
    revision_requests: dict[str, dict[str, float]] = Field(default_factory=dict)
    latency: dict[str, Histogram] = Field(default_factory=dict)


def parse_metrics(text: str, taken_at: float) -> Scrape:
    """The ``Scrape`` in a Prometheus text exposition (the families it does not know are skipped)."""
    scrape = Scrape(taken_at=taken_at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == ROUTE_REQUESTS + "_total":
                scrape.route_requests.setdefault(labels["route"], {})[labels["code"]] = sample.value
            elif sample.name == ROUTE_IN_FLIGHT:
                scrape.route_in_flight[labels["route"]] = sample.value
            elif sample.name == UPSTREAM_ERRORS + "_total":
                scrape.upstream_errors.setdefault(labels["route"], {})[labels["kind"]] = sample.value
            elif sample.name == REVISION_REQUESTS + "_total":
                key = f"{labels['namespace']}/{labels['revision']}"
                scrape.revision_requests.setdefault(key, {})[labels["code"]] = sample.value
            elif sample.name.startswith(REVISION_LATENCY):
                histogram = scrape.latency.setdefault(f"{labels['namespace']}/{labels['revision']}", Histogram())
                suffix = sample.name[len(REVISION_LATENCY):]
                if suffix == "_bucket":
                    histogram.buckets[labels["le"]] = sample.value
                elif suffix == "_sum":
                    histogram.sum = sample.value
                elif suffix == "_count":
                    histogram.count = sample.value
    return scrape


def scrape_gateway(gateway_url: str, *, timeout: float = SCRAPE_TIMEOUT, client: httpx.Client | None = None) -> Scrape:
    """GET ``{gateway_url}/metrics`` and parse it; raises httpx errors (transient: the task retries them)."""
    url = gateway_url.rstrip("/") + "/metrics"
    if client is not None:
        response = client.get(url, timeout=timeout)
    else:
        response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return parse_metrics(response.text, time.time())
