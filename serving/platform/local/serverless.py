"""Serverless InferenceServices on the embedded platform: Knative Serving's controllers, run for real.

Each reconcile pass of a Serverless InferenceService goes the way a cluster would take it:

    ksvc (KServe's reconcile) -> Revision per template change (immutable) -> replicas per revision, as
    many as its KPA decides -> each Revision's status -> the ksvc's status and traffic -> the gateway's
    split between revisions -> the InferenceService's status (KServe's Serverless propagation).

The pure parts live in ``serving.knative`` (revisions, traffic, status) and ``serving.autoscaling``
(the KPA); this module only connects them to the store, the replica runners and the gateway. A
revision's replicas run as a Deployment named ``{revision}-deployment``, as Knative names it.

The gateway measures each revision (``RouteTable.meter``) and holds requests for a revision without a
ready replica (its activator), calling ``activate``: the revision's KPA then wants at least one replica
at once, and the daemon's next pass starts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.autoscaling import KPA, AutoscalerConfig, ScaleDecision, kpa_settings
from serving.autoscaling.settings import KPASettings
from serving.errors import AdmissionError
from serving.knative import (
    GCConfig,
    RevisionNameTaken,
    RevisionObservation,
    collectable,
    desired_revision,
    latest_created,
    referenced_revisions,
    revision_status,
    revisions_of,
    routing_updates,
    service_status,
)
from serving.kserve.reconcile.config import ReconcileConfig
from serving.kserve.status import ServerlessObservation, observe_serverless
from serving.kserve.types import InferenceService
from serving.platform.local.deployments import HASH_ANNOTATION, DeploymentRunner
from serving.platform.local.routes import Backend, RouteTable
from serving.platform.local.store import KNATIVE_REVISION, KNATIVE_SERVICE, ObjectStore

log = logging.getLogger(__name__)

ISVC_LABEL = "serving.kserve.io/inferenceservice"
REPORT_PERIOD = 1.0  # seconds between meter reports fed to a KPA (Knative's scrape interval)

Run = Callable[[dict[str, Any], int], DeploymentRunner]


def revision_deployment(revision: dict[str, Any]) -> dict[str, Any]:
    """The Deployment that runs ``revision``'s replicas (Knative's ``{revision}-deployment``)."""
    meta = revision["metadata"]
    labels = {**(meta.get("labels") or {}), "serving.knative.dev/revision": meta["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{meta['name']}-deployment",
            "namespace": meta.get("namespace") or "default",
            "labels": labels,
            # The template of a revision never changes: its name is its hash.
            "annotations": {HASH_ANNOTATION: meta["name"]},
            "ownerReferences": [{"apiVersion": revision["apiVersion"], "kind": "Revision", "name": meta["name"],
                                 "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "selector": {"matchLabels": {"serving.knative.dev/revision": meta["name"]}},
            "template": {"metadata": {"labels": labels, "annotations": dict(meta.get("annotations") or {})},
                         "spec": {k: v for k, v in revision["spec"].items()
                                  if k not in ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds")}},
        },
    }


@dataclass
class RevisionScaler:
    """One revision's KPA and when its meter was last read."""

    kpa: KPA
    settings: KPASettings
    last_report: float
    decision: ScaleDecision | None = None
    ready: int = 0


class AutoscalerCollector(Collector):
    """Each revision's KPA on the gateway's /metrics, under Knative's autoscaler metric names."""

    def __init__(self, controller: ServerlessController) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace_name", "revision_name"]
        families = {
            "desired": GaugeMetricFamily("odh_autoscaler_desired_pods", "Pods the KPA wants", labels=labels),
            "actual": GaugeMetricFamily("odh_autoscaler_actual_pods", "Ready pods of the revision", labels=labels),
            "panic": GaugeMetricFamily("odh_autoscaler_panic_mode", "1 while the KPA is in panic mode", labels=labels),
            "stable": GaugeMetricFamily("odh_autoscaler_stable_request_concurrency",
                                        "Average concurrency (or rps) over the stable window", labels=labels),
            "panic_value": GaugeMetricFamily("odh_autoscaler_panic_request_concurrency",
                                             "Average concurrency (or rps) over the panic window", labels=labels),
            "target": GaugeMetricFamily("odh_autoscaler_target_concurrency_per_pod", "The per-pod target", labels=labels),
            "ebc": GaugeMetricFamily("odh_autoscaler_excess_burst_capacity", "Excess burst capacity", labels=labels),
        }
        for (ns, revision), scaler in list(self._controller.scalers.items()):
            decision = scaler.decision
            if decision is None:
                continue
            values = [ns, revision]
            families["desired"].add_metric(values, decision.desired)
            families["actual"].add_metric(values, scaler.ready)
            families["panic"].add_metric(values, 1.0 if decision.panic else 0.0)
            families["stable"].add_metric(values, decision.stable_value)
            families["panic_value"].add_metric(values, decision.panic_value)
            families["target"].add_metric(values, scaler.settings.target)
            families["ebc"].add_metric(values, decision.excess_burst_capacity)
        yield from families.values()


