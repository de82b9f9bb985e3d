"""Phase 3: decide how the registered version is served (the decision trees) and write its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from prefect import task
from prefect.artifacts import create_markdown_artifact

from serving.artifacts import UploadedModel
from serving.decisions import DecisionInputs, ServingDecision, decide
from serving.errors import ServingError
from serving.kserve import admit_inference_service
from serving.kserve.llmisvc import admit_llm_inference_service
from serving.lifecycle import LifecyclePolicy
from serving.policy import ServingPolicy, inference_service, llm_inference_service
from serving.registry import RegisteredVersion
from serving.storage import fetch
from tasks._common import RETRIES, RETRY_DELAYS, resolve_state, retry_on_transient, storage_settings


class CannotRunHere(ServingError):
    """The decision is sound, but the target platform cannot run it; the message names the alternative."""


@task(name="measure-model", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def measure_model(uploaded: UploadedModel, state: str | None = None) -> int:
    """Bytes on disk of the uploaded model (a remote one is read from the storage cache upload filled)."""
    if uploaded.uri.startswith("file://"):
        path = Path(unquote(urlparse(uploaded.uri).path))
    else:
        path = fetch(uploaded.uri, storage_settings(resolve_state(state)))
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def artifact_key(namespace: str, name: str) -> str:
    return f"configure-{namespace}-{name}".lower()


@task(name="configure", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient)
def configure(name: str, namespace: str, version: RegisteredVersion, model_format: str,
              policy: ServingPolicy | None = None, inputs: DecisionInputs | None = None,
              lifecycle: LifecyclePolicy | None = None) -> dict[str, Any]:
    """An InferenceService, or an LLMInferenceService for LLM-D, as the decision trees say for ``inputs``
    (default: the trees' defaults with ``policy``'s replicas). ``policy`` also brings the vLLM engine flags.

    Writes the artifact ``configure-{namespace}-{name}`` (every step, and the manifest) before it fails on a
    decision the target cannot run, so the run shows why and what to use instead.
    """
    base = policy or ServingPolicy()
    inputs = inputs or DecisionInputs(model_format=model_format, size_bytes=0, min_replicas=base.min_replicas,
                                      max_replicas=base.max_replicas)
    decision = decide(inputs)
    manifest = build_manifest(name, namespace, version, decision, base, lifecycle)
    if decision.kind == "LLMInferenceService":
        admit_llm_inference_service(manifest)  # fail here, before anything is deployed
    else:
        admit_inference_service(manifest)
    create_markdown_artifact(key=artifact_key(namespace, name), markdown=_artifact(name, namespace, version, decision, manifest),
                             description=f"configure {namespace}/{name}: {decision.mode_label}")
    if decision.blocked:
        raise CannotRunHere(decision.blocked)
    return manifest


def build_manifest(name: str, namespace: str, version: RegisteredVersion, decision: ServingDecision,
                   base: ServingPolicy | None = None, lifecycle: LifecyclePolicy | None = None) -> dict[str, Any]:
    """The manifest ``decision`` describes for ``version`` (pure: the tests build every leaf's)."""
    base = base or ServingPolicy()
    policy = decision.serving_policy(lifecycle=lifecycle, engine_args=base.engine_args, engine_env=base.engine_env)
    if decision.kind == "LLMInferenceService":
        return llm_inference_service(name, version.source, namespace=namespace, model_name=version.name,
                                     model_version=version.version, policy=policy)
    return inference_service(name, version.source, decision.inputs.model_format, namespace=namespace,
                             model_name=version.name, model_version=version.version, policy=policy)


def _artifact(name: str, namespace: str, version: RegisteredVersion, decision: ServingDecision,
              manifest: dict[str, Any]) -> str:
    title = f"{namespace}/{name}: {version.name} version {version.version} as {decision.mode_label}"
    where = ("Apply it to a cluster with `kubectl apply -f`." if decision.inputs.target == "kubernetes"
             else "The deploy phase applies it to the embedded platform.")
    return "\n".join([decision.markdown(title), f"## {manifest['kind']}", "", where, "", "```yaml",
                      yaml.safe_dump(manifest, sort_keys=False).rstrip(), "```", ""])
