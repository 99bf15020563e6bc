"""LUKS headers in memory: a new one made by cryptsetup, and checked copies to open with.

Neither is ever a file on disk: both are memfds that other processes (cryptsetup) reach
through ``/proc/PID/fd/N`` and that vanish with the Initializer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from initializer import luks
from initializer.device import write_durably
from initializer.luks import LuksLayout

COPY_CHUNK_BYTES = 1024 * 1024


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _path(fd: int) -> str:
    return f"/proc/{os.getpid()}/fd/{fd}"


@contextlib.contextmanager
def sealed_header_copy(pieces: list[tuple[int, bytes]], size: int) -> Iterator[str]:
    """An in-memory file of ``size`` bytes holding ``pieces`` (offset, data), zeros elsewhere.

    Sealed against writes, growth and shrinking before anyone else sees it: what cryptsetup
    reads is exactly what was checked. Yields a path other processes can open.
    """
    fd = os.memfd_create("luks-header", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        for offset, data in pieces:
            _write_all(fd, data, offset)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
        yield _path(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def new_header_image(
    device: str, key: bytes, integrity: luks.IntegrityProfile = luks.NO_INTEGRITY
) -> Iterator[int]:
    """A fresh LUKS2 header for ``device`` with the pinned layout, made by cryptsetup in
    memory; yields the memfd. Without integrity the device is only read (cryptsetup looks at
    its size); with integrity, dm-integrity's superblock is formatted on it."""
    fd = os.memfd_create("luks-new-header", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, LuksLayout.DATA_OFFSET_BYTES)
        luks.luks_format(device, _path(fd), key, integrity)
        yield fd
    finally:
        os.close(fd)


def read_image(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"the header image ended after {len(data)} of {length} bytes")
    return data


def copy_header_to_device(image_fd: int, device: str) -> None:
    """Write the image's header region (everything before the state record) to ``device``
    and flush it. Zeros are written too: whatever an earlier attempt left there goes."""
    end = LuksLayout.STATE_RECORD_OFFSET
    write_durably(
        device,
        (
            (offset, read_image(image_fd, offset, min(COPY_CHUNK_BYTES, end - offset)))
            for offset in range(0, end, COPY_CHUNK_BYTES)
        ),
    )
