"""``odh``: the embedded platform and the model lifecycle from a terminal.

Heavy imports (Prefect, MLflow) happen inside the commands that need them, so ``odh status`` and
``odh validate`` answer quickly.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deployments.prefect_server import PREFECT_PORT
from deployments.rollout_command import rollout_command
from serving.config import DEFAULT_GATEWAY_PORT, state_dir
from serving.errors import AdmissionError, ServingError

if TYPE_CHECKING:
    from rich.status import Status

    from serving.platform.local import LocalPlatform

app = typer.Typer(help="odh-serving: KServe-compatible model serving, orchestrated by Prefect.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)

# Help panels of `odh deploy`'s options beyond the model itself.
_SERVING = "Serving decisions"
_LIFECYCLE = "Lifecycle policy"


# Choices of `odh deploy` (typer takes Enums, not Literals): the values of serving.decisions' and
# serving.lifecycle's Literal types, which the flow checks again.
class Traffic(StrEnum):
    steady = "steady"
    variable = "variable"
    bursty = "bursty"


class Mode(StrEnum):
    Standard = "Standard"
    Serverless = "Serverless"
    LLM_D = "LLM-D"


class ScalerClass(StrEnum):
    kpa = "kpa"
    hpa = "hpa"
    keda = "keda"
    llm_d = "llm-d"
    none = "none"


class Metric(StrEnum):
    concurrency = "concurrency"
    rps = "rps"
    cpu = "cpu"
    memory = "memory"
    custom = "custom"


class Rollout(StrEnum):
    canary = "canary"
    direct = "direct"
    manual = "manual"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)

StateOpt = Annotated[str | None, typer.Option("--state-dir", envvar="ODH_STATE_DIR", help="state directory (default ~/.odh)")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="namespace")]
# Not `exists=True`: a missing file gets the same one-line error as every other unreadable manifest.
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="YAML: InferenceService, LLMInferenceService or "
                                       "(Cluster)ServingRuntime; multi-document ok")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Escaped: messages name fields like metadata.annotations[serving.kserve.io/deploymentMode], which
    # rich would otherwise take for markup and drop. One line, however long.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _print_rejection(verb: str, doc: dict[str, Any], exc: AdmissionError) -> None:
    metadata = doc.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    err.print(f"[red]{verb}[/] {escape(str(doc.get('kind', '?')))} {escape(str(meta.get('name', '?')))}:", soft_wrap=True)
    for error in exc.errors:
        err.print(f"  - {escape(error.field)}: {escape(error.reason)}", soft_wrap=True)


@app.command()
def up(
    state: StateOpt = None,
    gateway_port: Annotated[int, typer.Option(help="gateway port (0 = any free port)")] = DEFAULT_GATEWAY_PORT,
    prefect: Annotated[bool, typer.Option("--prefect/--no-prefect", help="also start a Prefect server (UI and API) and "
                                          "the flow worker that serves every flow as a deployment")] = True,
    prefect_port: Annotated[int, typer.Option(min=1, max=65535, help="Prefect UI and API port")] = PREFECT_PORT,
    webhook_port: Annotated[int | None, typer.Option(min=1, max=65535, help="port of the MLflow webhook receiver, "
                                                     "default 4300 (runs with Prefect: a signed model_version.created "
                                                     "starts on-new-model-version)")] = None,
    max_replicas: Annotated[int | None, typer.Option(min=1, help="most replicas one workload may ask for "
                                                     "(default: from this machine's cores and memory)")] = None,
) -> None:
    """Start the embedded platform's daemon, and (unless --no-prefect) a Prefect server and the flow worker."""
    from serving.platform.local import start_daemon
    from serving.platform.local.limits import MAX_REPLICAS_ENV

    root = state_dir(state)
    env = {MAX_REPLICAS_ENV: str(max_replicas)} if max_replicas is not None else None
    with console.status("starting the odh daemon..."):
        try:
            info = start_daemon(root, gateway_port, env=env)
            limits = _platform(root).info().get("limits", {})
        except ServingError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"[green]odh is up[/]: gateway {info['gateway']}, state {root}")
    if max_replicas is not None and limits.get("max_replicas") != max_replicas:
        err.print(f"[yellow]note:[/] the daemon already running keeps its replica limit of {limits.get('max_replicas')}; "
                  "run `odh down` first to change it", soft_wrap=True)
    if prefect:
        api = _start_prefect(root, prefect_port)
        _start_webhook_receiver(root, webhook_port, api)


