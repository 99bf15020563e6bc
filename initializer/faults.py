"""Fault injection for the crash-safety tests: stop the Initializer at a named point so the
test can kill it there with SIGKILL, exactly as a container runtime kills a pod.

Inert in the ``initializer`` command: nothing in the installed package arms it. Only the
test entry point ``python -m tests.vm.faulty_initializer`` (in the test tree, never part of
an image) reads the switch from the environment and calls :func:`arm`:

- ``CONTRAST_FAULT_INJECTION=after:STEP`` stops right after STEP (one of ``BOUNDARIES``):
  the point is announced, then the process waits to be killed.
- ``CONTRAST_FAULT_INJECTION=during:STEP`` announces that STEP's external command (one of
  ``COMMANDS``) is about to start and carries on, so the test can kill it mid-command.
- ``CONTRAST_FAULT_SIGNAL=FILE``: where the announcement (the point's name) is written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

FAULT_ENV = "CONTRAST_FAULT_INJECTION"
SIGNAL_ENV = "CONTRAST_FAULT_SIGNAL"

# In the order a first start passes them.
FIRST_START_BOUNDARIES = (
    "probe",
    "state-formatting",
    "luks-format",
    "header-written",
    "luks-open",
    "mkfs",
    "state-initialized",
    "mount",
    "done",
)
# A later start passes "probe", "luks-open", "mount" and "done" too, and grows the file
# system when the device grew; SIGTERM's teardown passes the last two.
GROWTH_BOUNDARIES = ("grow-file-system",)
TEARDOWN_BOUNDARIES = ("done-removed", "unmount")
BOUNDARIES = FIRST_START_BOUNDARIES + GROWTH_BOUNDARIES + TEARDOWN_BOUNDARIES
FIRST_START_COMMANDS = ("luks-format", "luks-open", "mkfs")
COMMANDS = (*FIRST_START_COMMANDS, "grow-file-system")

_point: str | None = None
_signal_file: Path | None = None


class FaultPlanInvalid(ValueError):
    pass


def arm(point: str, signal_file: Path) -> None:
    known = [f"after:{name}" for name in BOUNDARIES]
    known += [f"during:{name}" for name in COMMANDS]
    if point not in known:
        raise FaultPlanInvalid(f"unknown fault point {point!r}; known: {', '.join(known)}")
    global _point, _signal_file
    _point, _signal_file = point, signal_file


def arm_from_environment(environ: Mapping[str, str]) -> None:
    point = environ.get(FAULT_ENV)
    if point:
        arm(point, Path(environ.get(SIGNAL_ENV, "/tmp/contrast-fault")))


def _announce(point: str) -> None:
    assert _signal_file is not None
    fd = os.open(_signal_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, point.encode())
    finally:
        os.close(fd)


def boundary(name: str) -> None:
    """A step boundary: when armed for ``after:name``, announce it and wait to be killed."""
    if _point == f"after:{name}":
        _announce(_point)
        while True:
            time.sleep(3600)


@contextlib.contextmanager
def during(name: str) -> Iterator[None]:
    """Around an external command: when armed for ``during:name``, announce its start."""
    if _point == f"during:{name}":
        _announce(_point)
    yield
