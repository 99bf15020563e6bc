"""The blank-device probe reads the device's end itself: blkid reports "nothing found" when its
reads fail, so a read error there must come from our own read (VM test: an EIO region there)."""

from __future__ import annotations

from initializer.probe import tail_region

MiB = 1024 * 1024


def test_the_probe_reads_the_last_mib_that_libblkid_probes() -> None:
    assert tail_region(64 * MiB) == (63 * MiB, MiB)


def test_the_tail_read_is_clipped_to_a_small_device() -> None:
    assert tail_region(4096) == (0, 4096)