def _start_webhook_receiver(root: Path, port: int | None, api: str) -> None:
    """MLflow's registry webhooks land here; each verified new version starts on-new-model-version."""
    from deployments.webhooks import SECRET_FILE, WEBHOOK_PORT, start_receiver

    port = port or WEBHOOK_PORT

    try:
        with console.status(f"starting the MLflow webhook receiver on port {port}..."):
            url = start_receiver(root, port, api)
    except (OSError, RuntimeError) as exc:
        raise _fail(f"{exc} (the platform and Prefect are up; see {root / 'webhooks.log'})") from exc
    console.print(f"[green]webhooks[/]: {url} (secret in {root / SECRET_FILE}; `mlflow` create_webhook with that URL "
                  "and secret, events model_version.created and model_version_alias.created)", soft_wrap=True)


def _start_prefect(root: Path, port: int) -> str:
    """The Prefect server, then the flow worker (deployments applied, block types registered)."""
    from deployments.prefect_server import PrefectStartError, start_flow_worker, start_prefect_server

    try:
        with console.status(f"starting the Prefect server on port {port} (the first start sets up its database)..."):
            api = start_prefect_server(root, port)
        with console.status("starting the flow worker (imports the flows, applies their deployments)..."):
            worker = start_flow_worker(root, api)
    except PrefectStartError as exc:
        raise _fail(f"{exc} (the platform itself is up; `odh up --no-prefect` skips Prefect)") from exc
    console.print(f"[green]Prefect is up[/]: UI {api.removesuffix('/api')}; flows served: "
                  f"{', '.join(name.split('/')[0] for name in worker.get('deployments', {}))}")
    for name, why in (worker.get("missing") or {}).items():
        err.print(f"[yellow]not served:[/] {escape(name)}: {escape(why)}", soft_wrap=True)
    return api


@app.command()
def down(state: StateOpt = None) -> None:
    """Stop the flow worker, the Prefect server, the daemon and every replica it runs (deployments come back
    with the next `odh up`)."""
    from deployments.prefect_server import stop_flow_worker, stop_prefect_server
    from deployments.webhooks import stop_receiver
    from serving.platform.local import stop_daemon

    root = state_dir(state)
    with console.status("stopping the webhook receiver, the flow worker, Prefect and the odh daemon..."):
        stop_receiver(root)
        stop_flow_worker(root)
        stop_prefect_server(root)
        stopped = stop_daemon(root)
    console.print("[green]odh is down[/]" if stopped else "odh was not running")


@app.command()
def restart(state: StateOpt = None) -> None:
    """Restart the daemon in place without dropping a request: it drains, re-executes itself and adopts its
    running replicas (connections wait in the gateway's backlog meanwhile)."""
    from serving.platform.local.lifecycle import restart_daemon

    root = state_dir(state)
    with console.status("restarting the odh daemon..."):
        try:
            info = restart_daemon(root)
        except ServingError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"[green]odh restarted[/]: gateway {info['gateway']}, pid {info['pid']}")


