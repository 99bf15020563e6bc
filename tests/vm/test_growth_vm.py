"""In a microVM, one boot (tests/vm/growth_scenarios.py): a volume grown from 1 GiB to 2 GiB
between two starts, a device cut below its file system, and devices that return I/O errors
while the Initializer probes or opens them. Each test asserts one behaviour."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from initializer.luks import LuksLayout
from tests.vm.boot import Steps, boot, sparse_disk

pytestmark = pytest.mark.vm

MiB = 1024 * 1024
GiB = 1024 * MiB
DATA_OFFSET = LuksLayout.DATA_OFFSET_BYTES


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    directory = tmp_path_factory.mktemp("growth")
    grow = sparse_disk(directory / "grow.img", 3 * GiB)
    blank = sparse_disk(directory / "blank.img", 64 * MiB)
    formatted = sparse_disk(directory / "formatted.img", 64 * MiB)
    integrity_grow = sparse_disk(directory / "integrity-grow.img", 1 * GiB)
    steps = boot([grow, blank, formatted, integrity_grow], "tests.vm.growth_scenarios")
    # Kept beside the disk images (pytest keeps the last runs' directories) for the figures.
    (directory / "steps.json").write_text(json.dumps(steps, indent=1))
    return steps


def events(output: str, name: str) -> list[dict[str, str]]:
    """The fields of each logfmt line with ``event=name``."""
    found = []
    for line in output.splitlines():
        fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line))
        if fields.get("event") == name:
            found.append(fields)
    return found


def test_first_start_creates_a_file_system_filling_the_1_gib_device(steps: Steps) -> None:
    first = steps["grow-first-start"]
    assert first["ready_seconds"] is not None, first["output"]
    assert not events(first["output"], "grow-file-system")
    (size,) = events(first["output"], "volume-size")
    assert int(size["file_system_bytes"]) == 1 * GiB - DATA_OFFSET
    assert int(size["mapping_bytes"]) == 1 * GiB - DATA_OFFSET


def test_a_grown_device_gets_its_file_system_grown_online_before_done(steps: Steps) -> None:
    grown = steps["grow-grown-start"]
    assert grown["ready_seconds"] is not None, grown["output"]
    (grow,) = events(grown["output"], "grow-file-system")
    assert grow["status"] == "ok"
    assert int(grow["old_bytes"]) == 1 * GiB - DATA_OFFSET
    assert int(grow["new_bytes"]) == 2 * GiB - DATA_OFFSET
    assert float(grow["duration_ms"]) > 0
    lines = grown["output"].splitlines()
    order = [
        i
        for i, line in enumerate(lines)
        for e in ("mount", "grow-file-system", "done")
        if f"event={e} " in line and "status=ok" in line
    ]
    assert order == sorted(order) and len(order) == 3


def test_the_grown_volume_shows_the_new_size_inside_the_mount(steps: Steps) -> None:
    before = steps["grow-first-start"]["size_bytes"]
    after = steps["grow-grown-start"]["size_bytes"]
    # statvfs counts the blocks left after ext4's own metadata: about double, not exact.
    assert after > before + 900 * MiB
    assert after < 2 * GiB


def test_the_grown_volume_keeps_the_data_written_before(steps: Steps) -> None:
    assert steps["grow-grown-start"]["data_sha256"] == steps["grow-first-start"]["data_sha256"]


def test_a_volume_already_filling_its_device_is_not_grown_again(steps: Steps) -> None:
    again = steps["grow-same-size-start"]
    assert again["ready_seconds"] is not None, again["output"]
    assert not events(again["output"], "grow-file-system")
    assert again["data_sha256"] == steps["grow-first-start"]["data_sha256"]


def test_a_device_cut_below_its_file_system_is_refused_naming_both_sizes(steps: Steps) -> None:
    shrunk = steps["grow-shrunk-start"]
    assert shrunk["became_ready"] is False
    assert shrunk["status"] == 1
    (error,) = shrunk["errors"]
    assert "/dev/mapper/grow" in error
    assert f"ext4 file system is {2 * GiB - DATA_OFFSET} bytes" in error
    assert f"holds only {3 * GiB // 2 - DATA_OFFSET} bytes" in error
    assert f"Restore the device to at least {2 * GiB} bytes" in error
    assert "not supported" in error


def test_a_shrunk_device_is_left_unchanged_unmounted_and_without_done(steps: Steps) -> None:
    shrunk = steps["grow-shrunk-start"]
    # Not one sector written or discarded, on the device or the disk under it.
    assert shrunk["writes_after"] == shrunk["writes_before"]
    assert shrunk["header_unchanged"] is True
    assert "/dev/mapper/securepv-grow" not in shrunk["mounted"]
    assert shrunk["done_exists"] is False
    assert shrunk["mappings"] == []


def test_a_device_restored_to_its_size_opens_again_with_its_data(steps: Steps) -> None:
    restored = steps["grow-restored-start"]
    assert restored["ready_seconds"] is not None, restored["output"]
    assert restored["data_sha256"] == steps["grow-first-start"]["data_sha256"]


def assert_reported_not_formatted(facts: dict[str, Any]) -> None:
    assert facts["became_ready"] is False
    assert facts["status"] == 1
    assert facts["traceback"] is False, facts["output"]
    (error,) = facts["errors"]
    assert facts["device"] in error
    assert "Input/output error" in error
    assert facts["unchanged"] is True
    assert facts["writes_after"] == facts["writes_before"]
    assert facts["mappings"] == []
    assert facts["done_exists"] is False


@pytest.mark.parametrize("case", ["blank-header", "blank-zero-region", "blank-tail"])
def test_a_blank_device_with_read_errors_is_reported_and_never_formatted(
    steps: Steps, case: str
) -> None:
    facts = steps[case]
    assert steps["blank-disk"]["all_zero"] is True
    assert_reported_not_formatted(facts)
    assert "event=luks-format" not in facts["output"]


def test_blkid_alone_takes_an_unreadable_device_end_for_blank(steps: Steps) -> None:
    # Why the probe reads the device's end itself: blkid exits 2, "nothing found".
    assert steps["blank-tail"]["blkid_status"] == 2


@pytest.mark.parametrize("case", ["metadata", "keyslot", "superblock"])
def test_a_formatted_device_with_read_errors_is_reported_and_left_unchanged(
    steps: Steps, case: str
) -> None:
    assert steps["formatted"]["ready_seconds"] is not None, steps["formatted"]["output"]
    facts = steps[case]
    assert_reported_not_formatted(facts)
    assert "event=luks-format" not in facts["output"]
    assert "event=mkfs" not in facts["output"]


def test_the_formatted_device_still_opens_once_it_reads_again(steps: Steps) -> None:
    reopen = steps["formatted-reopen"]
    assert reopen["ready_seconds"] is not None, reopen["output"]
    assert "event=mkfs" not in reopen["output"]


# With integrity protection: 512 MiB -> 1 GiB, shrunk to 384 MiB, restored.
def test_a_temporary_device_left_by_a_killed_format_is_removed_before_formatting(
    steps: Steps,
) -> None:
    first = steps["igrow-first-start"]
    assert first["ready_seconds"] is not None, first["output"]
    assert not first["temporary_left"]
    (stale,) = events(first["output"], "stale-mapping")
    assert stale["mapping"] == "temporary-cryptsetup-4242"


def test_an_integrity_volume_is_grown_on_the_first_start_after_the_device_grew(
    steps: Steps,
) -> None:
    first, grown = steps["igrow-first-start"], steps["igrow-grown-start"]
    assert grown["ready_seconds"] is not None, grown["output"]
    assert events(grown["output"], "integrity-device-grew")
    (prepare,) = events(grown["output"], "integrity-prepare-growth")
    assert prepare["status"] == "ok" and int(prepare["bytes"]) > 400 * MiB
    (grow,) = events(grown["output"], "grow-file-system")
    assert grow["status"] == "ok"
    assert int(grow["new_bytes"]) > int(grow["old_bytes"]) + 400 * MiB
    assert grown["size_bytes"] > first["size_bytes"] + 400 * MiB
    assert grown["data_sha256"] == first["data_sha256"]
    assert grown["stop_status"] == 0


def test_the_grown_integrity_volume_opens_at_its_new_size_without_growing_again(
    steps: Steps,
) -> None:
    grown, again = steps["igrow-grown-start"], steps["igrow-same-size-start"]
    assert again["ready_seconds"] is not None, again["output"]
    assert not events(again["output"], "integrity-device-grew")
    assert not events(again["output"], "grow-file-system")
    assert again["size_bytes"] == grown["size_bytes"]
    assert again["data_sha256"] == grown["data_sha256"]


def test_a_shrunk_integrity_volume_is_refused_as_shrunk_and_nothing_is_written(
    steps: Steps,
) -> None:
    shrunk = steps["igrow-shrunk-start"]
    assert shrunk["status"] == 1 and not shrunk["became_ready"]
    (error,) = shrunk["errors"]
    assert "is smaller than the volume on it" in error and "dm-integrity" in error
    assert "not changed" in error
    assert shrunk["writes_after"] == shrunk["writes_before"]
    assert not shrunk["done_exists"] and shrunk["mappings"] == []


def test_the_restored_integrity_volume_opens_with_its_data(steps: Steps) -> None:
    restored = steps["igrow-restored-start"]
    assert restored["ready_seconds"] is not None, restored["output"]
    assert restored["data_sha256"] == steps["igrow-first-start"]["data_sha256"]
