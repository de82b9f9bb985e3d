"""Multi-tenancy on the embedded platform: ResourceQuotas at admission, API keys per namespace.

Two core kinds join the ones users apply:

- ``ResourceQuota`` (v1): checked against the Kubernetes schema and this platform's keys
  (``serving.kserve.quota``), then enforced on every apply of an InferenceService or LLMInferenceService
  in its namespace. A breach raises AdmissionError with the apiserver's message, before anything is
  stored. ``status.hard`` and ``status.used`` are written on every reconcile pass.
- ``Secret`` (v1): ``stringData`` is folded into ``data`` (base64) as the apiserver does. A Secret of type
  ``serving.odh.io/api-key`` holds API keys of its namespace, one per ``data`` entry. The gateway asks for
  one on a route whose InferenceService has ``security.opendatahub.io/enable-auth: "true"``, or on every
  route when ``<state>/config.yaml`` says ``gateway: {auth: required}`` (or ``ODH_GATEWAY_AUTH=required``).
  A Secret named by an LLMInferenceService's ``security.opendatahub.io/api-key-secret`` annotation gives
  its router's keys: written to a 0600 file in the state directory that the router re-reads when it
  changes (``--api-key-file``: no key on a command line).

Keys are applied to the route table on apply and delete, so a new or removed key counts from the next
request, without a restart. No key is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import AdmissionError, FieldError, RuntimeResolutionError
from serving.kserve import ReconcileError, admit_inference_service, reconcile, resolve_runtime
from serving.kserve.llmisvc import KIND as LLMISVC
from serving.kserve.llmisvc import admit_llm_inference_service
from serving.kserve.quota import ISVC_COUNT, LLMISVC_COUNT, Quota, Usage, check, usage_of, validate_quota, workloads
from serving.kserve.reconcile.llmd import ENGINE_SELECTOR_ANNOTATION, ROLE_LABEL, reconcile_llm
from serving.platform.local.autoscalers import engine_bounds
from serving.platform.local.platform_config import PlatformConfig

if TYPE_CHECKING:
    from serving.platform.local.daemon import Daemon

log = logging.getLogger(__name__)

ISVC = "InferenceService"
RESOURCE_QUOTA = "ResourceQuota"
SECRET = "Secret"
TENANCY_KINDS: tuple[str, ...] = (RESOURCE_QUOTA, SECRET)
API_KEY_SECRET_TYPE = "serving.odh.io/api-key"
ENABLE_AUTH_ANNOTATION = "security.opendatahub.io/enable-auth"
ROUTER_KEYS_ANNOTATION = "security.opendatahub.io/api-key-secret"
GATEWAY_AUTH_ENV = "ODH_GATEWAY_AUTH"
API_KEY_FILE_FLAG = "--api-key-file"
MAX_SECRET_BYTES = 1 << 20  # the apiserver's limit on a Secret's data
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 4096
# RFC 6750's b64token: what a Bearer credential may hold.
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


# -- configuration ----------------------------------------------------------------------------------------


def gateway_auth_required(config: PlatformConfig, environ: Mapping[str, str] | None = None) -> bool:
    """Whether every gateway route requires an API key: ``gateway: {auth: required}`` in the platform's
    config.yaml (already validated: it reads ``required`` or ``off``), or ``ODH_GATEWAY_AUTH=required``; off
    by default on loopback. Raises AdmissionError naming the variable for any other value of it."""
    env = (environ if environ is not None else os.environ).get(GATEWAY_AUTH_ENV, "").strip().lower()
    if env and env not in ("required", "off"):
        raise AdmissionError(FieldError(GATEWAY_AUTH_ENV, f"is {env!r}; use required or off"))
    return env == "required" or config.gateway.auth == "required"


# -- Secrets ----------------------------------------------------------------------------------------------


def admit_secret(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret as the apiserver stores it (``stringData`` folded into base64 ``data``), or AdmissionError
    naming each bad field. An API-key Secret's values must be usable Bearer keys."""
    errors = _schema_errors(obj)
    data = obj.get("data") or {}
    string_data = obj.get("stringData") or {}
    decoded: dict[str, bytes] = {}
    for section, entries in (("data", data), ("stringData", string_data)):
        if not isinstance(entries, dict):
            errors.append(FieldError(section, "must map names to values"))
            continue
        for key, value in entries.items():
            where = f"{section}[{key}]"
            if not isinstance(key, str) or not _DATA_KEY.match(key):
                errors.append(FieldError(where, "a data key is letters, digits, '-', '_' or '.'"))
            elif not isinstance(value, str):
                errors.append(FieldError(where, "must be a string"))
            elif section == "data":
                try:
                    decoded[key] = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    errors.append(FieldError(where, "is not base64: put plain text under stringData instead"))
            else:
                decoded[key] = value.encode()
    if sum(len(v) for v in decoded.values()) > MAX_SECRET_BYTES:
        errors.append(FieldError("data", f"holds more than {MAX_SECRET_BYTES} bytes"))
    if obj.get("type") == API_KEY_SECRET_TYPE:
        errors += _key_errors(decoded)
    if errors:
        raise AdmissionError(errors, kind=SECRET, name=str((obj.get("metadata") or {}).get("name", "")))
    out = {k: v for k, v in obj.items() if k not in ("stringData", "status")}
    out["data"] = {k: base64.b64encode(v).decode() for k, v in sorted(decoded.items())}
    out.setdefault("type", "Opaque")
    return out


