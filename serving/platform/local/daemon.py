"""The embedded platform's daemon (``odh up``): KServe's controller and kubelet for one machine.

It stores applied objects in SQLite, reconciles every InferenceService and LLMInferenceService with
the same pure reconcilers a cluster would use, runs the resulting Deployments' replicas as processes,
writes status back, and serves the gateway port. A control API on a Unix socket in the state directory
takes applies, reads and deletes.

An LLMInferenceService's engines run with their runtime environment's interpreter (vLLM's own venv);
its router is started once an engine has an address, with one ``--engine`` flag per engine pod the
router's selector matches (ready or not: the router's monitor follows readiness), and is rolled to a
new replica when that set changes. The gateway routes ``/serving/{ns}/{name}/v1/...`` to the router.

SIGTERM/SIGINT stop the daemon and every replica. SIGHUP (``odh restart``) re-executes it in place and
loses no request: the gateway drains into its kernel backlog, and the next image takes over the
listening sockets, the fork server and every replica (``handover.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import uvicorn

from serving.config import DEFAULT_GATEWAY_PORT
from serving.errors import PlatformError, RuntimeResolutionError
from serving.knative import GROUP as KNATIVE_GROUP
from serving.kserve import (
    AdmissionConfig,
    PredictorObservation,
    ReconcileConfig,
    ReconcileError,
    admit_inference_service,
    builtin_runtimes,
    observe,
    reconcile,
    resolve_runtime,
)
from serving.kserve.llmisvc import KIND as LLMISVC
from serving.kserve.llmisvc import WorkloadObservation, admit_llm_inference_service, observe_llm
from serving.kserve.objects import USER_KINDS, admit_object
from serving.kserve.reconcile.canary import canaries, canary_statuses, traffic_weights
from serving.kserve.reconcile.llmd import (
    ENGINE_PORT,
    ENGINE_SELECTOR_ANNOTATION,
    KV_EVENTS_PORT,
    ROLE_LABEL,
    LLMReconcileConfig,
    engine_flag,
    reconcile_llm,
    with_engines,
)
from serving.kserve.reconcile.policy import AutoscalingPolicy, policies_by_deployment
from serving.kserve.runtimes import ResolvedRuntime
from serving.kserve.status import with_canary_status
from serving.kserve.types import ClusterServingRuntime, InferenceService, ServingRuntime
from serving.platform.local.api import build_api
from serving.platform.local.autoscalers import Autoscalers, AutoscalerSettings, engine_bounds
from serving.platform.local.deployments import DeploymentRunner
from serving.platform.local.failures import RECONCILE_FAILED, describe_failure, failed_status, ignored_status
from serving.platform.local.forkserver import ForkServer
from serving.platform.local.gateway import Gateway
from serving.platform.local.handover import (
    HANDOVER_FLAG,
    Adopter,
    Handover,
    inherit,
    inherited_socket,
    inherited_sockets,
    reap_exited_children,
)
from serving.platform.local.limits import PlatformLimits
from serving.platform.local.orphans import stop_orphans, stop_records
from serving.platform.local.peercred import allowed_uids, bind_private_socket, peer_checked_protocol, private_directory
from serving.platform.local.platform_config import PlatformConfig
from serving.platform.local.pods import PodPlan, zmq_subscribe_endpoint
from serving.platform.local.routes import Backend, RouteTable
from serving.platform.local.scrape_targets import ScrapeTargetsFile, targets_path
from serving.platform.local.serverless import ISVC_LABEL, AutoscalerCollector, ServerlessController
from serving.platform.local.store import KNATIVE_REVISION, KNATIVE_SERVICE, ObjectStore, store_kind
from serving.platform.local.tenancy import TENANCY_KINDS, Tenancy

if TYPE_CHECKING:
    from serving.storage import StorageSettings

log = logging.getLogger(__name__)

ISVC = "InferenceService"
OWNER_KINDS = (ISVC, LLMISVC)
OWNED_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "InferencePool", "HTTPRoute", KNATIVE_SERVICE,
               KNATIVE_REVISION, "ScaledObject")
RESYNC_SECONDS = 1.0
# ``odh restart``: how long the old image waits for the requests in flight, and then for replicas half
# started or being stopped, before it re-executes (what is still open then is cut).
RESTART_DRAIN_ENV = "ODH_RESTART_DRAIN_S"
RESTART_DRAIN_SECONDS = 30.0
RESTART_SETTLE_SECONDS = 15.0


class DaemonFiles:
    """Where a daemon keeps its files inside the state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.db = state / "platform.db"
        self.socket = state / "api.sock"
        self.info = state / "daemon.json"
        self.lock = state / "daemon.lock"
        self.log = state / "daemon.log"
        self.pods = state / "pods"


