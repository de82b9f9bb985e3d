"""The operate flow refuses bad parameters up front, naming the parameter and the fix."""

from __future__ import annotations

import pytest

from flows.operate import check_parameters


@pytest.mark.parametrize(("window", "webhook", "block", "named"), [
    (0.0, None, None, "window_seconds"),
    (301.0, None, None, "window_seconds"),
    (5.0, "127.0.0.1:9000/alerts", None, "alert_webhook_url"),
    (5.0, "ftp://127.0.0.1/alerts", None, "alert_webhook_url"),
    (5.0, None, "ops", "notification_block"),
    (5.0, None, "a/b/c", "notification_block"),
])
def test_bad_parameters_are_refused_naming_the_parameter(window: float, webhook: str | None, block: str | None, named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}: .*(give|e\\.g\\.)"):
        check_parameters(window, webhook, block)


def test_good_parameters_pass() -> None:
    check_parameters(5.0, "http://127.0.0.1:9000/alerts", "custom-webhook/ops")
    check_parameters(0.5, None, None)
