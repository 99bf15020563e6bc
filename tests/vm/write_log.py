"""Reading a dm-log-writes log: every write a device got, in the order it became durable.

The kernel's ``log-writes`` target (Documentation/admin-guide/device-mapper/log-writes.rst)
passes I/O to a device and records each completed write on a log device, together with
each flush and each mark a test sends (``dmsetup message NAME 0 mark TEXT``). Writes are
recorded only once a flush has made them durable, so replaying the log up to a flush entry
gives exactly what the device is guaranteed to hold if the power fails right after that
flush: the states a crash can leave behind, one per flush.

Log layout (little-endian): a superblock in the first block (magic, version, number of
entries, the device's logical block size), then one entry per block: its header (first
sector and number of sectors written, flags, data length), for a mark the mark's text
after the header in the same block, for a write the written data in the blocks that
follow. Sector numbers and counts are in units of the logical block size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = 0x6A736677736872
VERSION = 1
FLUSH = 1 << 0
FUA = 1 << 1
DISCARD = 1 << 2
MARK = 1 << 3
_SUPER = struct.Struct("<QQQI")
_ENTRY = struct.Struct("<QQQQ")
_ZERO_CHUNK = 4 * 1024 * 1024


class LogInvalid(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    index: int
    sector: int
    sectors: int
    flags: int
    mark: str | None
    data_offset: int  # where the written data starts in the log, in bytes

    @property
    def durable_point(self) -> bool:
        """Whether everything up to and including this entry is on stable storage."""
        return bool(self.flags & (FLUSH | FUA))


def read_entries(log: BinaryIO) -> tuple[int, list[Entry]]:
    """(block size, entries) of the log on ``log``."""
    magic, version, count, block = _SUPER.unpack(log.read(_SUPER.size))
    if magic != MAGIC or version != VERSION:
        raise LogInvalid(f"not a dm-log-writes log (magic {magic:#x}, version {version})")
    if block < 512 or block & (block - 1):
        raise LogInvalid(f"impossible block size {block}")
    entries, position = [], block
    for index in range(count):
        log.seek(position)
        header = log.read(block)
        if len(header) < block:
            raise LogInvalid(f"the log ends inside entry {index}")
        sector, sectors, flags, data_len = _ENTRY.unpack_from(header)
        mark = None
        if flags & MARK:
            mark = header[_ENTRY.size : _ENTRY.size + data_len].decode(errors="replace")
        position += block
        entries.append(Entry(index, sector, sectors, flags, mark, position))
        if not flags & (MARK | DISCARD):
            position += sectors * block
    return block, entries


def replay(log: BinaryIO, device: BinaryIO, entries: list[Entry], block: int) -> Iterator[Entry]:
    """Apply ``entries`` to ``device`` in order, yielding each after it is applied.

    Discards are applied as zeros (what the devices here return for a discarded range).
    """
    for entry in entries:
        if entry.flags & MARK or not entry.sectors:
            yield entry
            continue
        device.seek(entry.sector * block)
        if entry.flags & DISCARD:
            remaining = entry.sectors * block
            while remaining:
                chunk = min(remaining, _ZERO_CHUNK)
                device.write(bytes(chunk))
                remaining -= chunk
        else:
            log.seek(entry.data_offset)
            device.write(log.read(entry.sectors * block))
        yield entry
