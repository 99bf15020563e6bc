"""The state record: how a restarted Initializer recognises its own unfinished first start.

A first start writes several things (LUKS header, file system) and can die between or
inside any of them: a pod is killed, a node loses power. The record is the one place that
says how far it got. It is a single block in the gap the pinned layout leaves between the
keyslots area and the data (``LuksLayout.STATE_RECORD_OFFSET``), which neither cryptsetup
nor the file system ever writes.

The first start goes through it like this::

    probe: blank  ->  record "formatting", flushed          <- the first byte ever written
                  ->  header image made by cryptsetup in memory and checked (with
                      integrity, cryptsetup also formats dm-integrity on the device)
                  ->  header copied to the device, flushed
                  ->  open, mkfs, mapping flushed
                  ->  record "initialized", flushed
                  ->  mount, /done                          <- the first chance to write data

The argument, in two halves:

- *It never refuses its own unfinished work.* Every state a first start can leave behind,
  whatever moment it died, carries the record "formatting", because the record is written
  and flushed before anything else. On "formatting" the next start begins the first start
  again from the top: a new header, a new file system.
- *It never formats a device that holds application data.* Applications can only write
  after the mount, and the mount comes after the record says "initialized", which is never
  changed back. On "initialized" (or no record at all next to a header) the volume is
  opened, never formatted: a missing file system there is an error, not a reason to mkfs.

The record is shorter than one 512-byte sector and the rest of its block stays zero, so
rewriting it changes only bytes inside one sector, which devices write atomically: a
power cut leaves the old record or the new one, never a mix. Anything else in the block is
a damaged or forged record and the device is refused.

A hostile storage provider can write "formatting" onto a volume that holds data and so get
it formatted again. That destroys the data, which the provider could always do by
overwriting it, and reveals nothing: the new header gets a new random volume key.
"""

from __future__ import annotations

import enum

from initializer.device import read_region, write_durably
from initializer.errors import InitializerError
from initializer.luks import LuksLayout

RECORD_OFFSET = LuksLayout.STATE_RECORD_OFFSET
RECORD_BYTES = LuksLayout.STATE_RECORD_BYTES
_MAGIC = b"contrast-securepv state v1: "


class VolumeState(enum.Enum):
    NONE = "none"
    FORMATTING = "formatting"
    INITIALIZED = "initialized"


class StateRecordDamaged(InitializerError):
    pass


def encode(state: VolumeState) -> bytes:
    """The record block for ``state``: one text line, zero padding."""
    if state is VolumeState.NONE:
        return bytes(RECORD_BYTES)
    line = _MAGIC + str(state.value).encode() + b"\n"
    return line.ljust(RECORD_BYTES, b"\0")


_RECORDS = {encode(state): state for state in VolumeState}


def decode(device: str, block: bytes) -> VolumeState:
    """The state a record block holds; anything but an exact record is refused."""
    state = _RECORDS.get(bytes(block))
    if state is not None:
        return state
    first = next((index for index, byte in enumerate(bytes(block)) if byte), 0)
    shown = bytes(block[first : first + 64]).rstrip(b"\0")
    raise StateRecordDamaged(
        f"{device}: the Initializer's state record (offset {RECORD_OFFSET}, the block before "
        f"the data area) holds {shown!r} at offset {RECORD_OFFSET + first}, which is neither "
        "empty nor a record this Initializer "
        "writes: it was damaged or written by something else. The device was left untouched; "
        "restore it from a backup or give the pod a blank volume."
    )


def read_state(device: str) -> VolumeState:
    return decode(device, read_region(device, RECORD_OFFSET, RECORD_BYTES))


def write_state(device: str, state: VolumeState) -> None:
    """Write the record and flush it through every cache down to the device."""
    write_durably(device, [(RECORD_OFFSET, encode(state))])