@app.command()
def deploy(
    model_uri: Annotated[str, typer.Argument(help="a model file or directory, file://, s3://, pvc://, http(s)://, "
                                                   "hf://ORG/NAME or models:/NAME@ALIAS")],
    name: Annotated[str, typer.Option("--name", help="InferenceService (or LLMInferenceService) name")],
    model_format: Annotated[str | None, typer.Option("--format", help="sklearn, mlflow or huggingface (default: detected)")] = None,
    namespace: NamespaceOpt = "default",
    registered_model_name: Annotated[str | None, typer.Option("--model-name", help="registry name (default: --name)")] = None,
    alias: Annotated[str, typer.Option(help="registry alias to point at the version")] = "champion",
    replicas: Annotated[int, typer.Option(help="replicas (LLMs: vLLM engines)")] = 1,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="LLMs: an extra vLLM flag (repeat), "
                                                         "e.g. --engine-arg=--max-model-len=1024")] = None,
    engine_env: Annotated[list[str] | None, typer.Option("--engine-env", help="LLMs: KEY=VALUE for every engine (repeat)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for Ready (default 300; 900 for LLMs)")] = None,
    traffic: Annotated[Traffic, typer.Option(rich_help_panel=_SERVING,
                                             help="traffic pattern (the decision trees: bursty -> Serverless)")] = Traffic.steady,
    scale_to_zero: Annotated[bool, typer.Option(rich_help_panel=_SERVING, help="scale to zero when idle (Serverless, KPA)")] = False,
    max_replicas: Annotated[int | None, typer.Option(min=1, rich_help_panel=_SERVING,
                                                     help="most replicas the autoscaler may run (default: --replicas)")] = None,
    mode: Annotated[Mode | None, typer.Option(rich_help_panel=_SERVING,
                                              help="override the deployment mode the trees choose")] = None,
    autoscaler: Annotated[ScalerClass | None, typer.Option(rich_help_panel=_SERVING, help="override the autoscaler")] = None,
    metric: Annotated[Metric | None, typer.Option(rich_help_panel=_SERVING,
                                                  help="primary scaling metric (default by mode)")] = None,
    scale_target: Annotated[int | None, typer.Option(min=1, rich_help_panel=_SERVING, help="target per replica for --metric")] = None,
    cache_optimization: Annotated[bool, typer.Option(rich_help_panel=_SERVING,
                                                     help="LLMs: cache-aware routing wanted (LLM-D)")] = True,
    cluster_local: Annotated[bool, typer.Option(rich_help_panel=_SERVING, help="not exposed outside the cluster")] = False,
    token_auth: Annotated[bool, typer.Option(rich_help_panel=_SERVING, help="require the namespace's API key")] = False,
    rollout_strategy: Annotated[Rollout | None, typer.Option(rich_help_panel=_LIFECYCLE, help="how new versions go in "
                                                             "(on-new-model-version; default canary)")] = None,
    canary_percent: Annotated[int | None, typer.Option(min=1, max=99, rich_help_panel=_LIFECYCLE,
                                                       help="canary share for new versions (default 20)")] = None,
    analysis_window: Annotated[float | None, typer.Option(min=0.001, rich_help_panel=_LIFECYCLE,
                                                          help="seconds a canary is watched (default 60)")] = None,
    slo_error_rate: Annotated[float | None, typer.Option(min=0.0, max=1.0, rich_help_panel=_LIFECYCLE,
                                                         help="5xx share past which operate alerts (default 0.05)")] = None,
    slo_p95_ms: Annotated[float | None, typer.Option(min=0.001, rich_help_panel=_LIFECYCLE,
                                                     help="p95 latency past which operate alerts (default 1000)")] = None,
    watch_alias: Annotated[str | None, typer.Option(rich_help_panel=_LIFECYCLE,
                                                    help="only this alias's moves start a rollout")] = None,
    state: StateOpt = None,
) -> None:
    """Run the deploy flow (upload, register, configure, deploy, initialize, register service).

    `configure` follows the serving decision trees (mode, autoscaling, resources, networking) from the
    options under "Serving decisions"; its artifact in the Prefect UI shows each branch taken.

    With the Prefect server of `odh up`, the flow runs in the warm flow worker (seconds); without one
    (`odh up --no-prefect`), in this process on Prefect's ephemeral server."""
    from deployments.prefect_server import running_api, server_without_worker

    root = state_dir(state)
    _require_daemon(root)
    env = dict(_key_value(item, "--engine-env") for item in engine_env or [])
    parameters: dict[str, Any] = {
        "model_uri": _absolute_if_local(model_uri), "name": name, "namespace": namespace, "model_format": model_format,
        "registered_model_name": registered_model_name, "alias": alias, "min_replicas": replicas,
        "max_replicas": replicas, "timeout_seconds": timeout, "state_dir": str(root),
        "engine_args": engine_arg or None, "engine_env": env or None,
        # the decision trees' inputs and the lifecycle policy; None keeps the flow's default
        "traffic_pattern": traffic.value, "scale_to_zero": scale_to_zero, "deployment_mode": _value(mode),
        "autoscaler": _value(autoscaler), "primary_metric": _value(metric), "scale_target": scale_target,
        "cache_optimization": cache_optimization, "exposed": not cluster_local, "token_auth": token_auth,
        "rollout_strategy": _value(rollout_strategy),
        "canary_percent": canary_percent, "analysis_seconds": analysis_window, "slo_error_rate": slo_error_rate,
        "slo_p95_ms": slo_p95_ms, "watch_alias": watch_alias,
    }
    if max_replicas is not None:
        parameters["max_replicas"] = max(max_replicas, replicas)
    api = running_api(root)
    if api is None and server_without_worker(root):
        err.print(f"[yellow]note:[/] the Prefect server runs but its flow worker does not (see {root / 'flow_worker.log'}; "
                  "`odh up` starts it again): running the flow in this process", soft_wrap=True)
    if api is not None:
        _deploy_via_api(root, api, parameters, timeout)
        return
    from flows.prefect_env import configure_prefect

    configure_prefect(root)
    with console.status(f"deploying {model_uri} as {namespace}/{name}...") as status:
        _show_flow_progress(status)
        from flows.deploy_model import deploy_model

        try:
            result = deploy_model(**parameters)
        except (ServingError, ValueError, FileNotFoundError) as exc:
            raise _fail(str(exc)) from exc
    console.print(f"[green]Ready[/] {namespace}/{name}: {result.model_name} version {result.model_version}")
    console.print(result.url)


