"""The model server's OpenAPI document: valid OpenAPI 3, every route in it, names narrowed to the server's."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from serving.runtimes.model import Model, ModelRepository
from serving.runtimes.openapi import openapi_document
from serving.runtimes.server import ModelServer


def test_the_document_is_valid_openapi_3() -> None:
    validator = pytest.importorskip("openapi_spec_validator")  # arrives with moto[server], a dev dependency
    validator.validate(openapi_document(["iris"], ["1"]))
    validator.validate(openapi_document([], []))


def test_every_route_and_method_is_documented() -> None:
    server = ModelServer(ModelRepository([Model("m", version="3")]))
    document = openapi_document(["m"], ["3"])
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item if method != "parameters"}
    served = set()
    for route in server.app.routes:
        path = route.path.replace(":v1_model}", "}")
        served |= {(path, method) for method in route.methods - {"HEAD"}}
    assert served == documented


def test_served_document_names_the_models_and_versions() -> None:
    with TestClient(ModelServer(ModelRepository([Model("m", version="3")])).app) as client:
        document = client.get("/openapi.json").json()
    parameters = document["components"]["parameters"]
    assert parameters["model"]["schema"]["enum"] == ["m"]
    assert parameters["version"]["schema"]["enum"] == ["3"]
    assert "x-infer-operation" not in document
    operation_ids = [op["operationId"] for item in document["paths"].values() for key, op in item.items() if key != "parameters"]
    assert len(operation_ids) == len(set(operation_ids))