def _key_errors(decoded: Mapping[str, bytes]) -> list[FieldError]:
    if not decoded:
        return [FieldError("data", f"a {API_KEY_SECRET_TYPE} Secret holds at least one key (stringData: {{NAME: KEY}})")]
    errors = []
    for name, raw in decoded.items():
        where = f"data[{name}]"
        text = raw.decode("latin-1")
        if not MIN_KEY_LENGTH <= len(raw) <= MAX_KEY_LENGTH:
            errors.append(FieldError(where, f"an API key is {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters "
                                            "(make one with `openssl rand -hex 24`)"))
        elif not _TOKEN.match(text):
            errors.append(FieldError(where, "an API key is letters, digits and -._~+/ (a Bearer token), "
                                            "ending in at most a run of '='"))
    return errors


def secret_keys(secret: Mapping[str, Any]) -> dict[str, str]:
    """``{entry name: key}`` of a stored Secret (entries that do not decode are left out)."""
    keys = {}
    for name, value in (secret.get("data") or {}).items():
        try:
            keys[name] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
    return keys


def admit_resource_quota(obj: dict[str, Any]) -> dict[str, Any]:
    errors = _schema_errors(obj) + validate_quota(obj)
    if errors:
        raise AdmissionError(errors, kind=RESOURCE_QUOTA, name=str((obj.get("metadata") or {}).get("name", "")))
    return {k: v for k, v in obj.items() if k != "status"}


