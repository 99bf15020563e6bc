"""Integrity protection end to end in a microVM: the real dm-integrity and dm-crypt, the
Initializer run as a container would.

Two boots with the same disks (tests/integrity/scenarios.py). Between them the host, playing
the storage provider, flips one byte of a file's data in the disk images: the file's
physical block comes from ``filefrag`` in the first boot, its stored bytes from the device
below dm-crypt, and the host finds exactly those bytes in the image.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from initializer import luks
from tests.vm.boot import Steps, boot, sparse_disk

pytestmark = pytest.mark.vm

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 4096
# Inside the middle block, away from its edges.
FLIPPED_BYTE = 1000


def occurrences(image: Path, needle: bytes) -> list[int]:
    """Offsets where ``needle`` is stored, 512-byte aligned, reading only the data extents."""
    found = []
    with image.open("rb") as disk:
        fd = disk.fileno()
        end = os.fstat(fd).st_size
        position = 0
        while position < end:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            data = os.pread(fd, stop - start, start)
            index = data.find(needle)
            while index >= 0:
                if (start + index) % 512 == 0:
                    found.append(start + index)
                index = data.find(needle, index + 1)
            position = stop
    return found


def flip_byte(image: Path, offset: int) -> tuple[int, int]:
    with image.open("r+b") as disk:
        disk.seek(offset)
        old = disk.read(1)[0]
        disk.seek(offset)
        disk.write(bytes([old ^ 0x01]))
    return old, old ^ 0x01


@dataclass
class Run:
    before: Steps
    after: Steps
    flips: dict[str, dict[str, Any]]
    vector: bytes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("integrity")
    with_integrity = sparse_disk(directory / "with.img", 1 * GiB)
    without = sparse_disk(directory / "without.img", 256 * MiB)
    power = sparse_disk(directory / "power.img", 1 * GiB)
    vector = sparse_disk(directory / "vector.img", 64 * MiB)
    lazy = sparse_disk(directory / "lazy.img", 256 * MiB)
    disks = [with_integrity, without, power, vector, lazy]
    first = boot(disks, "tests.integrity.scenarios", "before")

    flips: dict[str, dict[str, Any]] = {}
    stored = bytes.fromhex(first["with-integrity"]["stored_block"])
    places = occurrences(with_integrity, stored)
    facts: dict[str, Any] = {"places": places}
    if places:
        # dm-integrity's journal may still hold a copy of the block; the data area comes
        # after the journal, so the last copy is the one reads are served from.
        facts["offset"] = places[-1] + FLIPPED_BYTE
        facts["old"], facts["new"] = flip_byte(with_integrity, facts["offset"])
    flips["with-integrity"] = facts

    stored = bytes.fromhex(first["without-integrity"]["stored_block"])
    offset = luks.LuksLayout.DATA_OFFSET_BYTES + first["without-integrity"]["blocks"][1] * BLOCK
    with without.open("rb") as disk:
        disk.seek(offset)
        located = disk.read(BLOCK) == stored
    flips["without-integrity"] = {"located": located, "places": occurrences(without, stored)}
    flip_byte(without, offset + FLIPPED_BYTE)

    with vector.open("rb") as disk:
        header = disk.read(2 * luks.LuksLayout.METADATA_BYTES)
    second = boot(disks, "tests.integrity.scenarios", "after")
    return Run(first, second, flips, header)


def test_first_start_with_integrity_on_a_blank_1_gib_disk_reaches_done(run: Run) -> None:
    first = run.before["with-integrity"]
    assert first["ready_seconds"] is not None, first["output"]
    assert "integrity=hmac-sha256" in first["output"]
    assert "event=integrity-prepare" in first["output"]
    # dm-crypt over dm-integrity, with hmac(sha256) tags.
    assert "authenc(hmac(sha256),xts(aes))" in first["dm_table"]
    assert "securepv-vda_dif" in first["dm_table"]
    assert first["stop_status"] == 0
    assert first["mappings"] == []


def test_the_flipped_byte_lies_in_the_files_stored_data(run: Run) -> None:
    # The stored block was found on the raw disk at a 512-byte boundary: the flip hit it.
    flip = run.flips["with-integrity"]
    assert flip["places"], "the file's stored block was not found in the disk image"
    assert flip["offset"] >= luks.LuksLayout.DATA_OFFSET_BYTES
    plain = run.flips["without-integrity"]
    assert plain["located"] is True
    assert len(plain["places"]) == 1


def test_with_integrity_a_flipped_byte_makes_that_blocks_read_fail_with_eio(run: Run) -> None:
    read = run.after["flipped-with-integrity"]
    assert read["ready_seconds"] is not None, read["output"]
    middle = read["blocks"][1]
    assert middle["ok"] is False
    assert middle["errno"] == errno.EIO, middle
    assert read["whole"] == {"ok": False, "errno": errno.EIO}


def test_with_integrity_the_untouched_blocks_of_the_file_still_read_correctly(run: Run) -> None:
    first, _, last = run.after["flipped-with-integrity"]["blocks"]
    assert first == {"ok": True, "intact": True, "differing_bytes": 0}
    assert last == {"ok": True, "intact": True, "differing_bytes": 0}


def test_without_integrity_a_flipped_byte_reads_back_as_wrong_data_without_error(
    run: Run,
) -> None:
    read = run.after["flipped-without-integrity"]
    assert read["ready_seconds"] is not None, read["output"]
    first, middle, last = read["blocks"]
    assert first["intact"] and last["intact"]
    # XTS: the flipped byte garbles its 16-byte AES block and nothing else, silently.
    assert middle["ok"] is True
    assert middle["intact"] is False
    assert 0 < middle["differing_bytes"] <= 16
    assert read["whole"] == {"ok": True, "intact": False}


def test_with_integrity_fsynced_data_survives_sigkill_and_power_loss(run: Run) -> None:
    assert run.before["power-loss"]["killed"] is True
    after = run.after["after-power-loss"]
    assert after["ready_seconds"] is not None, after["output"]
    assert after["synced_intact"] is True
    assert after["status"] == 0


def test_an_integrity_volume_is_refused_when_started_without_integrity(run: Run) -> None:
    result = run.after["integrity-volume-opened-without"]
    assert result["became_ready"] is False
    assert result["status"] == 1
    message = " ".join(result["errors"])
    assert "segment 0 has integrity protection 'hmac(sha256)'" in message
    assert "configured with integrity none" in message
    assert result["unchanged"] is True
    assert result["mappings"] == []


def test_a_volume_without_integrity_is_refused_when_started_with_it(run: Run) -> None:
    result = run.after["plain-volume-opened-with"]
    assert result["became_ready"] is False
    assert result["status"] == 1
    message = " ".join(result["errors"])
    assert "segment 0 has no integrity protection" in message
    assert "cannot downgrade the volume" in message
    assert result["unchanged"] is True
    assert result["mappings"] == []


def test_the_committed_header_vector_has_the_layout_cryptsetup_writes_today(run: Run) -> None:
    # tests/integrity/vectors/hmac-sha256-header.bin.gz is this header from an earlier run;
    # the check below passes for both, so the unit tests test what cryptsetup really writes.
    from initializer.luks_header import check_header

    checked = check_header("/dev/vdd", run.vector, 64 * MiB, luks.HMAC_SHA256)
    assert checked.data_offset == luks.LuksLayout.DATA_OFFSET_BYTES


def test_a_stale_dm_integrity_device_left_by_a_killed_open_is_removed(run: Run) -> None:
    stale = run.after["stale-integrity-device"]
    assert stale["left_behind"] == ["securepv-vdc_dif"]
    assert stale["ready_seconds"] is not None, stale["output"]
    assert "event=stale-mapping" in stale["output"]
    assert stale["status"] == 0
    assert stale["mappings"] == []


def test_why_the_journal_is_zeroed_a_lazy_ext4_journal_fails_recovery_after_power_loss(
    run: Run,
) -> None:
    # The counter-example to mkfs_options: with integrity and lazy_journal_init=1, jbd2's
    # recovery reads the never-written block after the last commit and the mount fails. The
    # Initializer's volume (zeroed journal) recovered from the same power cut above.
    before = run.before["lazy-journal-before"]
    assert before["mkfs_status"] == 0, before["stderr"]
    assert before["mount_status"] == 0, before["stderr"]
    after = run.after["lazy-journal-after"]
    assert after["open_status"] == 0
    assert after["mount_status"] != 0, after["kernel"]
