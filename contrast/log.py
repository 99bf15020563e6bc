"""The one logger setup: logfmt lines on stderr, one event per line, greppable.

A line looks like ``ts=2026-12-03T16:30:01.123Z level=info component=initializer
event=luks-open device=/dev/vda duration_ms=412``. Values with spaces are quoted. Nothing
secret is ever passed here; callers log names, paths, sizes and durations only.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_FIELDS_ATTR = "fields"


def _format_value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        parts = [
            f"ts={stamp[:-3]}Z",
            f"level={record.levelname.lower()}",
            f"component={_format_value(record.name)}",
            f"event={_format_value(record.getMessage())}",
        ]
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, {})
        parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
        if record.exc_info and record.levelno >= logging.ERROR:
            parts.append(f"exception={_format_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(component: str, level: int = logging.INFO) -> logging.Logger:
    """Configure the root handler once per process and return the component's logger."""
    root = logging.getLogger()
    if not any(getattr(h, "_contrast", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LogfmtFormatter())
        handler._contrast = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    return logging.getLogger(component)


def event(
    logger: logging.Logger, name: str, level: int = logging.INFO, /, **fields: object
) -> None:
    """Log one structured event: ``event(log, "device-ready", device=path, size=n)``."""
    logger.log(level, name, extra={_FIELDS_ATTR: fields})


@contextmanager
def step(logger: logging.Logger, name: str, **fields: object) -> Iterator[dict[str, object]]:
    """Log a step with its duration; the yielded dict adds fields to the closing line.

    On an exception the step is logged as failed with its duration and the error type, then
    the exception propagates unchanged.
    """
    extra: dict[str, object] = {}
    start = time.monotonic()
    try:
        yield extra
    except BaseException as exc:
        duration_ms = round((time.monotonic() - start) * 1000, 1)
        # Not an Exception (a termination signal, Ctrl-C): the step was cut short on
        # purpose, which is no error.
        interrupted = not isinstance(exc, Exception)
        event(
            logger,
            name,
            logging.INFO if interrupted else logging.ERROR,
            **fields,
            **extra,
            status="interrupted" if interrupted else "failed",
            error=type(exc).__name__,
            duration_ms=duration_ms,
        )
        raise
    duration_ms = round((time.monotonic() - start) * 1000, 1)
    event(logger, name, **fields, **extra, status="ok", duration_ms=duration_ms)