def _schema_errors(obj: dict[str, Any]) -> list[FieldError]:
    """The object against Kubernetes' own schema for its kind (kubernetes-validate)."""
    if obj.get("apiVersion") != "v1":
        return [FieldError("apiVersion", f"is {obj.get('apiVersion')!r}; {obj.get('kind')} is v1")]
    try:
        import kubernetes_validate
    except ImportError:  # a dev dependency: without it only the checks below run
        return []
    try:
        kubernetes_validate.validate({k: v for k, v in obj.items() if k != "status"},
                                     kubernetes_validate.utils.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        return [FieldError(where, exc.message)]
    return []


# -- the daemon's side ------------------------------------------------------------------------------------


class Tenancy:
    """Quota admission and status, and API keys for the gateway and LLM routers, over the daemon's store."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.every_route = gateway_auth_required(daemon.platform_config)
        self.secrets_dir = daemon.files.state / "secrets"
        self._statuses: dict[tuple[str, str], dict[str, Any]] = {}

    # -- apply ------------------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Admit and store a ResourceQuota or Secret; keys and quota status follow at once."""
        admitted = admit_secret(obj) if obj.get("kind") == SECRET else admit_resource_quota(obj)
        stored, _ = self.store.put(admitted)
        self.sync()
        self.daemon.wake()  # an LLM router's key file is rewritten on the next pass
        return self.store.get(stored["kind"], stored["metadata"]["namespace"], stored["metadata"]["name"])

    def admit(self, obj: dict[str, Any]) -> None:
        """Refuse ``obj`` (an admitted InferenceService or LLMInferenceService) when applying it would take
        its namespace past a ResourceQuota; raises AdmissionError naming the quota."""
        kind, meta = obj["kind"], obj["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        quotas = [Quota.from_object(q) for q in self.store.list(RESOURCE_QUOTA, namespace)]
        if not quotas:
            return
        previous = self.store.find(kind, namespace, name)
        old = self.usage(previous) if previous is not None else {}
        new = self.usage({**obj, "status": (previous or {}).get("status") or {}})
        messages = check(quotas, self.namespace_usage(namespace), old, new)
        if messages:
            raise AdmissionError([FieldError("spec", f"{message} (lower the replicas or the resources per replica, "
                                                     f"or raise the ResourceQuota's spec.hard)") for message in messages],
                                 kind=kind, name=name)

    # -- usage ------------------------------------------------------------------------------------------

    def namespace_usage(self, namespace: str) -> Usage:
        total: Usage = {}
        for kind in (ISVC, LLMISVC):
            for obj in self.store.list(kind, namespace):
                for key, value in self.usage(obj).items():
                    total[key] = total.get(key, Fraction(0)) + value
        return total

    def usage(self, obj: Mapping[str, Any]) -> Usage:
        """The most ``obj`` may run: its workloads at their autoscalers' maximum (nothing when it cannot be
        reconciled: then it starts nothing new)."""
        daemon = self.daemon
        unbounded = daemon.limits.max_replicas
        try:
            if obj["kind"] == LLMISVC:
                admitted = admit_llm_inference_service(dict(obj), max_replicas=unbounded)
                children = reconcile_llm(admitted, daemon.llm_config)
                bounds = engine_bounds(admitted["spec"])
                sized = {}
                if bounds is not None:
                    for child in children:
                        template_labels = ((child.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
                        if (child["kind"] == "Deployment" and template_labels.get(ROLE_LABEL, "both") in ("both", "decode")
                                and ENGINE_SELECTOR_ANNOTATION not in (child["metadata"].get("annotations") or {})):
                            sized[child["metadata"]["name"]] = bounds[1]
                return usage_of(workloads(children, unbounded, sized), LLMISVC_COUNT)
            isvc = admit_inference_service(dict(obj), max_replicas=unbounded, config=daemon.admission)
            runtime = None
            if isvc.spec.predictor.model is not None:
                runtime = resolve_runtime(isvc, daemon._namespace_runtimes(isvc.namespace), daemon._cluster_runtimes())
            children = reconcile(isvc, runtime, daemon.config, previous_status=obj.get("status") or None)
        except (AdmissionError, RuntimeResolutionError, ReconcileError, ValueError, KeyError, TypeError) as exc:
            log.debug("no usage for %s %s: %s", obj.get("kind"), (obj.get("metadata") or {}).get("name"), exc)
            return {ISVC_COUNT if obj.get("kind") == ISVC else LLMISVC_COUNT: Fraction(1)}
        return usage_of(workloads(children, unbounded), ISVC_COUNT)

    # -- every reconcile pass ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Keys and auth routes into the route table; each quota's status written when it changed."""
        self._sync_keys()
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for quota in self.store.list(RESOURCE_QUOTA):
            by_namespace.setdefault(quota["metadata"]["namespace"], []).append(quota)
        for namespace, quotas in by_namespace.items():
            usage = self.namespace_usage(namespace)
            for obj in quotas:
                try:
                    status = Quota.from_object(obj).status(usage)
                except ValueError:  # a database from before these checks
                    continue
                if status != obj.get("status"):
                    self.store.set_status(RESOURCE_QUOTA, namespace, obj["metadata"]["name"], status)

    def _sync_keys(self) -> None:
        keys: dict[str, list[str]] = {}
        for secret in self.store.list(SECRET):
            if secret.get("type") == API_KEY_SECRET_TYPE:
                keys.setdefault(secret["metadata"]["namespace"], []).extend(secret_keys(secret).values())
        routes = self.daemon.routes
        routes.keys.replace(keys)
        guarded = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in self.store.list(ISVC)
                   if str((o["metadata"].get("annotations") or {}).get(ENABLE_AUTH_ANNOTATION, "")).lower() == "true"]
        routes.set_auth(guarded, self.every_route)

    # -- the LLM-D router -------------------------------------------------------------------------------

    def router_with_keys(self, llmisvc: Mapping[str, Any], router: dict[str, Any]) -> dict[str, Any]:
        """The router Deployment reading its keys from the Secret ``llmisvc`` names (unchanged when it names
        none). The keys go to a 0600 file the router re-reads when it changes; a Secret that is missing
        leaves the file empty, and the router then refuses every request (it never falls open)."""
        meta = llmisvc["metadata"]
        secret_name = (meta.get("annotations") or {}).get(ROUTER_KEYS_ANNOTATION)
        if not secret_name:
            return router
        namespace, name = meta["namespace"], meta["name"]
        secret = self.store.find(SECRET, namespace, secret_name)
        if secret is None:
            log.warning("LLMInferenceService %s/%s: Secret %s (annotation %s) not found; its router refuses every "
                        "request until it exists", namespace, name, secret_name, ROUTER_KEYS_ANNOTATION)
        entries = secret_keys(secret) if secret is not None else {}
        path = self.secrets_dir / namespace / name / "api-keys.json"
        _write_private(path, json.dumps({"keys": [{"key": key, "tenant": f"{namespace}/{entry}"}
                                                  for entry, key in sorted(entries.items())]}))
        out = json.loads(json.dumps(router))
        for container in out["spec"]["template"]["spec"]["containers"]:
            if container.get("name") == "router":
                container["args"] = [*container.get("args", []), API_KEY_FILE_FLAG, str(path)]
        return out


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path`` (0600, directories 0700), replaced atomically; untouched when already so."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
