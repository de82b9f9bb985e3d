"""Phase 3: apply the serving policy and write the InferenceService for the registered version."""

from __future__ import annotations

from typing import Any

from prefect import task

from serving.kserve import admit_inference_service
from serving.kserve.llmisvc import admit_llm_inference_service
from serving.policy import ServingPolicy, inference_service, is_llm_format, llm_inference_service
from serving.registry import RegisteredVersion


@task(name="configure")
def configure(name: str, namespace: str, version: RegisteredVersion, model_format: str,
              policy: ServingPolicy | None = None) -> dict[str, Any]:
    """An InferenceService, or an LLMInferenceService for an LLM (served under the deployment's name)."""
    if is_llm_format(model_format):
        manifest = llm_inference_service(name, version.source, namespace=namespace, model_name=version.name,
                                         model_version=version.version, policy=policy)
        admit_llm_inference_service(manifest)  # fail here, before anything is deployed
        return manifest
    manifest = inference_service(name, version.source, model_format, namespace=namespace,
                                 model_name=version.name, model_version=version.version, policy=policy)
    admit_inference_service(manifest)  # fail here, before anything is deployed, on a bad manifest
    return manifest