def _absolute_if_local(model_uri: str) -> str:
    """A relative model path is made absolute here: the flow worker resolves paths from its own directory."""
    if "://" in model_uri or model_uri.startswith("models:/"):
        return model_uri
    path = Path(model_uri).expanduser()
    return str(path.resolve()) if path.exists() else model_uri


def _deploy_via_api(root: Path, api: str, parameters: dict[str, Any], timeout: float | None) -> None:
    """deploy-model through the Prefect API, run by the flow worker; the result is read from the platform."""
    from deployments.flow_client import FlowClientError, run_flow_via_api
    from serving.policy import MODEL_NAME_LABEL, MODEL_VERSION_LABEL

    namespace, name = parameters["namespace"], parameters["name"]
    with console.status(f"deploying {parameters['model_uri']} as {namespace}/{name}...") as status:
        def progress(line: str) -> None:
            console.print(f"  [green]✓[/] [bold]{escape(line)}[/]" if " " not in line.split(" (")[0]
                          else f"  {escape(line)}", soft_wrap=True)
            status.update(f"{line.split(' ')[0]} done...")

        try:
            outcome = run_flow_via_api(api, "deploy-model", {k: v for k, v in parameters.items() if v is not None},
                                       run_name=name, on_progress=progress, timeout=(timeout or 900.0) + 120.0)
        except FlowClientError as exc:
            raise _fail(str(exc)) from exc
    if not outcome.ok:
        raise _fail(f"deploy-model {outcome.state_name}: {outcome.message or 'no message'} (run: {outcome.ui_url})")
    try:
        live = _get_service(_platform(root), namespace, name)
    except ServingError as exc:
        raise _fail(str(exc)) from exc
    labels = live["metadata"].get("labels") or {}
    console.print(f"[green]Ready[/] {namespace}/{name}: {labels.get(MODEL_NAME_LABEL, '?')} version "
                  f"{labels.get(MODEL_VERSION_LABEL, '?')}")
    console.print(live.get("status", {}).get("url", ""))


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="one InferenceService (default: all)")] = None,
    namespace: NamespaceOpt = "default",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    state: StateOpt = None,
) -> None:
    """Show InferenceServices and LLMInferenceServices with their conditions and URLs."""
    platform = _platform(state_dir(state))
    try:
        if name:
            items = [_get_service(platform, namespace, name)]
        else:
            items = platform.list("InferenceService") + platform.list("LLMInferenceService")
        ignored = [] if name else platform.info().get("ignored", [])
    except ServingError as exc:
        raise _fail(str(exc)) from exc
    if output == "json":
        print(json.dumps(items[0] if name else items, indent=2))
        return
    table = Table("NAMESPACE", "NAME", "KIND", "READY", "WORKLOAD", "ROUTE", "URL", "REASON")
    for isvc in items:
        conds = {c["type"]: c for c in isvc.get("status", {}).get("conditions", [])}
        ready = conds.get("Ready", {})
        mark = {"True": "[green]True[/]", "False": "[red]False[/]"}
        llm = isvc.get("kind") == "LLMInferenceService"
        workload, route = ("MainWorkloadReady", "RouterReady") if llm else ("PredictorReady", "IngressReady")
        table.add_row(
            isvc["metadata"]["namespace"], isvc["metadata"]["name"], "llm" if llm else "isvc",
            mark.get(ready.get("status"), "Unknown"),
            conds.get(workload, {}).get("status", "Unknown"),
            conds.get(route, {}).get("status", "Unknown"),
            isvc.get("status", {}).get("url", ""),
            " ".join(filter(None, [ready.get("reason"), ready.get("message")])) if ready.get("status") != "True" else "",
        )
    console.print(table)
    for item in ignored:  # stored objects the daemon does not act on, e.g. from an older version
        err.print(f"[yellow]ignored:[/] {escape(item['kind'])} {escape(item['namespace'] or '-')}/{escape(item['name'])}: "
                  f"{escape(item['message'])}", soft_wrap=True)


