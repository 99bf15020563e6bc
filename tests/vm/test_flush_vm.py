"""Every state a power cut can leave on the disk during a first start and an application's
fsyncs, replayed from dm-log-writes' log of the real writes (tests/vm/flush_scenarios.py).
One boot; each test asserts one behaviour over all the replayed flush points."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.vm.boot import Steps, boot, sparse_disk
from tests.vm.flush_scenarios import FILES

pytestmark = pytest.mark.vm

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    directory = tmp_path_factory.mktemp("flush")
    disks = [
        sparse_disk(directory / "target.img", 96 * MiB),
        sparse_disk(directory / "log.img", 1024 * MiB),
        sparse_disk(directory / "replay.img", 96 * MiB),
        sparse_disk(directory / "cow.img", 256 * MiB),
    ]
    steps = boot(disks, "tests.vm.flush_scenarios")
    (directory / "steps.json").write_text(json.dumps(steps, indent=1))
    return steps


def flush_points(steps: Steps) -> list[dict[str, Any]]:
    return [facts for name, facts in steps.items() if name.startswith("flush ")]


def test_the_recorded_run_reached_done_and_stopped_cleanly(steps: Steps) -> None:
    recorded = steps["recorded"]
    assert recorded["ready"], recorded["errors"]
    assert recorded["status"] == 0


def test_the_log_holds_the_flushes_and_every_acknowledged_fsync(steps: Steps) -> None:
    log = steps["log"]
    assert log["flushes"] == len(flush_points(steps)) > 0
    assert ["done", *(f"acked-{n}" for n in range(1, FILES + 1))] == [
        mark for mark in log["marks"] if mark != "dm-log-writes-end"
    ]


def test_from_every_flush_point_a_fresh_start_reaches_done(steps: Steps) -> None:
    for facts in flush_points(steps):
        assert facts["ready"], facts
        assert facts["status"] == 0 and facts["mappings"] == []


def test_the_record_is_the_first_thing_made_durable_and_both_states_were_replayed(
    steps: Steps,
) -> None:
    # Nothing is flushed before the record "formatting": a blank device (the state before
    # any write) is not a flush point.
    points = flush_points(steps)
    assert points[0]["state_before"] == "formatting"
    assert {facts["state_before"] for facts in points} == {"formatting", "initialized"}


def test_an_unfinished_first_start_is_started_over_and_an_initialized_one_never(
    steps: Steps,
) -> None:
    for facts in flush_points(steps):
        if facts["state_before"] == "formatting":
            assert facts["resumed"] and facts["formatted"], facts
        if facts["state_before"] == "initialized":
            assert not facts["formatted"], facts


def test_every_file_whose_fsync_returned_before_a_flush_point_is_there(steps: Steps) -> None:
    points = flush_points(steps)
    for facts in points:
        assert facts["missing"] == [] and facts["corrupt"] == [], facts
    assert max(facts["acked"] for facts in points) == FILES
