"""The small subset of Go's text/template that KServe applies to runtime containers and domain templates.

KServe renders a runtime container (marshalled to JSON) as a Go template with the InferenceService's
ObjectMeta as data (``ReplacePlaceholders``), so ``{{.Name}}``, ``{{.Namespace}}``, ``{{.Labels.key}}``,
``{{.Annotations.key}}`` and ``{{index .Annotations "a/b"}}`` all work. The ingress ``domainTemplate``
uses the same syntax with ``.Name``, ``.Namespace`` and ``.IngressDomain``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ACTION = re.compile(
    r"\{\{-?\s*(?:\.(?P<field>\w+)(?:\.(?P<key>[\w.-]+))?|index\s+\.(?P<ifield>\w+)\s+\"(?P<ikey>[^\"]+)\")\s*-?\}\}"
)
# What Go's text/template prints for a missing map key.
NO_VALUE = "<no value>"


def render(text: str, data: Mapping[str, Any]) -> str:
    """Replace every supported action in ``text``; unknown fields are left as written."""

    def substitute(match: re.Match[str]) -> str:
        field = match.group("field") or match.group("ifield")
        key = match.group("key") or match.group("ikey")
        if field not in data:
            return match.group(0)
        value = data[field]
        if key is not None:
            value = (value or {}).get(key, NO_VALUE) if isinstance(value, Mapping) or value is None else NO_VALUE
        return "" if value is None else str(value)

    return _ACTION.sub(substitute, text)


def render_tree(value: Any, data: Mapping[str, Any]) -> Any:
    """``render`` applied to every string inside nested dicts and lists."""
    if isinstance(value, str):
        return render(value, data)
    if isinstance(value, list):
        return [render_tree(item, data) for item in value]
    if isinstance(value, dict):
        return {k: render_tree(v, data) for k, v in value.items()}
    return value


def object_meta_data(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Template data for ObjectMeta, with Go's field names."""
    return {
        "Name": metadata.get("name", ""),
        "Namespace": metadata.get("namespace", ""),
        "UID": metadata.get("uid", ""),
        "Generation": metadata.get("generation", 0),
        "Labels": dict(metadata.get("labels") or {}),
        "Annotations": dict(metadata.get("annotations") or {}),
    }