def _get_service(platform: Any, namespace: str, name: str) -> dict[str, Any]:
    """The InferenceService called ``name``, else the LLMInferenceService."""
    from serving.errors import NotFoundError

    try:
        return platform.get("InferenceService", namespace, name)
    except NotFoundError:
        return platform.get("LLMInferenceService", namespace, name)


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise _fail(f"{flag} {item!r}: expected KEY=VALUE")
    return key, value


@app.command()
def apply(file: FileOpt, state: StateOpt = None) -> None:
    """Apply manifests to the running platform (admission first: a rejected one changes nothing)."""
    platform = _platform(state_dir(state))
    for doc in _documents(file):
        try:
            stored = platform.apply(doc)
        except AdmissionError as exc:
            _print_rejection("rejected", doc, exc)
            raise typer.Exit(1) from exc
        except ServingError as exc:
            raise _fail(str(exc)) from exc
        meta = stored["metadata"]
        console.print(f"[green]applied[/] {stored['kind']} {meta['namespace']}/{meta['name']} "
                      f"(generation {meta.get('generation')})")


@app.command()
def delete(
    kind: Annotated[str | None, typer.Argument(help="the kind, e.g. InferenceService (any stored kind)")] = None,
    name: Annotated[str | None, typer.Argument(help="the object's name")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="delete each object this YAML names")] = None,
    namespace: NamespaceOpt = "default",
    state: StateOpt = None,
) -> None:
    """Delete objects: `odh delete KIND NAME [-n NS]`, or each object in `-f FILE`.

    Any stored kind can be deleted, also one that can no longer be applied (e.g. left by an older version).
    """
    if file is not None and (kind or name):
        raise _fail("give either KIND NAME or -f FILE, not both")
    if file is None and not (kind and name):
        raise _fail("give KIND NAME (e.g. `odh delete InferenceService iris`) or -f FILE")
    targets = [_target(doc, i) for i, doc in enumerate(_documents(file), start=1)] if file else [(kind, namespace, name)]
    platform = _platform(state_dir(state))
    missing = 0
    for target_kind, target_ns, target_name in targets:
        from serving.platform.local.store import CLUSTER_SCOPED

        label = f"{target_kind} {target_name}" if target_kind in CLUSTER_SCOPED else f"{target_kind} {target_ns}/{target_name}"
        try:
            deleted = platform.delete(target_kind, target_ns, target_name)
        except ServingError as exc:
            raise _fail(str(exc)) from exc
        if deleted:
            console.print(f"[green]deleted[/] {escape(label)}")
        else:
            missing += 1
            err.print(f"[red]not found[/] {escape(label)}", soft_wrap=True)
    if missing:
        raise typer.Exit(1)


