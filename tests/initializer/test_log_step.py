"""A step's closing line: failed on an error, interrupted (no error) on a termination."""

from __future__ import annotations

import logging

import pytest

from contrast.log import LogfmtFormatter, step
from initializer.termination import Terminated

log = logging.getLogger("test-step")


def closing(caplog: pytest.LogCaptureFixture, exc: BaseException) -> tuple[int, str]:
    with (
        caplog.at_level(logging.INFO, logger="test-step"),
        pytest.raises(type(exc)),
        step(log, "wait-device", device="/dev/x"),
    ):
        raise exc
    (record,) = caplog.records
    return record.levelno, LogfmtFormatter().format(record)


def test_an_error_closes_the_step_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    level, line = closing(caplog, ValueError("boom"))
    assert level == logging.ERROR
    assert "status=failed" in line and "error=ValueError" in line


def test_a_termination_closes_the_step_as_interrupted(caplog: pytest.LogCaptureFixture) -> None:
    level, line = closing(caplog, Terminated(15))
    assert level == logging.INFO
    assert "status=interrupted" in line and "error=Terminated" in line
