"""Platforms execute desired objects: ``LocalPlatform`` on this machine (more to come)."""

from __future__ import annotations

from pathlib import Path

from serving.platform.base import KubeObject, Platform, condition, is_ready


def connect(state: Path) -> Platform:
    """The platform for a state directory (the embedded daemon)."""
    from serving.platform.local.client import LocalPlatform

    return LocalPlatform(state)


__all__ = ["KubeObject", "Platform", "condition", "connect", "is_ready"]
