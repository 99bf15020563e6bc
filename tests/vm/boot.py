"""Host side of the microVM tests: boot once, run a scenario module, collect its RESULT lines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest import RESULT_PREFIX

PROJECT = Path(__file__).resolve().parents[2]
RUNNER = PROJECT / "tests" / "vm" / "run"

Steps = dict[str, dict[str, Any]]


def sparse_disk(path: Path, size: int) -> Path:
    """A disk image of ``size`` bytes that takes no space until written."""
    with path.open("wb") as disk:
        disk.truncate(size)
    return path


def boot(disks: list[Path], module: str, *args: str, timeout: float = 3600) -> Steps:
    """Run ``python -m module args`` in a microVM with ``disks``; the facts of each step.

    Fails the test with the VM's output if the scenario did not reach its "done" step.
    """
    argv = [str(RUNNER)]
    for disk in disks:
        argv += ["--disk", str(disk)]
    argv += ["--", "python", "-m", module, *args]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    steps: Steps = {}
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            facts = json.loads(line[len(RESULT_PREFIX) :])
            steps[facts.pop("step")] = facts
    if "done" not in steps:
        pytest.fail(
            f"the scenario did not finish (exit {completed.returncode}):\n"
            f"{completed.stdout[-6000:]}\n{completed.stderr[-4000:]}"
        )
    return steps
