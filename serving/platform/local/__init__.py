"""The embedded platform: a daemon that runs InferenceServices as local processes behind one gateway.

Names are loaded on first use so that the pure modules (store, pods, routes) and the gateway's own
entry point import without pulling in the daemon.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LocalPlatform": "serving.platform.local.client",
    "daemon_info": "serving.platform.local.lifecycle",
    "start_daemon": "serving.platform.local.lifecycle",
    "stop_daemon": "serving.platform.local.lifecycle",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(import_module(_EXPORTS[name]), name)
