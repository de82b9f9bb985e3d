"""Every platform takes exactly what ``Platform`` declares: the tasks are written against the interface."""

from __future__ import annotations

import inspect

import pytest

from serving.platform import Platform
from serving.platform.local.client import LocalPlatform

METHODS = [name for name, value in vars(Platform).items() if inspect.isfunction(value) and not name.startswith("_")]


def test_the_interface_declares_the_methods_the_tasks_call() -> None:
    assert set(METHODS) >= {"apply", "get", "list", "delete", "wait_ready"}


@pytest.mark.parametrize("method", METHODS)
def test_the_local_platform_takes_the_same_parameters_as_the_interface(method: str) -> None:
    declared = inspect.signature(getattr(Platform, method)).parameters
    implemented = inspect.signature(getattr(LocalPlatform, method)).parameters
    # Same names, order, kinds and defaults: a task that passes what the interface allows must work on
    # every platform (tasks/initialize passes wait_ready's ``generation``, which the interface once lacked).
    assert [(p.name, p.kind, p.default) for p in declared.values()] == [
        (p.name, p.kind, p.default) for p in implemented.values()
    ]
