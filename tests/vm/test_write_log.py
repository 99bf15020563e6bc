"""The dm-log-writes log reader, on logs laid out as the kernel target writes them."""

from __future__ import annotations

import io
import struct

import pytest

from tests.vm.write_log import DISCARD, FLUSH, MAGIC, MARK, LogInvalid, read_entries, replay

BLOCK = 512


def log_of(*entries: tuple[int, int, int, bytes]) -> io.BytesIO:
    """A log: superblock, then per entry (sector, sectors, flags, payload) a header block and,
    for a write, its data blocks."""
    out = bytearray(struct.pack("<QQQI", MAGIC, 1, len(entries), BLOCK).ljust(BLOCK, b"\0"))
    for sector, sectors, flags, payload in entries:
        mark = payload if flags & MARK else b""
        header = struct.pack("<QQQQ", sector, sectors, flags, len(payload)) + mark
        out += header.ljust(BLOCK, b"\0")
        if not flags & (MARK | DISCARD):
            out += payload
    return io.BytesIO(bytes(out))


def test_writes_marks_and_flushes_are_read_in_order_and_replayed() -> None:
    log = log_of(
        (2, 1, 0, b"a" * BLOCK),
        (0, 0, FLUSH, b""),
        (0, 0, MARK, b"acked-1"),
        (1, 2, 0, b"b" * (2 * BLOCK)),
        (2, 1, DISCARD, b""),
    )
    block, entries = read_entries(log)
    assert block == BLOCK
    assert [entry.durable_point for entry in entries] == [False, True, False, False, False]
    assert entries[2].mark == "acked-1"
    device = io.BytesIO(b"\xff" * (4 * BLOCK))
    applied = []
    for entry in replay(log, device, entries, block):
        applied.append(entry.index)
        if entry.index == 1:  # at the flush: only the first write
            assert device.getvalue()[2 * BLOCK : 3 * BLOCK] == b"a" * BLOCK
            assert device.getvalue()[BLOCK : 2 * BLOCK] == b"\xff" * BLOCK
    assert applied == [0, 1, 2, 3, 4]
    assert device.getvalue() == b"\xff" * BLOCK + b"b" * BLOCK + bytes(BLOCK) + b"\xff" * BLOCK


def test_something_else_is_not_taken_for_a_log() -> None:
    with pytest.raises(LogInvalid):
        read_entries(io.BytesIO(bytes(BLOCK)))


def test_a_log_cut_short_is_refused() -> None:
    log = log_of((0, 1, 0, b"x" * BLOCK))
    cut = io.BytesIO(log.getvalue()[: BLOCK + 100])
    with pytest.raises(LogInvalid):
        read_entries(cut)