class Daemon:
    def __init__(self, state: Path, *, gateway_host: str = "127.0.0.1", gateway_port: int = DEFAULT_GATEWAY_PORT) -> None:
        self.files = DaemonFiles(state)
        private_directory(state)  # 0700: the control socket and the database are the daemon user's alone
        self.limits = PlatformLimits.from_env()
        self.store = ObjectStore(self.files.db)
        self.routes = RouteTable()
        self.gateway = Gateway(self.routes, limits=self.limits)  # ODH_* overrides reach the gateway too
        self.gateway_host = gateway_host
        self.gateway_port = gateway_port
        self.platform_config = PlatformConfig.load(state)  # <state>/config.yaml: defaults and the KPA's ConfigMap
        default_mode = self.platform_config.deployment.default_deployment_mode
        self.admission = AdmissionConfig(default_deployment_mode=default_mode)  # what an annotation-less apply gets
        self.config = ReconcileConfig(default_deployment_mode=default_mode)
        self.serverless = ServerlessController(self.store, self.routes, self._run, reconcile_config=self.config,
                                               autoscaler_config=self.platform_config.autoscaler, url_for=self.gateway.url_for)
        self.routes.on_activate = self._activate
        self.gateway.registry.register(AutoscalerCollector(self.serverless))
        self.llm_config = LLMReconcileConfig()
        self.scrape_targets = ScrapeTargetsFile(targets_path(state))
        self.builtin_runtimes = builtin_runtimes()  # read once: reconcile passes run every second
        self.runners: dict[tuple[str, str], DeploymentRunner] = {}
        # HPAs, ScaledObjects and LLM engine pools acting on the replica counts (autoscalers.py).
        self.autoscalers = Autoscalers(AutoscalerSettings.from_env(), self.store.set_status, self.wake,
                                       meter_for=self.routes.meter)
        # Forks model-server replicas from a pre-imported runtime (fork server, issue 11 item 5).
        self.fork_server = ForkServer.from_env(state)
        # odh restart (handover.py): open while the re-executed image adopts its predecessor's replicas; the
        # gateway's listening socket kept for the next image once draining began.
        self.adopter: Adopter | None = None
        self._listener: socket.socket | None = None
        self._draining: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._storage_settings: StorageSettings | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        # Per user object: the Deployments its last good reconcile ran (kept running while it fails),
        # and the failure last reported for it (logged once, not every pass).
        self._owned: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._failures: dict[tuple[str, str, str], str] = {}
        self._ignored: dict[tuple[str, str, str], str] = {}
        # ResourceQuotas and API-key Secrets (tenancy.py): quota admission, keys for the gateway and routers.
        self.tenancy = Tenancy(self)

    # -- the control API calls these -------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Admit and store ``obj``, one of the kinds users apply. An AdmissionError (any other kind, a bad
        field, replicas beyond the limit) leaves every stored object untouched."""
        if isinstance(obj, dict) and obj.get("kind") in TENANCY_KINDS:
            return self.tenancy.apply(obj)
        obj = admit_object(obj, max_replicas=self.limits.max_replicas, config=self.admission)
        self.tenancy.admit(obj)  # a ResourceQuota breach refuses it here, before anything changes
        stored, _ = self.store.put(obj)
        self.wake()
        return stored

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        deleted = self.store.delete(kind, namespace, name)
        self.wake()
        return deleted

    async def settle(self) -> None:
        """Reconcile now and wait until replicas being removed have stopped (deletes return after that)."""
        self.reconcile_all()
        await asyncio.gather(*list(self._stopping), return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    def _activate(self, namespace: str, revision: str) -> None:
        """The gateway holds a request for a revision without a ready replica: scale it from zero now."""
        self.serverless.activate(namespace, revision)
        self.wake()

    def ignored(self) -> list[dict[str, str]]:
        """Stored objects the daemon does not act on, with why and how to remove them."""
        return [{"kind": kind, "namespace": ns, "name": name, "message": message}
                for (kind, ns, name), message in sorted(self._ignored.items())]

    def pods(self) -> list[dict[str, Any]]:
        return [
            {"namespace": ns, "deployment": name, **vars(info)}
            for (ns, name), runner in self.runners.items()
            for info in runner.replica_infos()
        ]

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, handover: Handover | None = None) -> None:
        """Serve until SIGTERM/SIGINT (then stop every replica) or SIGHUP (then re-execute in place and hand
        everything to the next image); ``handover``: this image is that next one."""
        with _single_instance(self.files.lock, handover.lock_fd if handover else None) as lock:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._restart_requested)
            adopter = None
            clients: list[socket.socket] = []
            if handover is None:
                stop_orphans(self.files.pods)  # what a killed predecessor left running; replicas start fresh below
                if self.fork_server is not None:
                    await self.fork_server.start()  # imports in the background; replicas spawn until it is ready
            else:
                # Not inheritable from here on: no process this image starts may hold a client's connection.
                clients = inherited_sockets(handover.client_fds)
                adopter = await self._take_over(handover)
            # Bound 0600 in the 0700 state directory, and each peer's uid checked (its own or root); after a
            # restart, the same socket (calls made meanwhile waited in its backlog).
            api_socket = inherited_socket(handover.api_fd) if handover else bind_private_socket(self.files.socket)
            api = _QuietServer(uvicorn.Config(build_api(self), http=peer_checked_protocol(allowed_uids()), ws="none",
                                              log_level="warning", lifespan="off", access_log=False))
            api_task = asyncio.create_task(api.serve(sockets=[api_socket]))
            if handover is None or adopter is None:
                port = await self.gateway.start(self.gateway_host, self.gateway_port)
            else:
                port = await self._serve_adopted(inherited_socket(handover.gateway_fd), adopter, clients)
            self.gateway_port = port
            self.files.info.write_text(json.dumps({
                "pid": os.getpid(), "gateway": f"http://{self.gateway_host}:{port}", "gateway_port": port,
                "socket": str(self.files.socket), "state_dir": str(self.files.state),
                "started": time.time(),  # this image's: `odh restart` waits for a newer one
            }))
            log.info("odh daemon up%s: gateway http://%s:%d, api %s", " (restarted in place)" if handover else "",
                     self.gateway_host, port, self.files.socket)
            try:
                while not self._stop.is_set():
                    try:
                        self.reconcile_all()
                    except Exception:  # one bad object must not stop the platform
                        log.exception("reconcile pass failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_for_work(), RESYNC_SECONDS)
            finally:
                if self._listener is not None:
                    await self._hand_over(api, api_task, api_socket, lock)  # returns only if the exec failed
                api.should_exit = True
                await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
                if self.fork_server is not None:
                    await self.fork_server.stop()
                await self.gateway.stop()
                with contextlib.suppress(Exception):
                    await api_task
                self.files.socket.unlink(missing_ok=True)
                self.files.info.unlink(missing_ok=True)
                self.store.close()

    # -- odh restart (handover.py) ----------------------------------------------------------------

    def _restart_requested(self) -> None:
        """SIGHUP: drain the gateway, then leave the loop to re-execute in place."""
        if self._draining is None and not self._stop.is_set():
            self._draining = asyncio.create_task(self._drain_for_restart())

    async def _drain_for_restart(self) -> None:
        limit = float(os.environ.get(RESTART_DRAIN_ENV, RESTART_DRAIN_SECONDS))
        log.info("restart: the gateway stops accepting (new connections wait in its backlog), parks its idle "
                 "client connections for the next image and finishes the requests in flight")
        self._listener = self.gateway.stop_accepting()
        left = await self.gateway.drain(limit)
        if left:
            log.warning("restart: %d client connections still busy after %g s (%s); they are cut", left, limit,
                        RESTART_DRAIN_ENV)
        self._stop.set()

    async def _hand_over(self, api: uvicorn.Server, api_task: asyncio.Task[None], api_socket: socket.socket,
                         lock: IO[str]) -> None:
        """Re-execute this daemon in place, handing the next image the listening sockets, the lock, the fork
        server and (through their pid records) every replica. Returns only if the exec failed."""
        assert self._listener is not None
        api_listener = os.dup(api_socket.fileno())  # keeps the control socket listening while uvicorn stops
        api.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(api_task), 5.0)
        deadline = time.monotonic() + RESTART_SETTLE_SECONDS
        # A replica half started (no pid record yet) would be nobody's after the exec: polled, no event says so.
        while (self._stopping or not all(r.settled for r in self.runners.values())) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # From here on nothing awaits: no task may start a process the next image would not know of.
        zygote = self.fork_server.detach() if self.fork_server is not None else None
        self.gateway.park_idle_clients()  # those that finished their last request since the drain ended too
        clients = tuple(self.gateway.idle_client_fds())  # parked: idle, kept open across the exec
        handover = Handover(self._listener.fileno(), api_listener, lock.fileno(), zygote, clients)
        inherit(handover.fds())
        argv = [sys.executable, "-m", "serving.platform.local", "--state-dir", str(self.files.state),
                "--gateway-host", self.gateway_host, "--gateway-port", str(self.gateway_port),
                HANDOVER_FLAG, handover.to_arg()]
        log.info("restart: re-executing in place (pid %d), handing over %d idle client connections", os.getpid(),
                 len(clients))
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the next image handles it
        try:
            os.execv(sys.executable, argv)
        except OSError:
            log.exception("restart: exec failed; stopping instead")
            signal.signal(signal.SIGHUP, previous)
            if self.fork_server is not None:
                self.fork_server.reattach()
            os.close(api_listener)
            for fd in clients:
                os.close(fd)
            self._listener.close()

    async def _take_over(self, handover: Handover) -> Adopter:
        """The next image, first: the fork server its predecessor ran, and the replicas to adopt."""
        zygote = handover.zygote
        reap_exited_children(keep=[zygote.pid] if zygote else [])
        if self.fork_server is not None and zygote is not None:
            await self.fork_server.adopt(zygote)
        else:
            if zygote is not None:
                os.close(zygote.fd)  # fork server turned off: the zygote exits when its control socket closes
            if self.fork_server is not None:
                await self.fork_server.start()
        adopter = Adopter(self.files.pods, self.fork_server)
        await adopter.scan()
        return adopter

    async def _serve_adopted(self, listener: socket.socket, adopter: Adopter, clients: list[socket.socket]) -> int:
        """Reconcile once with ``adopter`` open (runners take over the live replicas), stop the replicas no
        runner took, then serve the gateway on the inherited listening socket and the ``clients``'
        connections its predecessor parked (requests sent on them meanwhile are answered now)."""
        # The URLs written into statuses are those of the same port.
        self.gateway.host, self.gateway.port = self.gateway_host, listener.getsockname()[1]
        self.adopter = adopter
        try:
            self.reconcile_all()
        except Exception:  # one bad object must not stop the platform
            log.exception("reconcile pass failed")
        finally:
            self.adopter = None
            unclaimed = adopter.close()
        if unclaimed:
            task = asyncio.create_task(asyncio.to_thread(stop_records, unclaimed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        port = await self.gateway.start(self.gateway_host, 0, sock=listener)
        adopted = await self.gateway.adopt_clients(clients)
        if clients:
            log.info("restart: %d of %d idle client connections adopted", adopted, len(clients))
        return port

    async def _wait_for_work(self) -> None:
        wake = asyncio.create_task(self._wake.wait())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({wake, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            stop.cancel()
        self._wake.clear()

    def reconcile_all(self) -> None:
        desired_deployments: set[tuple[str, str]] = set()
        live: set[tuple[str, str, str]] = set()
        for kind, reconcile_one in ((ISVC, self._reconcile_isvc), (LLMISVC, self._reconcile_llmisvc)):
            for obj in self.store.list(kind):
                key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
                live.add(key)
                try:
                    self._owned[key] = reconcile_one(obj)
                    self._failures.pop(key, None)
                except Exception as exc:  # one bad object must not stop the others
                    self._report_failure(key, obj, exc)
                desired_deployments |= self._owned.get(key, set())  # a failing object keeps what it ran
        for key in [k for k in self._owned if k not in live]:
            del self._owned[key]
            self._failures.pop(key, None)
        self._collect_garbage(live)
        for gone in [k for k in self.runners if k not in desired_deployments]:
            task = asyncio.create_task(self.runners.pop(gone).stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        for deployment, runner in self.runners.items():
            try:
                runner.step()
            except Exception:  # one Deployment's trouble must not stop the others' replicas
                log.exception("stepping Deployment %s/%s failed", *deployment)
        self.autoscalers.retain(desired_deployments)
        # Revisions run as "{revision}-deployment": the KPAs of revisions no longer run go.
        self.serverless.forget({(ns, d.removesuffix("-deployment")) for ns, d in desired_deployments})
        self.autoscalers.sync(self.runners)
        try:
            self.tenancy.sync()
        except Exception:  # quota status and keys are retried next pass; the replicas above are unaffected
            log.exception("tenancy sync failed")
        # Prometheus' file_sd targets (infra/prometheus/prometheus.yml): rewritten only when the set changes.
        self.scrape_targets.sync(self.gateway_host, self.gateway_port, self.runners, self.store)

    def _report_failure(self, key: tuple[str, str, str], stored: dict[str, Any], exc: Exception) -> None:
        """Write why ``key`` could not be reconciled into its status (and the log, once per reason)."""
        reason, message = describe_failure(exc)
        if self._failures.get(key) != message:
            self._failures[key] = message
            if reason == RECONCILE_FAILED:
                log.error("reconciling %s %s/%s failed", *key, exc_info=exc)
            else:
                log.warning("%s %s/%s cannot be reconciled: %s: %s", *key, reason, message)
        status = failed_status(stored.get("status"), reason, message, stored["metadata"].get("generation"))
        if status != stored.get("status"):
            self.store.set_status(*key, status)

    def _reconcile_isvc(self, stored: dict[str, Any]) -> set[tuple[str, str]]:
        ns, name = stored["metadata"]["namespace"], stored["metadata"]["name"]
        # Admitted again with today's limits: a database from before them (or a lowered limit) must not
        # start what apply would refuse now.
        isvc = admit_inference_service(stored, max_replicas=self.limits.max_replicas, config=self.admission)
        failure: tuple[str, str] | None = None
        deployments: set[tuple[str, str]] = set()
        runtime = None
        try:
            if isvc.spec.predictor.model is not None:  # custom containers need no runtime
                runtime = resolve_runtime(isvc, self._namespace_runtimes(ns), self._cluster_runtimes())
            children = reconcile(isvc, runtime, self.config, previous_status=stored.get("status") or None)
        except (RuntimeResolutionError, ReconcileError) as exc:
            failure = (exc.reason, exc.message)
            children = []
        ksvc = next((c for c in children if store_kind(c) == KNATIVE_SERVICE), None)
        if ksvc is not None or (failure and self._serverless_runs(ns, name)):
            return self._reconcile_serverless(isvc, stored, ksvc, runtime, failure)
        policies = policies_by_deployment(children)
        for child in children:
            self.store.put(child)
            if child["kind"] == "Deployment":
                key = (ns, child["metadata"]["name"])
                deployments.add(key)
                self._run(child, self._standard_replicas(key, child, children, policies.get(key)))
        if failure is not None:
            # Keep serving what already runs: a spec that cannot be reconciled changes nothing live.
            deployments = {k for k in self._owned.get((ISVC, ns, name), set()) if k in self.runners}
        desired = ready = 0
        for key in deployments:
            runner = self.runners[key]
            status = runner.status()
            self.store.set_status("Deployment", key[0], key[1], status)
            desired += runner.replicas
            ready += status["readyReplicas"]
            if runner.rollout_failed and failure is None:
                failure = ("ModelLoadFailed", runner.failure_message())
        self._route_standard(ns, name, deployments, traffic_weights(stored))
        observation = PredictorObservation(
            desired_replicas=desired,
            ready_replicas=ready,
            url=self.gateway.url_for(ns, name),
            failure_reason=failure[0] if failure else None,
            failure_message=failure[1] if failure else None,
            runtime=runtime.name if runtime else None,
            runtime_kind=runtime.kind if runtime else "ClusterServingRuntime",
            previous_revision_serving=failure is not None and ready > 0,
        )
        status = observe(isvc, observation, stored.get("status") or None)
        if canaries(stored):
            available = {k[1]: self.runners[k].status()["availableReplicas"] for k in deployments}
            status = with_canary_status(status, canary_statuses(stored, available), stored.get("status") or None)
        if status != stored.get("status"):
            self.store.set_status(ISVC, ns, name, status)
        return deployments

    def _standard_replicas(self, key: tuple[str, str], deployment: dict[str, Any], children: list[dict[str, Any]],
                           policy: AutoscalingPolicy | None) -> int:
        """What a Standard Deployment runs: its ``replicas`` (autoscaler class none, a KEDA canary), else what
        its HPA or ScaledObject decided, else (class external) what already runs, 1 at first."""
        if deployment["spec"].get("replicas") is not None:
            return int(deployment["spec"]["replicas"])
        runner = self.runners.get(key)
        current = runner.replicas if runner is not None else None
        if policy is None:
            return current if current is not None else 1
        owner = next(c for c in children if c["kind"] == policy.source and c["spec"]["scaleTargetRef"]["name"] == key[1])
        behavior = owner["spec"].get("behavior") if policy.source == "HorizontalPodAutoscaler" else (
            (owner["spec"].get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
        return self.autoscalers.replicas_for(policy, deployment, behavior, current)

    def _route_standard(self, ns: str, name: str, deployments: set[tuple[str, str]], weights: dict[str, int]) -> None:
        """One backend per Deployment (the stable one and each canary) at its weight, each metered apart."""
        names = sorted(key[1] for key in deployments)
        percents = _whole_percents({d: weights.get(d, 0) for d in names}, fallback=f"{name}-predictor")
        self.routes.set_split(ns, name, [
            Backend(revision=d, percent=percents[d], endpoints=tuple(self.runners[(ns, d)].endpoints()), tag=None, hold=True)
            for d in names])

    def _reconcile_serverless(self, isvc: InferenceService, stored: dict[str, Any], ksvc: dict[str, Any] | None,
                              runtime: ResolvedRuntime | None, failure: tuple[str, str] | None) -> set[tuple[str, str]]:
        """A Serverless InferenceService: Knative's Service, revisions and KPA (serverless.py). A spec that cannot
        be reconciled any more keeps every revision that runs, and says why in the status."""
        ns, name = isvc.namespace, isvc.name
        if ksvc is None:
            ksvc = self.store.get(KNATIVE_SERVICE, ns, f"{name}-predictor")
            ksvc = {k: v for k, v in ksvc.items() if k != "status"}
        deployments, status = self.serverless.reconcile(
            isvc, stored, ksvc, self.runners, (runtime.name if runtime else None, runtime.kind if runtime else "ClusterServingRuntime"),
            failure)
        if status != stored.get("status"):
            self.store.set_status(ISVC, ns, name, status)
        return deployments

    def _serverless_runs(self, namespace: str, name: str) -> bool:
        return self.store.find(KNATIVE_SERVICE, namespace, f"{name}-predictor") is not None

    def _run(self, deployment: dict[str, Any], replicas: int) -> DeploymentRunner:
        key = (deployment["metadata"].get("namespace", "default"), deployment["metadata"]["name"])
        runner = self.runners.get(key)
        if runner is None:
            runner = self.runners[key] = DeploymentRunner(deployment, replicas, self.files.pods, self._fetch_model,
                                                          self.wake, self._python_for, self.fork_server, self.adopter)
        else:
            runner.update(deployment, replicas)
        return runner

    def _reconcile_llmisvc(self, stored: dict[str, Any]) -> set[tuple[str, str]]:
        ns, name = stored["metadata"]["namespace"], stored["metadata"]["name"]
        children = reconcile_llm(admit_llm_inference_service(stored, max_replicas=self.limits.max_replicas), self.llm_config)
        deployments: set[tuple[str, str]] = set()
        engines: dict[str, DeploymentRunner] = {}  # by role
        router: dict[str, Any] | None = None
        bounds = engine_bounds(stored["spec"])  # spec.scaling: the engine scaler picks the count
        for child in children:
            if child["kind"] == "Deployment" and ENGINE_SELECTOR_ANNOTATION in (child["metadata"].get("annotations") or {}):
                router = child  # started below, once the engines have addresses
                continue
            role = child["spec"]["template"]["metadata"]["labels"].get(ROLE_LABEL, "both") if child["kind"] == "Deployment" else ""
            replicas = child["spec"].get("replicas", 1)
            if bounds is not None and role in ("both", "decode"):
                key = (ns, child["metadata"]["name"])
                current = self.runners[key].replicas if key in self.runners else None
                replicas = self.autoscalers.engine_replicas(key, *bounds, current)
                # As with an HPA's target, the count is the autoscaler's, not the Deployment's.
                child = {**child, "spec": {k: v for k, v in child["spec"].items() if k != "replicas"}}
            self.store.put(child)
            if child["kind"] == "Deployment":
                runner = self._run(child, replicas)
                deployments.add((ns, runner.name))
                engines[role] = runner
                if bounds is not None and role in ("both", "decode"):
                    self.autoscalers.set_engine_ports((ns, runner.name), [ports[ENGINE_PORT] for ports, _ in runner.desired_pods()])
        router_runner = None
        if router is not None:
            # Each engine publishes its KV events where materialize put them: a Unix socket in its pod directory.
            flags = [engine_flag(f"http://127.0.0.1:{ports[ENGINE_PORT]}",
                                 zmq_subscribe_endpoint(pod_dir, KV_EVENTS_PORT, ports[KV_EVENTS_PORT])
                                 if KV_EVENTS_PORT in ports else None, role)
                     for role, runner in sorted(engines.items()) for ports, pod_dir in runner.desired_pods()]
            if flags:
                router = with_engines(self.tenancy.router_with_keys(stored, router), flags)
                router_runner = self._run(router, router["spec"]["replicas"])
                deployments.add((ns, router_runner.name))
            self.store.put(router)
        for key in deployments:
            self.store.set_status("Deployment", key[0], key[1], self.runners[key].status())
        self.routes.set(ns, name, router_runner.endpoints() if router_runner else [])
        decode = engines.get("decode") or engines.get("both")
        status = observe_llm(
            stored,
            _observe(decode, decode.replicas if decode is not None and bounds is not None else stored["spec"]["replicas"]),
            _observe(router_runner, 1),
            self.gateway.url_for(ns, name),
            prefill=_observe(engines["prefill"], stored["spec"]["prefill"]["replicas"]) if "prefill" in engines else None,
            previous=stored.get("status") or None,
        )
        if status != stored.get("status"):
            self.store.set_status(LLMISVC, ns, name, status)
        return deployments

    def _python_for(self, plan: PodPlan) -> str:
        """The interpreter for a pod: its runtime environment's when the pod names one."""
        if not plan.runtime_env:
            return sys.executable
        from serving.runtimes.envs import get_recipe, runtime_env, runtime_python

        get_recipe(plan.runtime_env)  # an unknown name raises with the known ones
        python = runtime_python(plan.runtime_env, self.files.state)
        if python is None:
            where = runtime_env(plan.runtime_env, self.files.state).root
            raise PlatformError(f"runtime environment {plan.runtime_env!r} is not installed at {where}: "
                                f"run `odh runtime install {plan.runtime_env}` (same --state-dir / ODH_RUNTIMES_DIR)")
        return str(python)

    def _collect_garbage(self, live: set[tuple[str, str, str]]) -> None:
        """Delete children whose owner (an InferenceService or LLMInferenceService) is gone, and their routes;
        mark stored objects the daemon does not act on as ignored."""
        ignored: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {}
        for kind in OWNED_KINDS:
            for child in self.store.list(kind):
                ns, name = child["metadata"]["namespace"], child["metadata"]["name"]
                owner = _owner(child)
                if owner is None:
                    ignored[(kind, ns, name)] = (child, f"this {kind} is not owned by an {ISVC} or {LLMISVC}")
                elif (owner[0], ns, owner[1]) not in live:
                    self.store.delete(kind, ns, name)
        for kind in self.store.kinds():
            if kind not in USER_KINDS and kind not in OWNED_KINDS and kind not in TENANCY_KINDS:
                for obj in self.store.list(kind):
                    ignored[(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = (
                        obj, f"{kind} is not a kind this platform runs (users apply {', '.join(USER_KINDS)})")
        self._report_ignored(ignored)
        live_routes = {(ns, name) for _, ns, name in live}
        for ns_name in list(self.routes.snapshot()):
            ns, _, name = ns_name.partition("/")
            if (ns, name) not in live_routes:
                self.routes.remove(ns, name)

    def _report_ignored(self, ignored: dict[tuple[str, str, str], tuple[dict[str, Any], str]]) -> None:
        for key, (obj, why) in ignored.items():
            status = ignored_status(obj.get("status"), *key, why)
            if key not in self._ignored:
                log.warning("ignoring %s %s/%s: %s", *key, status["conditions"][-1]["message"])
            self._ignored[key] = status["conditions"][-1]["message"]
            if status != obj.get("status"):
                self.store.set_status(*key, status)
        for key in [k for k in self._ignored if k not in ignored]:
            del self._ignored[key]

    def _namespace_runtimes(self, namespace: str) -> list[ServingRuntime]:
        return [ServingRuntime.model_validate(o) for o in self.store.list("ServingRuntime", namespace)]

    def _cluster_runtimes(self) -> list[ClusterServingRuntime]:
        stored = [ClusterServingRuntime.model_validate(o) for o in self.store.list("ClusterServingRuntime")]
        names = {r.metadata.name for r in stored}
        return stored + [r for r in self.builtin_runtimes if r.metadata.name not in names]

    def _fetch_model(self, uri: str, dest: Path) -> Path:
        from serving.storage import StorageSettings, initialize

        if self._storage_settings is None:
            self._storage_settings = StorageSettings.for_state(self.files.state)
        return initialize(uri, dest, self._storage_settings)


def _owner(obj: dict[str, Any]) -> tuple[str, str] | None:
    """``(kind, name)`` of the InferenceService or LLMInferenceService that owns ``obj``; None when no
    well-formed reference names one (stored data may be junk: e.g. ``ownerReferences: ["x"]``)."""
    refs = obj.get("metadata", {}).get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, dict):
            continue
        if ref.get("kind") in OWNER_KINDS and isinstance(ref.get("name"), str):
            return ref["kind"], ref["name"]
        if str(ref.get("apiVersion", "")).startswith(f"{KNATIVE_GROUP}/"):
            # Knative's chain (Deployment -> Revision -> Service) ends at the InferenceService its label names.
            owner = (obj["metadata"].get("labels") or {}).get(ISVC_LABEL)
            if isinstance(owner, str):
                return ISVC, owner
    return None


def _whole_percents(weights: dict[str, int], fallback: str) -> dict[str, int]:
    """``weights`` made to sum to 100, as the gateway requires: a Deployment the weights do not name gets 0,
    and weights that name Deployments not running (yet) leave their share to the others, in proportion
    (the remainder to the largest). With no weight at all, ``fallback`` (the stable predictor), or the
    first Deployment, takes everything."""
    total = sum(weights.values())
    if not weights:
        return {}
    if total <= 0:
        first = fallback if fallback in weights else next(iter(weights))
        return {d: 100 if d == first else 0 for d in weights}
    scaled = {d: w * 100 // total for d, w in weights.items()}
    scaled[max(weights, key=lambda d: weights[d])] += 100 - sum(scaled.values())
    return scaled


def _observe(runner: DeploymentRunner | None, desired: int) -> WorkloadObservation:
    if runner is None:
        return WorkloadObservation(desired, 0)
    infos = runner.replica_infos()
    failure = next((i.message for i in infos if not i.ready and i.restarts and i.message), None)
    return WorkloadObservation(desired, sum(i.ready for i in infos), failure or (runner.plan_error or None))


@contextlib.contextmanager
def _single_instance(lock_path: Path, inherited_fd: int | None = None) -> Iterator[IO[str]]:
    """Hold the state directory's lock; ``inherited_fd``: the lock the previous image held across its exec."""
    with (os.fdopen(inherited_fd, "w") if inherited_fd is not None else lock_path.open("w")) as handle:
        os.set_inheritable(handle.fileno(), False)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PlatformError(f"another odh daemon already runs on {lock_path.parent}") from exc
        yield handle


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and shuts down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