class ServerlessController:
    def __init__(self, store: ObjectStore, routes: RouteTable, run: Run, *, reconcile_config: ReconcileConfig,
                 autoscaler_config: AutoscalerConfig, url_for: Callable[[str, str], str],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.routes = routes
        self._run = run
        self.reconcile_config = reconcile_config
        self.autoscaler_config = autoscaler_config
        self._url_for = url_for
        self._clock = clock
        self._wall = wall
        self.scalers: dict[tuple[str, str], RevisionScaler] = {}
        self.gc = GCConfig()

    def activate(self, namespace: str, revision: str) -> None:
        """A request waits for ``revision``, which has no ready replica: want one now (the gateway calls this)."""
        scaler = self.scalers.get((namespace, revision))
        if scaler is not None:
            scaler.kpa.activate(self._clock())

    def reconcile(self, isvc: InferenceService, stored: dict[str, Any], ksvc: dict[str, Any],
                  runners: dict[tuple[str, str], DeploymentRunner], runtime: tuple[str | None, str],
                  failure: tuple[str, str] | None) -> tuple[set[tuple[str, str]], dict[str, Any]]:
        """Run ``ksvc`` (what KServe rendered for ``isvc``); returns the Deployments it runs and the isvc status."""
        ns, name = isvc.namespace, isvc.name
        now, wall = self._clock(), self._wall()
        ksvc_name = ksvc["metadata"]["name"]
        previous_ksvc = self.store.find(KNATIVE_SERVICE, ns, ksvc_name)
        ksvc, _ = self.store.put(ksvc)  # with its uid: revisions name it as their owner
        ksvc = {k: v for k, v in ksvc.items() if k != "status"}
        revisions = revisions_of(ksvc_name, self.store.list(KNATIVE_REVISION, ns))
        try:
            revision, created = desired_revision(ksvc, revisions, now=wall)
            if created:
                stored_revision, _ = self.store.put(revision)
                revisions.append(stored_revision)
                log.info("%s/%s: new revision %s", ns, name, revision["metadata"]["name"])
        except RevisionNameTaken as exc:
            failure = failure or ("RevisionNameTaken", str(exc))
        previous_status = (previous_ksvc or {}).get("status") or {}
        routed = referenced_revisions(previous_status.get("traffic") or [])
        latest = latest_created(ksvc, revisions)
        deployments: set[tuple[str, str]] = set()
        latest_replicas = latest_ready = 0
        latest_failure: tuple[str, str] | None = None
        for revision in revisions:
            rev_name = revision["metadata"]["name"]
            reachable = rev_name in routed or (latest is not None and rev_name == latest["metadata"]["name"])
            deployment = revision_deployment(revision)
            key = (ns, deployment["metadata"]["name"])
            runner = runners.get(key)
            ready = runner.status()["readyReplicas"] if runner else 0
            try:
                decision = self._decide(ns, revision, reachable, ready, now)
            except AdmissionError as exc:  # a bad autoscaling annotation: the revision cannot run
                failure = failure or ("InvalidSpec", str(exc))
                continue
            self.store.put(deployment)
            runner = self._run(deployment, decision.desired)
            deployments.add(key)
            runner_status = runner.status()
            self.store.set_status("Deployment", ns, key[1], runner_status)
            ready = runner_status["readyReplicas"]
            failed = runner.rollout_failed
            rev_observation = RevisionObservation(
                desired_replicas=decision.desired,
                ready_replicas=ready,
                activation_threshold=max(self.scalers[(ns, rev_name)].settings.min_scale, 1),
                failure_reason="ModelLoadFailed" if failed else None,
                failure_message=runner.failure_message() if failed else None,
                progress_deadline_exceeded=failed,
            )
            status = revision_status(revision, rev_observation, revision.get("status") or None, now=wall)
            if status != revision.get("status"):
                self.store.set_status(KNATIVE_REVISION, ns, rev_name, status)
            revision["status"] = status
            if latest is not None and rev_name == latest["metadata"]["name"]:
                latest_replicas, latest_ready = decision.desired, ready
                if failed:
                    latest_failure = ("ModelLoadFailed", runner.failure_message())
        ksvc_status = service_status(ksvc, revisions, previous_status or None, domain=self.reconcile_config.ingress_domain,
                                     scheme=self.reconcile_config.url_scheme, now=wall)
        ksvc_status = self._gateway_urls(ksvc_status, ns, name)
        if ksvc_status != previous_status:
            self.store.set_status(KNATIVE_SERVICE, ns, ksvc_name, ksvc_status)
        self._route(ns, name, ksvc_status, revisions, runners)
        self._collect(ksvc_name, ns, revisions, ksvc_status, wall)
        failure = failure or latest_failure
        observation = ServerlessObservation(
            ksvc_status=ksvc_status,
            latest_revision_replicas=latest_replicas,
            latest_revision_ready_replicas=latest_ready,
            failure_reason=failure[0] if failure else None,
            failure_message=failure[1] if failure else None,
            runtime=runtime[0],
            runtime_kind=runtime[1],
        )
        status = observe_serverless(isvc, observation, stored.get("status") or None, url_scheme=self.reconcile_config.url_scheme,
                                    now=wall)
        status["url"] = self._url_for(ns, name)  # what this machine's gateway answers on
        status["address"] = {"url": status["url"]}
        return deployments, status

    def forget(self, live: set[tuple[str, str]]) -> None:
        """Drop the KPAs of revisions no longer run (``live``: (namespace, revision))."""
        for key in [k for k in self.scalers if k not in live]:
            del self.scalers[key]

    # -- parts -------------------------------------------------------------------------------------

    def _decide(self, ns: str, revision: dict[str, Any], reachable: bool, ready: int, now: float) -> ScaleDecision:
        rev_name = revision["metadata"]["name"]
        settings = kpa_settings(revision["metadata"].get("annotations") or {}, self.autoscaler_config,
                                container_concurrency=int(revision["spec"].get("containerConcurrency") or 0),
                                reachable=reachable, name=rev_name)
        scaler = self.scalers.get((ns, rev_name))
        if scaler is None:
            scaler = self.scalers[(ns, rev_name)] = RevisionScaler(KPA(settings, now, ready), settings, now)
        elif scaler.settings != settings:
            scaler.kpa.update(settings)
            scaler.settings = settings
        if now - scaler.last_report >= REPORT_PERIOD:
            stat = self.routes.meter(ns, rev_name).report(now)
            scaler.kpa.record(now, stat.concurrency, stat.rps, stat.period)
            scaler.last_report = now
        decision = scaler.kpa.desired(now, ready)
        scaler.ready = ready
        if scaler.decision is None or (decision.desired, decision.panic) != (scaler.decision.desired, scaler.decision.panic):
            log.info("%s/%s: KPA wants %d (ready %d, panic %s): %s", ns, rev_name, decision.desired, ready,
                     decision.panic, decision.reason)
        scaler.decision = decision
        return decision

    def _gateway_urls(self, ksvc_status: dict[str, Any], ns: str, name: str) -> dict[str, Any]:
        """Tagged traffic is reachable on this machine at the gateway's ``{tag}-{name}`` route."""
        traffic = []
        for target in ksvc_status.get("traffic") or []:
            target = dict(target)
            if target.get("tag"):
                target["url"] = self._url_for(ns, f"{target['tag']}-{name}")
            traffic.append(target)
        return {**ksvc_status, "traffic": traffic}

    def _route(self, ns: str, name: str, ksvc_status: dict[str, Any], revisions: list[dict[str, Any]],
               runners: dict[tuple[str, str], DeploymentRunner]) -> None:
        failed = {r["metadata"]["name"] for r in revisions
                  if any(c.get("type") == "Ready" and c.get("status") == "False" for c in (r.get("status") or {}).get("conditions") or [])}
        backends = []
        for target in ksvc_status.get("traffic") or []:
            rev_name = target.get("revisionName")
            if not rev_name:
                continue
            runner = runners.get((ns, f"{rev_name}-deployment"))
            backends.append(Backend(revision=rev_name, percent=int(target.get("percent") or 0),
                                    endpoints=tuple(runner.endpoints()) if runner else (), tag=target.get("tag") or None,
                                    hold=rev_name not in failed))
        self.routes.set_split(ns, name, backends)

    def _collect(self, ksvc_name: str, ns: str, revisions: list[dict[str, Any]], ksvc_status: dict[str, Any], wall: datetime) -> None:
        """Knative's labeller (routing state) and revision garbage collection."""
        for updated in routing_updates(ksvc_name, revisions, referenced_revisions(ksvc_status.get("traffic") or []), now=wall):
            self.store.put(updated)
        for rev_name in collectable(ksvc_name, revisions, ksvc_status.get("latestReadyRevisionName"), self.gc, now=wall):
            log.info("%s: revision %s collected", ns, rev_name)
            self.store.delete(KNATIVE_REVISION, ns, rev_name)
            self.store.delete("Deployment", ns, f"{rev_name}-deployment")
