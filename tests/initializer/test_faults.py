"""The fault-injection switch: inert unless armed, strict about what it is armed with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from initializer import faults


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    faults._point = None
    faults._signal_file = None


def test_unarmed_points_do_nothing(tmp_path: Path) -> None:
    for name in faults.FIRST_START_BOUNDARIES:
        faults.boundary(name)
    with faults.during("mkfs"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_the_environment_without_the_switch_arms_nothing() -> None:
    faults.arm_from_environment({faults.SIGNAL_ENV: "/tmp/x"})
    assert faults._point is None


def test_an_unknown_point_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(faults.FaultPlanInvalid) as raised:
        faults.arm("after:lunch", tmp_path / "signal")
    assert "after:mkfs" in str(raised.value) and "during:luks-format" in str(raised.value)


def test_during_announces_the_command_and_carries_on(tmp_path: Path) -> None:
    signal_file = tmp_path / "signal"
    faults.arm_from_environment(
        {faults.FAULT_ENV: "during:mkfs", faults.SIGNAL_ENV: str(signal_file)}
    )
    with faults.during("luks-open"):
        pass
    assert not signal_file.exists()
    with faults.during("mkfs"):
        ran = True
    assert ran and signal_file.read_text() == "during:mkfs"


def test_the_initializer_command_never_reads_the_switch() -> None:
    package = Path(faults.__file__).parent
    readers = [
        path.name
        for path in package.glob("*.py")
        if "arm_from_environment" in path.read_text() and path.name != "faults.py"
    ]
    assert readers == []


def test_later_start_growth_and_teardown_points_can_be_armed(tmp_path: Path) -> None:
    for point in ("after:grow-file-system", "during:grow-file-system", "after:unmount"):
        faults.arm(point, tmp_path / "signal")
    with pytest.raises(faults.FaultPlanInvalid):
        faults.arm("during:unmount", tmp_path / "signal")  # no external command there


def test_first_start_commands_are_a_first_start_subset() -> None:
    # The first-start crash test waits for each of these; a later-start-only command in the
    # list would make it wait for a point a first start never passes.
    assert set(faults.FIRST_START_COMMANDS) <= set(faults.COMMANDS)
    assert "grow-file-system" not in faults.FIRST_START_COMMANDS
