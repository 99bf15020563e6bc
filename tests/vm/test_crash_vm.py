"""Crash safety of the first start, for real in the microVM (issue 7, section 1).

- Every fault point of a first start (initializer/faults.py): the Initializer is SIGKILLed
  there (at a step boundary, or while cryptsetup or mkfs runs); a fresh start must reach
  /done, and once the state record says "initialized" the volume is never formatted again.
- Power cuts: a chain of boots, each ended by powering the VM off (no sync, no clean
  shutdown) at a random moment while a first start runs on one device and an application
  writes and fsyncs files on another. Each next boot: the interrupted device must start,
  and every file the application had fsynced must be there, intact.
- A volume holding data: the Initializer SIGKILLed at every point of a later start (also
  while cryptsetup open or an online growth runs, and while the pod runs and the
  application writes) and of SIGTERM's teardown; the next start must open the same volume
  with every fsynced file intact (tests/vm/data_kill_scenarios.py).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from initializer import faults
from tests.vm import data_kill_scenarios
from tests.vm.boot import RUNNER, Steps, boot, sparse_disk
from tests.vm.guest import RESULT_PREFIX

pytestmark = pytest.mark.vm

MiB = 1024 * 1024
BOUNDARIES = [f"after:{name}" for name in faults.FIRST_START_BOUNDARIES]
DURING = [f"during:{name}" for name in faults.FIRST_START_COMMANDS]
# Points at which nothing has been written to the device yet.
BEFORE_ANY_WRITE = ["after:probe"]
# Points after the record says "initialized": the volume may hold application data.
INITIALIZED = ["after:state-initialized", "after:mount", "after:done"]
# Each power cut: (the first start's event after which the clock starts, the window in
# seconds the cut lands in at random). The first two land inside the first start's
# unfinished part for sure (mkfs alone outlasts their windows in the VM); the last anywhere
# from the device found to well after /done (its own work takes about 3 s in the VM).
POWER_CUTS = [("state-formatting", 0.3), ("luks-open", 0.3), ("wait-device", 5.0)]
UNFINISHED_CUTS = 2


@pytest.fixture(scope="module", params=["none", "hmac-sha256"])
def kills(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Steps:
    """The kills without integrity protection, and with it (where luksFormat also formats
    dm-integrity through a temporary device-mapper device that a kill can leave behind)."""
    disk = sparse_disk(tmp_path_factory.mktemp("kills") / "volume.img", 128 * MiB)
    group = "kills" if request.param == "none" else "kills-integrity"
    return boot([disk], "tests.vm.crash_scenarios", group)


@pytest.mark.parametrize("point", BOUNDARIES + DURING)
def test_a_first_start_killed_at_any_point_is_finished_by_the_next_start(
    kills: Steps, point: str
) -> None:
    facts = kills[f"kill {point}"]
    assert facts["reached"], facts["faulty_output"]
    assert facts["killed_status"] != 0  # the container's exit status after its PID 1 was killed
    assert facts["fresh_ready"], facts["fresh_errors"]
    assert facts["fresh_status"] == 0
    assert facts["state_after_fresh"] == "initialized"
    assert facts["mappings"] == []


@pytest.mark.parametrize("point", DURING)
def test_the_kill_lands_while_the_external_command_runs(kills: Steps, point: str) -> None:
    assert kills[f"kill {point}"]["command_running_at_kill"] is True


@pytest.mark.parametrize("point", BEFORE_ANY_WRITE)
def test_killed_before_the_first_write_the_device_is_still_blank(kills: Steps, point: str) -> None:
    facts = kills[f"kill {point}"]
    assert facts["state_after_kill"] == "none"
    assert not facts["resumed"] and facts["formatted_again"]


@pytest.mark.parametrize(
    "point", [p for p in BOUNDARIES + DURING if p not in BEFORE_ANY_WRITE + INITIALIZED]
)
def test_an_unfinished_first_start_is_recognised_and_started_over(kills: Steps, point: str) -> None:
    facts = kills[f"kill {point}"]
    assert facts["state_after_kill"] == "formatting"
    assert facts["resumed"] and facts["formatted_again"]


@pytest.mark.parametrize("point", INITIALIZED)
def test_once_initialized_the_volume_is_opened_never_formatted_again(
    kills: Steps, point: str
) -> None:
    facts = kills[f"kill {point}"]
    assert facts["state_after_kill"] == "initialized"
    assert not facts["resumed"] and not facts["formatted_again"]
    assert facts["uuid_kept"]


def results(stdout: str) -> list[dict[str, Any]]:
    """RESULT lines in order; the line a power cut interrupted is dropped."""
    found = []
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                found.append(json.loads(line[len(RESULT_PREFIX) :]))
            except json.JSONDecodeError:
                continue
    return found


def cut_power(
    disks: list[Path], trial: int, anchor: str, delay: float, expected: str
) -> dict[str, Any]:
    argv = [str(RUNNER)]
    for disk in disks:
        argv += ["--disk", str(disk)]
    argv += ["--", "python", "-m", "tests.vm.crash_scenarios", "power-off"]
    argv += [str(trial), anchor, f"{delay:.2f}", expected]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    lines = results(completed.stdout)
    steps = {line["step"]: line for line in lines if line["step"] != "acked"}
    if "powering-off" not in steps or "still-running-after-power-off" in steps:
        pytest.fail(
            f"boot {trial} did not end in a power cut (exit {completed.returncode}):\n"
            f"{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
        )
    acked = [line["count"] for line in lines if line["step"] == "acked"]
    return {**steps, "acked": max(acked, default=0)}


@pytest.fixture(scope="module")
def power_cuts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("power")
    seed = random.randrange(2**32)
    print(f"power-cut delays from random seed {seed}")
    rng = random.Random(seed)
    app = sparse_disk(directory / "app.img", 256 * MiB)
    disks = [
        sparse_disk(directory / f"first-start-{i}.img", 64 * MiB)
        for i in range(len(POWER_CUTS) + 1)
    ]
    boots, expected = [], ""
    for trial, (anchor, window) in enumerate(POWER_CUTS):
        delay = rng.uniform(0.0, window)
        disks_now = [app, disks[trial], disks[trial + 1]]
        facts = cut_power(disks_now, trial, anchor, delay, expected)
        boots.append(facts)
        expected += f"{trial}:{facts['acked']},"
    last = disks[len(POWER_CUTS)]
    boots.append(boot([app, last], "tests.vm.crash_scenarios", "verify", expected))
    return boots


def test_after_every_power_cut_in_a_first_start_the_next_start_reaches_done(
    power_cuts: list[dict[str, Any]],
) -> None:
    # Boot 0 starts a blank device; every later boot starts the one the previous cut hit.
    for facts in power_cuts:
        previous = facts["previous-device"]
        assert previous["ready"], previous["errors"]
        assert previous["status"] == 0
        assert previous["state"] == "initialized"


def test_power_cuts_inside_the_unfinished_first_start_are_recognised_and_finished(
    power_cuts: list[dict[str, Any]],
) -> None:
    # Boot N+1 starts the device boot N's cut interrupted.
    for trial in range(UNFINISHED_CUTS):
        cut = power_cuts[trial]["powering-off"]
        assert "state-formatting" in cut["first_start_steps"]
        assert "state-initialized" not in cut["first_start_steps"]
        previous = power_cuts[trial + 1]["previous-device"]
        assert previous["resumed"], previous["errors"]
        assert previous["state"] == "initialized"


def test_no_file_the_application_fsynced_is_lost_to_a_power_cut(
    power_cuts: list[dict[str, Any]],
) -> None:
    checked = 0
    for facts in power_cuts:
        volume = facts["app-volume"]
        assert volume["ready"], volume["errors"]
        assert volume["missing"] == [] and volume["corrupt"] == []
        checked += volume["checked"]
    # The check is only worth something if the application got files onto the disk.
    assert checked > 0
    assert (
        sum(facts.get("acked", 0) for facts in power_cuts)
        == power_cuts[-1]["app-volume"]["checked"]
    )


# An Initializer killed during a later start or a shutdown, on a volume holding data.
DATA_POINTS = data_kill_scenarios.POINTS


@pytest.fixture(scope="module")
def data_kills(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    disk = sparse_disk(tmp_path_factory.mktemp("data-kills") / "volume.img", 2048 * MiB)
    return boot([disk], "tests.vm.data_kill_scenarios")


def test_the_volume_with_data_starts_before_the_kills(data_kills: Steps) -> None:
    first = data_kills["first-start"]
    assert first["ready"], first["errors"]
    assert first["status"] == 0


@pytest.mark.parametrize("point", DATA_POINTS)
def test_killed_at_any_point_of_a_later_start_or_shutdown_no_fsynced_file_is_lost(
    data_kills: Steps, point: str
) -> None:
    facts = data_kills[f"kill {point}"]
    assert facts["reached"], facts["faulty_output"]
    assert facts["fresh_ready"], facts["fresh_errors"]
    assert facts["fresh_status"] == 0
    assert facts["missing"] == [] and facts["corrupt"] == []
    assert facts["checked"] > 0


@pytest.mark.parametrize("point", DATA_POINTS)
def test_a_volume_with_data_is_opened_again_never_formatted(data_kills: Steps, point: str) -> None:
    facts = data_kills[f"kill {point}"]
    assert not facts["formatted_again"]
    assert facts["uuid_kept"]
    assert facts["state_after_fresh"] == "initialized"
    assert facts["mappings"] == []


def test_the_application_was_writing_when_the_running_pod_was_killed(data_kills: Steps) -> None:
    assert data_kills["kill after:done"]["acked_before_kill"] >= 2


@pytest.mark.parametrize("point", [p for p in DATA_POINTS if p.startswith("during:")])
def test_the_kill_lands_while_the_later_start_runs_its_command(
    data_kills: Steps, point: str
) -> None:
    assert data_kills[f"kill {point}"]["command_running_at_kill"] is True


@pytest.mark.parametrize("point", data_kill_scenarios.GROWTH)
def test_a_growth_cut_short_by_a_kill_is_completed_by_the_next_start(
    data_kills: Steps, point: str
) -> None:
    facts = data_kills[f"kill {point}"]
    assert facts["still_smaller_than_mapping"] is False
    # The mapping is the device less the 16 MiB header area; ext4 fills it to the block.
    data_area = facts["device_bytes"] - 16 * MiB
    assert data_area - 4096 < facts["file_system_bytes"] <= data_area


def test_a_restarted_initializer_takes_over_the_volume_the_application_still_uses(
    data_kills: Steps,
) -> None:
    facts = data_kills["sidecar restart"]
    assert facts["first_ready"] and facts["still_mounted_after_kill"]
    assert facts["restarted_ready"], facts["restarted_errors"]
    assert facts["taken_over"] and not facts["formatted_again"]
    assert facts["writer_alive_at_takeover"]
    # The application wrote on after its Initializer was killed: more files were acked
    # than existed at the kill.
    assert facts["acked"] > facts["files_at_kill"]
    assert facts["restarted_status"] == 0


def test_a_taken_over_volume_is_unmounted_and_closed_at_sigterm_with_no_file_lost(
    data_kills: Steps,
) -> None:
    facts = data_kills["sidecar restart"]
    assert facts["mappings_after_stop"] == []
    assert not any(source.startswith("/dev/mapper/") for source in facts["mounted_after_stop"])
    assert facts["fresh_ready"], facts["fresh_errors"]
    assert facts["missing"] == [] and facts["corrupt"] == []
