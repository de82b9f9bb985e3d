import httpx
from botocore.exceptions import EndpointConnectionError

from serving.errors import AdmissionError, DaemonNotRunningError, FieldError
from tasks._common import is_transient


def test_network_failures_are_retried() -> None:
    assert is_transient(httpx.ConnectError("refused"))
    assert is_transient(httpx.ReadTimeout("slow"))
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(EndpointConnectionError(endpoint_url="http://s3"))


def test_bad_input_and_a_missing_daemon_are_not() -> None:
    assert not is_transient(AdmissionError(FieldError("spec.predictor", "bad")))
    assert not is_transient(DaemonNotRunningError("start it with odh up"))
    assert not is_transient(ValueError("unknown format"))
    assert not is_transient(FileNotFoundError("model.joblib"))
