"""Logging set-up: loggers cached on their first use follow a later configuration."""

from __future__ import annotations

import json

import pytest
import structlog
from structlog.testing import capture_logs

from banditroute.logs import configure_logging


def test_a_logger_used_before_a_reconfiguration_follows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A logger first used under one configure_logging call renders with the next call's
    processors (JSON after key=value) and is seen by capture_logs, as every in-process CLI run
    reconfigures logging (a log test after one used to miss its logger's events)."""
    log = structlog.get_logger("tests.test_logs")
    try:
        configure_logging("info")
        log.info("first_use", n=1)
        assert "first_use" in capsys.readouterr().err
        configure_logging("info", json=True)
        log.info("after_reconfiguration", n=2)
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["event"] == "after_reconfiguration"
        with capture_logs() as logged:
            log.error("captured", n=3)
        assert [entry["event"] for entry in logged] == ["captured"]
        assert capsys.readouterr().err == ""
    finally:
        configure_logging("info")  # as a CLI run leaves it
