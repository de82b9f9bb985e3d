"""The model server's errors: the headers an error class answers with are shared, so they are read-only."""

from __future__ import annotations

import pytest

from serving.runtimes.errors import InferenceServerError, InvalidInput, ServerBusy


def test_an_error_class_headers_cannot_be_changed_through_one_instance() -> None:
    with pytest.raises(TypeError):
        ServerBusy("busy").headers["X-Leak"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        InvalidInput("bad").headers["Retry-After"] = "9"  # type: ignore[index]
    assert dict(ServerBusy.headers) == {"Retry-After": "1"} and dict(InferenceServerError.headers) == {}
