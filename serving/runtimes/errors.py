"""Errors of the model server, each carrying the HTTP status its protocol adapters answer with.

They subclass ``ServingError`` so library callers catch one base; the server turns any of them into
``{"error": message}`` with ``status_code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from serving.errors import ServingError


class InferenceServerError(ServingError):
    """Base of the model server's errors; ``status_code`` is what the HTTP layer answers, with ``headers``."""

    status_code = 500
    # Read-only: a class attribute is shared by every instance, so no handler may add to it.
    headers: ClassVar[Mapping[str, str]] = MappingProxyType({})


class InvalidInput(InferenceServerError):
    """The request is malformed: bad JSON, a missing field, a shape that does not match its data."""

    status_code = 400


class ModelNotFound(InferenceServerError):
    """The request names a model this server does not serve."""

    status_code = 404


class RequestTooLarge(InferenceServerError):
    """The request body is over the server's limit (``--max_request_body``); refused before it is all read."""

    status_code = 413


class ServerBusy(InferenceServerError):
    """Every predict thread is busy and the queue behind them is full: try again shortly."""

    status_code = 503
    headers = MappingProxyType({"Retry-After": "1"})


class ModelNotReady(InferenceServerError):
    """The model exists but has not finished loading (or failed to)."""

    status_code = 503


class ModelLoadError(InferenceServerError):
    """The model directory cannot be served: no model file, several, or a file that does not load."""


class InferenceError(InferenceServerError):
    """The model itself failed while predicting."""