def _target(doc: dict[str, Any], number: int) -> tuple[str, str, str]:
    """``(kind, namespace, name)`` of a document to delete."""
    metadata = doc.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    kind, name, namespace = doc.get("kind"), meta.get("name"), meta.get("namespace")
    if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
        raise _fail(f"document {number} needs kind and metadata.name to say what to delete")
    return kind, namespace if isinstance(namespace, str) and namespace else "default", name


OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="json, yaml, wide or name (default: a table)")]


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help="what to list, by any kubectl name: isvc, llmisvc, ksvc, revisions, "
                                             "deployments, pods, svc, hpa, so, servingruntimes, inferencepools...")],
    name: Annotated[str | None, typer.Argument(help="one object (default: all)")] = None,
    namespace: NamespaceOpt = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="every namespace")] = False,
    output: OutputOpt = None,
    state: StateOpt = None,
) -> None:
    """List what the platform stores, as `kubectl get` does: `odh get KIND [NAME] [-n NS | -A] [-o json|yaml|wide|name]`."""
    from datetime import UTC, datetime

    from serving.errors import NotFoundError
    from serving.platform.local.listing import UnknownKindError, no_resources_message, resolve_kind, table

    if output not in (None, "json", "yaml", "wide", "name"):
        raise _fail(f'unable to match a printer suitable for the output format "{output}", '
                    "allowed formats are: json,name,wide,yaml")
    try:
        info = resolve_kind(kind)
    except UnknownKindError as exc:
        raise _fail(str(exc)) from exc
    if name is not None and all_namespaces:
        raise _fail("a resource cannot be retrieved by name across all namespaces")
    listed_namespace = None if all_namespaces or not info.namespaced else namespace
    try:
        found = _platform(state_dir(state)).kubectl_get(info.resource, listed_namespace, name)
    except NotFoundError as exc:
        print(f"Error from server (NotFound): {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    except ServingError as exc:
        raise _fail(str(exc)) from exc
    items = [found] if name is not None else found["items"]
    if output == "json":
        print(json.dumps(found, indent=4, sort_keys=True))
    elif output == "yaml":
        print(yaml.safe_dump(found, sort_keys=True), end="")
    elif output == "name":
        for item in items:
            print(info.object_name(item["metadata"]["name"]))
    elif not items:
        print(no_resources_message(info, listed_namespace), file=sys.stderr)
    else:
        print(table(info, items, datetime.now(UTC), wide=output == "wide", all_namespaces=all_namespaces).render(), end="")


@app.command()
def predict(
    name: str,
    input_file: Annotated[Path, typer.Option("--input", "-i", exists=True,
                                             help="a V1 ({'instances': ...}) or V2 ({'inputs': ...}) JSON body")],
    namespace: NamespaceOpt = "default",
    model: Annotated[str | None, typer.Option(help="model name in the URL (default: the InferenceService name)")] = None,
    state: StateOpt = None,
) -> None:
    """Send a V1 or V2 request to an InferenceService through the gateway and print the answer."""
    import httpx

    platform = _platform(state_dir(state))
    try:
        url = platform.get("InferenceService", namespace, name).get("status", {}).get("url")
    except ServingError as exc:
        raise _fail(str(exc)) from exc
    if not url:
        raise _fail(f"{namespace}/{name} has no URL yet: see `odh status {name}`")
    try:
        body = json.loads(input_file.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(f"{input_file}: not a JSON request body ({exc})") from exc
    if not isinstance(body, dict):
        raise _fail(f"{input_file}: the body must be a JSON object ({{'instances': ...}} or {{'inputs': ...}})")
    path = f"/v2/models/{model or name}/infer" if "inputs" in body else f"/v1/models/{model or name}:predict"
    response = httpx.post(url + path, json=body, timeout=60.0)
    if response.status_code != 200:
        raise _fail(f"{response.status_code} from {url + path}: {response.text}")
    print(json.dumps(response.json()))


@app.command()
def retire(name: str, namespace: NamespaceOpt = "default", state: StateOpt = None) -> None:
    """Run the retire flow: delete the deployment and mark its model versions retired."""
    root = state_dir(state)
    _require_daemon(root)
    from flows.prefect_env import configure_prefect

    configure_prefect(root)
    with console.status(f"retiring {namespace}/{name}...") as status:
        _show_flow_progress(status)
        from flows import retire as retire_flow

        versions = retire_flow(name=name, namespace=namespace, state_dir=str(root))
    console.print(f"[green]retired[/] {namespace}/{name}; versions: {', '.join(versions) or 'none'}")


@app.command()
def validate(file: FileOpt) -> None:
    """Admission only (defaults + validation, and this machine's replica limit): exit 1 with every reason
    when a manifest is invalid."""
    from serving.kserve.objects import admit_object
    from serving.platform.local.limits import PlatformLimits

    try:
        limits = PlatformLimits.from_env()  # the defaults, or what ODH_MAX_REPLICAS says (as `odh up` does)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    failed = False
    for doc in _documents(file):
        try:
            admitted = admit_object(doc, max_replicas=limits.max_replicas)
            console.print(f"[green]valid[/] {escape(admitted['kind'])} {escape(admitted['metadata']['name'])}")
        except AdmissionError as exc:
            failed = True
            _print_rejection("invalid", doc, exc)
    if failed:
        raise typer.Exit(1)


@app.command()
def render(file: FileOpt) -> None:
    """Print the Kubernetes objects KServe would create for the manifest (Standard mode), as YAML."""
    from serving.kserve import builtin_runtimes
    from serving.kserve import render as render_objects
    from serving.kserve.llmisvc import admit_llm_inference_service
    from serving.kserve.reconcile.llmd import reconcile_llm

    objects: list[dict[str, Any]] = []
    try:
        for doc in _documents(file):
            if doc.get("kind") == "LLMInferenceService":
                objects += reconcile_llm(admit_llm_inference_service(doc))
            else:
                objects += render_objects(doc, builtin_runtimes())
    except ServingError as exc:
        raise _fail(str(exc)) from exc
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")


app.command("rollout")(rollout_command)

runtime = typer.Typer(help="Runtime environments: each local runtime that needs its own packages gets its own venv.",
                      no_args_is_help=True)
app.add_typer(runtime, name="runtime")


@runtime.command("install")
def runtime_install(
    name: Annotated[str, typer.Argument(help="the runtime environment, e.g. vllm-cpu")],
    force: Annotated[bool, typer.Option(help="rebuild even when up to date")] = False,
    state: StateOpt = None,
) -> None:
    """Create (or check) a runtime's own virtual environment under the state directory."""
    from serving.runtimes.envs import install_runtime_env

    root = state_dir(state)
    with console.status(f"installing the {name} runtime environment...") as status:
        try:
            python = install_runtime_env(name, root, progress=lambda step: status.update(str(step)), force=force)
        except ServingError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"[green]{name} ready[/]: {python}")


flows_app = typer.Typer(help="The lifecycle flows as Prefect deployments (the Prefect UI is the console).",
                        no_args_is_help=True)
app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve(
    state: StateOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="flow runs at once")] = 4,
    poll_interval: Annotated[float, typer.Option(min=0.05, help="seconds between polls for due runs")] = 0.5,
) -> None:
    """Serve every flow as a deployment of the Prefect server at PREFECT_API_URL (default: the one `odh up`
    started) and run their flow runs in this process, until Ctrl-C. `odh up` runs the same in the background."""
    from deployments.flow_worker import main as worker_main

    args = ["--limit", str(limit), "--poll-interval", str(poll_interval)]
    if state is not None:
        args += ["--state-dir", str(state_dir(state))]
    worker_main(args)


