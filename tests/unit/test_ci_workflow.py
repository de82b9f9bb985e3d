"""The GitHub Actions workflow in infra/ci/ uses only `odh` commands and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer
import yaml
from typer.core import TyperGroup
from typer.main import get_command

from deployments.cli import app
from deployments.rollout_command import rollout_command

WORKFLOW = Path(__file__).resolve().parents[2] / "infra" / "ci" / "github-actions" / "odh-rollout.yml"
_ODH = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?odh\s+(?P<args>[^;&|)]*)")


def odh_command() -> TyperGroup:
    command = get_command(app)
    assert isinstance(command, TyperGroup)
    if "rollout" not in command.commands:  # until the integrator registers it in cli.py: the same function
        alone = typer.Typer()
        alone.command("rollout")(rollout_command)
        alone.command("unused")(lambda: None)  # two commands: typer keeps the group
        group = get_command(alone)
        assert isinstance(group, TyperGroup)
        command.add_command(group.commands["rollout"], "rollout")
    return command


def odh_invocations() -> list[list[str]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    found: list[list[str]] = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = str(step.get("run", "")).replace("\\\n", " ")
            for line in script.splitlines():
                for match in _ODH.finditer(line.split(" #")[0]):
                    found.append(shlex.split(match["args"]))
    return found


def test_the_workflow_is_valid_yaml_with_its_triggers() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the bare key `on` as true
    assert "workflow_dispatch" in triggers and triggers["push"]["paths"]
    assert {"model_uri", "name"} <= set(triggers["workflow_dispatch"]["inputs"])


def test_every_odh_option_the_workflow_uses_exists() -> None:
    group = odh_command()
    invocations = odh_invocations()
    assert {args[0] for args in invocations} >= {"up", "deploy", "rollout", "down"}
    for args in invocations:
        command = group.commands.get(args[0])
        assert command is not None, f"odh {args[0]}: no such command"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = {arg.split("=")[0] for arg in args[1:] if arg.startswith("-")}
        assert used <= known, f"odh {args[0]}: unknown options {sorted(used - known)}"
        # Parsing succeeds (required options given, values of the right type) with placeholder values.
        concrete = [re.sub(r"\$\{?(\w+)\}?", lambda m: {"CANARY_PERCENT": "20", "ANALYSIS_WINDOW": "30"}.get(m[1], "x"), a)
                    for a in args[1:]]
        command.make_context(f"odh {args[0]}", concrete, resilient_parsing=False)
