"""The model server's OpenAPI 3 document: ``openapi.yaml`` with the path parameters narrowed to what
this server serves, so a client (or a fuzzer) that reads it knows the model names and versions."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SPEC_FILE = Path(__file__).with_name("openapi.yaml")


@functools.cache
def _base() -> dict[str, Any]:
    document = yaml.safe_load(SPEC_FILE.read_text())
    document.pop("x-infer-operation", None)  # a YAML anchor's home; the two infer paths hold copies
    return document


def openapi_document(models: list[str], versions: list[str]) -> dict[str, Any]:
    """The document for a server serving ``models`` at ``versions`` (empty: unversioned)."""
    document = copy.deepcopy(_base())
    parameters = document["components"]["parameters"]
    if models:
        parameters["model"]["schema"]["enum"] = list(models)
    if versions:
        parameters["version"]["schema"]["enum"] = list(versions)
    return document
