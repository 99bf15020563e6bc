"""The fault-injection switch: inert unless armed, strict about what it is armed with."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from initializer import faults


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    faults._point = None
    faults._signal_file = None


POINTS = [f"after:{name}" for name in faults.BOUNDARIES]
POINTS += [f"during:{name}" for name in faults.COMMANDS]


class Waited(Exception):
    """Raised instead of the armed boundary's wait, which would otherwise never end."""


class NoWaiting:
    """Stands in for ``faults.time``: a boundary that starts to wait raises ``Waited``."""

    @staticmethod
    def sleep(seconds: float) -> None:
        raise Waited(seconds)


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "time", NoWaiting)


def pass_point(point: str) -> None:
    """Go through ``point`` as the Initializer does: a step boundary or around a command."""
    kind, name = point.split(":")
    if kind == "after":
        faults.boundary(name)
    else:
        with faults.during(name):
            pass


def test_unarmed_points_do_nothing(no_waiting: None) -> None:
    # A point that waited would raise Waited; one that announced would fail in _announce,
    # which has no signal file to write.
    for point in POINTS:
        pass_point(point)


@pytest.mark.parametrize("armed", POINTS)
def test_an_armed_point_is_the_only_one_that_fires(
    tmp_path: Path, no_waiting: None, armed: str
) -> None:
    signal_file = tmp_path / "signal"
    faults.arm(armed, signal_file)
    for point in POINTS:
        if point != armed:
            pass_point(point)
    assert not signal_file.exists()
    # The armed point itself announces (and an "after" point waits to be killed).
    if armed.startswith("after:"):
        with pytest.raises(Waited):
            pass_point(armed)
    else:
        pass_point(armed)
    assert signal_file.read_text() == armed


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


def points_in_the_code() -> dict[str, set[str]]:
    """The names the package passes to faults.boundary() and faults.during(), by kind."""
    found: dict[str, set[str]] = {"boundary": set(), "during": set()}
    for path in Path(faults.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "faults"
                and node.func.attr in found
            ):
                (argument,) = node.args
                # A computed name could not be checked against the known points.
                assert isinstance(argument, ast.Constant), f"{path.name}:{node.lineno}"
                assert isinstance(argument.value, str), f"{path.name}:{node.lineno}"
                found[node.func.attr].add(argument.value)
    return found


def test_the_code_passes_exactly_the_known_points() -> None:
    # A point in the code but not in the lists can never be armed (nor crash-tested); one in
    # the lists but not in the code makes the crash test wait for an announcement in vain.
    found = points_in_the_code()
    assert found["boundary"] == set(faults.BOUNDARIES)
    assert found["during"] == set(faults.COMMANDS)
