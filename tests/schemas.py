"""Validate objects against the upstream CRD schemas in tests/fixtures/kserve/crds/ (shared by the tests)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "fixtures" / "kserve" / "crds"
SAMPLES = CRDS.parent / "samples"


def sample_files(pattern: str = "*.yaml") -> list[tuple[Path, list[dict] | None]]:
    """KServe's doc samples with their documents; None for a file that is not valid YAML (some carry
    ``{placeholder}`` text meant to be filled in by hand)."""
    files: list[tuple[Path, list[dict] | None]] = []
    for path in sorted(SAMPLES.glob(pattern)):
        try:
            files.append((path, [d for d in yaml.safe_load_all(path.read_text()) if d]))
        except yaml.YAMLError:
            files.append((path, None))
    return files


def _to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema: int-or-string becomes an anyOf, nullable admits
    null, and the other ``x-kubernetes-*`` markers are dropped."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd_validator(filename: str, version: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / filename).read_text())
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return jsonschema.Draft7Validator(_to_json_schema(schema))


def assert_valid(obj: dict, filename: str, version: str) -> None:
    errors = sorted(crd_validator(filename, version).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]