@flows_app.command("list")
def flows_list() -> None:
    """The flows served as deployments, with their schedules."""
    from deployments.catalog import CATALOG

    table = Table("DEPLOYMENT", "SCHEDULE", "FLOW", "DESCRIPTION")
    for served in CATALOG:
        try:
            interval = served.interval_seconds()
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        table.add_row(served.full_name, f"every {interval:g}s ({served.interval_env})" if interval else "-",
                      served.import_path, served.description)
    console.print(table)


llmd = typer.Typer(help="LLM-D: KV-cache-aware router, scheduler, indexer and engine simulator.", no_args_is_help=True)
app.add_typer(llmd, name="llmd")
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _run_module(module: str, args: list[str]) -> None:
    """Hand the remaining arguments to a long-running service's own argument parser."""
    import runpy

    sys.argv = [f"odh llmd {module.rsplit('.', 1)[-1]}", *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@llmd.command("serve", context_settings=_PASS_THROUGH)
def llmd_serve(ctx: typer.Context) -> None:
    """Router + scheduler + indexer + monitor in one process (`--help` for its flags)."""
    _check_api_keys(ctx.args)
    _run_module("serving.llmd.serve", ctx.args)


def _check_api_keys(args: list[str]) -> None:
    """Each ``--api-key KEY[:TIER[:TENANT]]`` parses, before the service starts (a bad tier is one line, not a traceback)."""
    from serving.llmd.auth import parse_key

    specs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--api-key"]
    specs += [arg.partition("=")[2] for arg in args if arg.startswith("--api-key=")]
    for spec in specs:
        try:
            parse_key(spec)
        except ValueError as exc:
            raise _fail(f"--api-key: {exc}") from exc


@llmd.command("sim", context_settings=_PASS_THROUGH)
def llmd_sim(ctx: typer.Context) -> None:
    """Simulated vLLM engines for load tests (`--help` for its flags)."""
    _run_module("serving.llmd.sim", ctx.args)


@llmd.command("index", context_settings=_PASS_THROUGH)
def llmd_index(ctx: typer.Context) -> None:
    """The KV-cache indexer alone, with its HTTP scoring API (`--help` for its flags)."""
    _run_module("serving.llmd.kvcache.server", ctx.args)


def _documents(file: Path) -> list[dict[str, Any]]:
    """The manifests in ``file``: bounded, no YAML aliases, each document a mapping (else one-line error)."""
    from serving.errors import ManifestError
    from serving.manifests import load_manifests

    try:
        return load_manifests(file)
    except ManifestError as exc:
        raise _fail(str(exc)) from exc


def _platform(root: Path) -> LocalPlatform:
    from serving.platform.local import LocalPlatform

    return LocalPlatform(root)


def _require_daemon(root: Path) -> None:
    if not _platform(root).is_running():
        raise _fail(f"no odh daemon runs on {root}: start it with `odh up`")


class _PhaseLog(logging.Handler):
    """Shows each phase's log line above the spinner while a flow runs."""

    def __init__(self, status: Status) -> None:
        super().__init__(logging.INFO)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        phase, _, rest = message.partition(": ")
        if rest and " " not in phase:
            console.print(f"  [green]✓[/] [bold]{phase}[/] {rest}")
            self.status.update(f"{phase} done...")


def _show_flow_progress(status: Status) -> None:
    """Replace Prefect's console log lines with one tidy line per finished phase."""
    import flows  # noqa: F401 - importing the flows sets up Prefect's logging, adjusted below

    for handler in logging.getLogger().handlers:  # Prefect puts its console handler on the root logger
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.WARNING)
    logging.getLogger("prefect.flow_runs").addHandler(_PhaseLog(status))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
