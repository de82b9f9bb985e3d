"""``odh rollout MODEL_URI --name NAME``: a new version through the ``rollout`` flow, for people and CI.

With the Prefect server of ``odh up`` (and its flow worker) the run goes through the Prefect API and shows in
the UI; without one it runs in this process on Prefect's ephemeral server. The exit code is what CI needs:
0 promoted, deployed or unchanged; 2 rolled back (the job fails and says why); 1 any error.

The integrator registers it: ``app.command("rollout")(rollout_command)`` in deployments/cli.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from serving.config import state_dir
from serving.errors import ServingError

console = Console()
err = Console(stderr=True)

EXIT_ROLLED_BACK = 2
OK_OUTCOMES = ("deployed", "promoted", "unchanged")
# The rollout flow's artifact: description "rollout NS/NAME: OUTCOME", markdown "**Reason:** ..." (flows/rollout.py).
_DESCRIPTION = re.compile(r"^rollout (?P<target>\S+): (?P<outcome>[a-z-]+)$")
_REASON = re.compile(r"\*\*Reason:\*\* (?P<reason>.*)")


@dataclass(frozen=True)
class Outcome:
    outcome: str
    reason: str
    model_name: str = ""
    model_version: str = ""
    url: str = ""


def rollout_command(
    model_uri: Annotated[str, typer.Argument(help="the new version: a model file or directory, file://, s3://, pvc://, "
                                                   "http(s)://, or models:/NAME/VERSION")],
    name: Annotated[str, typer.Option("--name", help="the InferenceService to roll the version into")],
    model_format: Annotated[str | None, typer.Option("--format", help="sklearn or mlflow (default: detected)")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="namespace")] = "default",
    registered_model_name: Annotated[str | None, typer.Option("--model-name", help="registry name (default: --name)")] = None,
    alias: Annotated[str, typer.Option(help="registry alias moved to the version once promoted")] = "champion",
    canary_percent: Annotated[int | None, typer.Option("--canary-percent", min=1, max=99,
                                                       help="the canary's traffic share while watched (default: the "
                                                            "deployment's serving.odh.io/canary-percent, else 20)")] = None,
    analysis_window: Annotated[float | None, typer.Option("--analysis-window", min=0.001,
                                                          help="seconds the canary is watched (default: the policy, else 60)")] = None,
    max_error_rate: Annotated[float | None, typer.Option("--max-error-rate", min=0.0, max=1.0,
                                                         help="the canary's 5xx share that rolls it back (default 0.05)")] = None,
    max_latency_ratio: Annotated[float | None, typer.Option("--max-latency-ratio", min=0.001,
                                                            help="canary p95 / stable p95 that rolls it back (default 2)")] = None,
    min_requests: Annotated[int, typer.Option("--min-requests", min=1,
                                              help="canary answers needed before it may be promoted")] = 20,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the whole rollout")] = 1800.0,
    state: Annotated[str | None, typer.Option("--state-dir", envvar="ODH_STATE_DIR",
                                              help="state directory (default ~/.odh)")] = None,
) -> None:
    """Roll a new model version into a running deployment as a canary: watched, then promoted or rolled back.
    Exit code 0 promoted/deployed/unchanged, 2 rolled back, 1 error."""
    from deployments.prefect_server import running_api
    from serving.platform.local import LocalPlatform

    root = state_dir(state)
    if not LocalPlatform(root).is_running():
        raise _fail(f"no odh daemon runs on {root}: start it with `odh up`")
    parameters: dict[str, Any] = {
        "model_uri": _absolute_if_local(model_uri), "name": name, "namespace": namespace, "model_format": model_format,
        "registered_model_name": registered_model_name, "alias": alias, "canary_percent": canary_percent,
        "analysis_seconds": analysis_window, "max_error_rate": max_error_rate, "max_latency_ratio": max_latency_ratio,
        "min_requests": min_requests, "state_dir": str(root),
    }
    api = running_api(root)
    with console.status(f"rolling {model_uri} into {namespace}/{name}..."):
        result = _via_api(api, parameters, timeout) if api else _in_process(root, parameters)
    label = {"promoted": "green", "deployed": "green", "unchanged": "green"}.get(result.outcome, "red")
    version = f" {result.model_name} version {result.model_version}" if result.model_version else ""
    console.print(f"[{label}]{result.outcome}[/] {namespace}/{name}{escape(version)}: {escape(result.reason)}", soft_wrap=True)
    if result.url:
        console.print(result.url)
    if result.outcome == "rolled-back":
        raise typer.Exit(EXIT_ROLLED_BACK)
    if result.outcome not in OK_OUTCOMES:
        raise typer.Exit(1)


def _in_process(root: Path, parameters: dict[str, Any]) -> Outcome:
    from flows.prefect_env import configure_prefect

    configure_prefect(root)
    from flows.rollout import rollout

    try:
        result = rollout(**parameters)
    except (ServingError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    return Outcome(result.outcome, result.reason, result.model_name, result.model_version, result.url)


def _via_api(api: str, parameters: dict[str, Any], timeout: float) -> Outcome:
    """The rollout run by the flow worker; its outcome and reason read back from the run's artifact."""
    import httpx

    from deployments.flow_client import FlowClientError, run_flow_via_api

    try:
        run = run_flow_via_api(api, "rollout", {k: v for k, v in parameters.items() if v is not None},
                               run_name=f"rollout-{parameters['name']}", timeout=timeout,
                               on_progress=lambda line: console.print(f"  {escape(line)}", soft_wrap=True))
    except FlowClientError as exc:
        raise _fail(str(exc)) from exc
    if not run.ok:
        raise _fail(f"rollout {run.state_name}: {run.message or 'no message'} (run: {run.ui_url})")
    try:
        found = httpx.post(f"{api.rstrip('/')}/artifacts/filter", timeout=30.0,
                           json={"artifacts": {"flow_run_id": {"any_": [run.flow_run_id]}}}).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _fail(f"the rollout finished but its outcome could not be read ({exc}): see {run.ui_url}") from exc
    for artifact in found if isinstance(found, list) else []:
        described = _DESCRIPTION.match(str(artifact.get("description") or ""))
        if described:
            reason = _REASON.search(str(artifact.get("data") or ""))
            return Outcome(described["outcome"], reason["reason"].strip() if reason else f"see {run.ui_url}")
    raise _fail(f"the rollout finished but left no outcome artifact: see {run.ui_url}")


def _absolute_if_local(model_uri: str) -> str:
    """A relative path is made absolute here: the flow worker resolves paths from its own directory."""
    if "://" in model_uri or model_uri.startswith("models:/"):
        return model_uri
    path = Path(model_uri).expanduser()
    return str(path.resolve()) if path.exists() else model_uri


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)
