"""``deploy_model``: phases 1-6, from a model file or URI to a live, registered KServe endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from serving.policy import ServingPolicy, is_llm_format
from tasks.configure import configure
from tasks.deploy import deploy
from tasks.initialize import initialize
from tasks.register import register
from tasks.register_service import register_service
from tasks.upload import upload


@dataclass(frozen=True)
class Deployment:
    """What a deploy run leaves behind."""

    name: str
    namespace: str
    url: str
    model_name: str
    model_version: str
    storage_uri: str
    ready: bool


@flow(name="deploy-model", log_prints=False)
def deploy_model(
    model_uri: str,
    name: str,
    namespace: str = "default",
    model_format: str | None = None,
    registered_model_name: str | None = None,
    alias: str | None = "champion",
    min_replicas: int = 1,
    max_replicas: int = 1,
    timeout_seconds: float | None = None,
    state_dir: str | None = None,
    engine_args: list[str] | None = None,
    engine_env: dict[str, str] | None = None,
) -> Deployment:
    """Upload, register, configure, deploy, initialize and register the service of one model.

    ``model_uri`` is a local file or directory, ``file://``, ``s3://``, ``pvc://``, ``http(s)://``,
    ``hf://ORG/NAME[:REVISION]`` or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``. Running it again for
    the same model bytes creates no second registry version and no second deployment.

    A Hugging Face LLM directory (format ``huggingface``) becomes an LLMInferenceService: ``min_replicas``
    vLLM engines (with ``engine_args``/``engine_env``) behind the LLM-D router, OpenAI API at ``url + /v1``.
    ``timeout_seconds`` defaults to 300 s, and 900 s for an LLM (vLLM engines start in minutes on CPUs).
    """
    logger = get_run_logger()
    uploaded = upload(model_uri, model_format, state=state_dir)
    logger.info("upload: %s (sha256 %s, format %s)", uploaded.uri, uploaded.digest[:12], uploaded.model_format)
    version = register(registered_model_name or name, uploaded, alias, state=state_dir)
    logger.info("register: %s version %s", version.name, version.version)
    policy = ServingPolicy(min_replicas=min_replicas, max_replicas=max(max_replicas, min_replicas),
                           engine_args=tuple(engine_args or ()), engine_env=dict(engine_env or {}))
    llm = is_llm_format(uploaded.model_format)
    manifest = configure(name, namespace, version, uploaded.model_format, policy)
    logger.info("configure: %s %s/%s", manifest["kind"], namespace, name)
    applied = deploy(manifest, state=state_dir)
    logger.info("deploy: applied generation %s", applied["metadata"].get("generation"))
    live = initialize(applied, timeout_seconds or (900.0 if llm else 300.0), state=state_dir)
    logger.info("initialize: model fetched and loaded, %s replica(s) ready",
                live.get("status", {}).get("modelStatus", {}).get("copies", {}).get("totalCopies", "all"))
    url = register_service(version, live, state=state_dir)
    logger.info("register-service: %s is Ready at %s", name, url)
    result = Deployment(name, namespace, url, version.name, version.version, version.source, True)
    create_markdown_artifact(key=f"deploy-{namespace}-{name}".lower(), markdown=_summary(result, uploaded.digest, llm),
                             description=f"deploy-model {namespace}/{name}")
    return result


def _summary(result: Deployment, digest: str, llm: bool = False) -> str:
    try_it = (f"Try it: `openai.OpenAI(base_url=\"{result.url}/v1\", api_key=\"none\")` with model `{result.name}`"
              if llm else f"Try it: `odh predict {result.name} --namespace {result.namespace} --input request.json`")
    return "\n".join([
        f"# {result.namespace}/{result.name} is Ready",
        "",
        "| | |",
        "|---|---|",
        f"| URL | `{result.url}` |",
        f"| Model | `{result.model_name}` version {result.model_version} |",
        f"| Storage | `{result.storage_uri}` |",
        f"| sha256 | `{digest}` |",
        "",
        try_it,
    ])
