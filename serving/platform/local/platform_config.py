"""The embedded platform's one configuration file: ``<state dir>/config.yaml``.

```yaml
deployment:
  defaultDeploymentMode: Serverless   # or Standard (the default)
autoscaler:                           # Knative's config-autoscaler ConfigMap data, same keys and strings
  stable-window: "60s"
  container-concurrency-target-default: "100"
gateway:
  auth: required                      # every route asks for its namespace's API key (default: off)
```

A missing file means every default. A bad value raises ``PlatformConfigError`` naming the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.autoscaling.config import AutoscalerConfig, AutoscalerConfigError
from serving.errors import ServingError

CONFIG_FILE = "config.yaml"
_MODE_ALIASES = {"standard": "Standard", "rawdeployment": "Standard", "serverless": "Serverless", "knative": "Serverless"}


class PlatformConfigError(ServingError):
    """The platform config file is unreadable or holds a bad value; the message names the file and key."""


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    default_deployment_mode: Literal["Standard", "Serverless"] = Field("Standard", alias="defaultDeploymentMode")

    @field_validator("default_deployment_mode", mode="before")
    @classmethod
    def _known_mode(cls, value: Any) -> Any:
        # KServe accepts RawDeployment and Knative as the older names of the two modes
        return _MODE_ALIASES.get(str(value).lower(), value)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # off: only InferenceServices annotated security.opendatahub.io/enable-auth ask for a key (tenancy.py)
    auth: Literal["required", "off"] = "off"

    @field_validator("auth", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return str(value).strip().lower() if isinstance(value, str | bool) else value


class PlatformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    deployment: DeploymentSettings = DeploymentSettings(defaultDeploymentMode="Standard")
    gateway: GatewaySettings = GatewaySettings()
    autoscaler_data: dict[str, str] = Field(default_factory=dict, alias="autoscaler")

    @field_validator("autoscaler_data", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        # YAML reads `enable-scale-to-zero: true` as a bool; the ConfigMap's data are strings
        if isinstance(value, dict):
            return {str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in value.items()}
        return value

    @field_validator("autoscaler_data")
    @classmethod
    def _valid_autoscaler(cls, value: dict[str, str]) -> dict[str, str]:
        AutoscalerConfig.from_data(value)  # raises AutoscalerConfigError naming the key
        return value

    @property
    def autoscaler(self) -> AutoscalerConfig:
        return AutoscalerConfig.from_data(self.autoscaler_data)

    @classmethod
    def load(cls, path: str | Path) -> PlatformConfig:
        """From ``path``: a config.yaml file, or a state directory holding one; defaults when absent."""
        file = Path(path)
        if file.is_dir():
            file = file / CONFIG_FILE
        if not file.exists():
            return cls()
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PlatformConfigError(f"{file}: cannot read it as YAML: {exc}") from None
        if not isinstance(data, dict):
            raise PlatformConfigError(f"{file}: expected a mapping with deployment: and autoscaler: sections")
        return cls.parse(data, source=str(file))

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "platform config") -> PlatformConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PlatformConfigError(f"{source}: {_describe(exc)}") from None
        except AutoscalerConfigError as exc:
            raise PlatformConfigError(f"{source}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, AutoscalerConfigError):
            lines.append(str(cause))
        elif error["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key (known: deployment.defaultDeploymentMode, autoscaler.<config-autoscaler key>)")
        elif where.endswith("defaultDeploymentMode"):
            lines.append(f"{where}: {error['input']!r} is not a deployment mode; use Standard or Serverless")
        else:
            lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)
