"""The platform config file: sections, defaults when absent, errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.platform.local.platform_config import PlatformConfig, PlatformConfigError


def test_absent_file_means_defaults(tmp_path: Path) -> None:
    config = PlatformConfig.load(tmp_path)
    assert config.deployment.default_deployment_mode == "Standard"
    assert config.autoscaler.stable_window == 60


def test_file_in_state_dir(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "deployment:\n  defaultDeploymentMode: Knative\nautoscaler:\n  stable-window: 30s\n  enable-scale-to-zero: false\n"
        "  container-concurrency-target-default: 10\n")
    config = PlatformConfig.load(tmp_path)
    assert config.deployment.default_deployment_mode == "Serverless"
    assert (config.autoscaler.stable_window, config.autoscaler.enable_scale_to_zero) == (30, False)
    assert config.autoscaler.container_concurrency_target_default == 10


def test_gateway_auth_is_off_unless_required(tmp_path: Path) -> None:
    assert PlatformConfig.load(tmp_path).gateway.auth == "off"
    (tmp_path / "config.yaml").write_text("gateway:\n  auth: Required\n")
    assert PlatformConfig.load(tmp_path).gateway.auth == "required"


@pytest.mark.parametrize(("text", "needle"), [
    ("autoscaler:\n  stable-window: 2s\n", "autoscaler.stable-window"),
    ("autoscaler:\n  stabel-window: 60s\n", "stabel-window: unknown key"),
    ("deployment:\n  defaultDeploymentMode: Fast\n", "use Standard or Serverless"),
    ("autoscalr: {}\n", "autoscalr: unknown key"),
    ("- a list\n", "expected a mapping"),
    ("autoscaler: [\n", "cannot read it as YAML"),
    ("gateway:\n  auth: maybe\n", "gateway.auth"),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(PlatformConfigError, match=needle) as caught:
        PlatformConfig.load(path)
    assert str(path) in str(caught.value)
