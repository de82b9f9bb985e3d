"""Reading manifest files: YAML documents that must each be one Kubernetes object.

Bounded, because a manifest may come from anywhere: the file's size is capped, YAML aliases are refused
(a "billion laughs" document expands a few hundred bytes of aliases into gigabytes), and nesting is
capped. Every refusal is one sentence naming the file (and the document) and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serving.errors import ManifestError

# kube-apiserver's request body limit; a manifest of a few services is a few KB.
MAX_MANIFEST_BYTES = 3 << 20
# A pod template with affinity rules nests about 12 levels; past this is an attack, not a manifest.
MAX_DEPTH = 64


class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases before they are expanded (anchors alone are harmless)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(problem=f"uses the YAML alias *{event.anchor}", problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def nesting_depth(value: Any) -> int:
    """How deeply ``value`` nests (1 for a flat mapping), without recursion: the input is untrusted."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_manifests(text: str, source: str = "the manifest") -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``text``, each a mapping; raises ManifestError otherwise."""
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{source} is over {MAX_MANIFEST_BYTES} bytes: split it into smaller files")
    try:
        documents = list(yaml.load_all(text, Loader=_NoAliasLoader))  # a SafeLoader subclass
    except RecursionError:
        raise ManifestError(f"{source} nests deeper than YAML can be read; a manifest nests about 12 levels") from None
    except _AliasRefused as exc:
        raise ManifestError(f"{source} {exc.problem}{_at(exc)}: aliases are not accepted in manifests (a few "
                            "of them can expand a small file into gigabytes); write the value out") from None
    except yaml.MarkedYAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {exc.problem or exc.context}{_at(exc)}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    objects = []
    for number, doc in enumerate(documents, start=1):
        if doc is None:
            continue  # an empty document, e.g. after a trailing '---'
        where = f"{source}, document {number}," if len(documents) > 1 else source
        if not isinstance(doc, dict):
            raise ManifestError(f"{where} is {_yaml_type(doc)}, not a Kubernetes object: "
                                "write a mapping with apiVersion, kind, metadata and spec")
        if nesting_depth(doc) > MAX_DEPTH:
            raise ManifestError(f"{where} nests deeper than {MAX_DEPTH} levels")
        objects.append(doc)
    if not objects:
        raise ManifestError(f"{source} has no documents: it is empty")
    return objects


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """``parse_manifests`` of a file, with a clear error for a missing, unreadable or oversized one."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ManifestError(f"{path} is not a file")
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path} is {size} bytes, over the limit of {MAX_MANIFEST_BYTES}: split it into smaller files")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist") from None
    except OSError as exc:
        raise ManifestError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text: a manifest is a YAML file") from None
    return parse_manifests(text, str(path))


def _at(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"
