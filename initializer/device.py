"""Waiting for the volume's block device and reading facts about it (pyudev, sysfs)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyudev

from contrast.retry import NotYet, poll_until
from initializer.errors import InitializerError


class DeviceError(InitializerError):
    pass


@dataclass(frozen=True)
class BlockDevice:
    path: str
    size_bytes: int
    read_only: bool
    sys_name: str


def _describe_file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a block device"


def _block_device_facts(path: str) -> BlockDevice:
    context = pyudev.Context()
    try:
        device = pyudev.Devices.from_device_file(context, path)
    except (pyudev.DeviceNotFoundError, ValueError, OSError) as exc:
        # The node exists but sysfs does not know it (yet): udev or the kernel is still busy.
        raise NotYet(f"{path}: the kernel does not list this block device yet ({exc})") from exc
    attributes = device.attributes
    try:
        sectors = attributes.asint("size")
        read_only = attributes.asint("ro") == 1
    except (KeyError, ValueError) as exc:
        raise NotYet(f"{path}: sysfs does not report its size yet") from exc
    return BlockDevice(
        path=path, size_bytes=sectors * 512, read_only=read_only, sys_name=device.sys_name
    )


def wait_for_block_device(
    path: str, timeout: float, between_attempts: Callable[[], None] = lambda: None
) -> BlockDevice:
    """Wait, at most ``timeout`` seconds, for ``path`` to exist and be a block device.

    A path that exists but is something else is an error at once: it will not turn into a
    block device by waiting. ``between_attempts`` runs before each attempt and may raise to
    stop the wait (the Initializer stops on SIGTERM).
    """

    def attempt() -> BlockDevice:
        between_attempts()
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError as exc:
            raise NotYet(f"{path} does not exist") from exc
        except OSError as exc:
            raise DeviceError(f"{path} cannot be examined: {exc.strerror}") from exc
        if not stat.S_ISBLK(mode):
            raise DeviceError(
                f"{path} is {_describe_file_type(mode)}, not a block device. Give the "
                "Initializer the raw device of a volume with volumeMode: Block "
                "(volumeDevices, not volumeMounts)."
            )
        return _block_device_facts(path)

    try:
        return poll_until(attempt, timeout=timeout, interval=0.2)
    except NotYet as exc:
        raise DeviceError(
            f"{path} did not become available as a block device within {timeout:g} s: "
            f"{exc}. Check that the pod's volumeDevices entry maps the PVC to this path."
        ) from None


# How a failed integrity check reaches a reader: dm-crypt's tag check (and dm-integrity's, and
# a disk's own T10/NVMe protection information) fails the bio with BLK_STS_PROTECTION, which
# the block layer reports as EILSEQ; EBADMSG is what dm-crypt's AEAD check and file system
# checksums (EFSBADCRC) use. A direct read gets that errno; a read through the page cache
# (ours) gets EIO for any failed read (mm/filemap.c, filemap_read_folio). The strerror texts
# ("Invalid or incomplete multibyte or wide character", "Bad message") say nothing a user
# can act on.
INTEGRITY_ERRNOS = frozenset({errno.EILSEQ, errno.EBADMSG})


def describe_read_failure(name: str, offset: int, length: int, error: OSError) -> str:
    """The one-line message for a read of ``name`` that failed with ``error``."""
    where = f"{name}: reading {length} bytes at offset {offset}"
    if error.errno in INTEGRITY_ERRNOS:
        return (
            f"{where} failed its integrity check ({errno.errorcode[error.errno]}): the data "
            "stored there does not match its integrity tag, so it was changed outside "
            "this guest, by the storage provider or a fault in the storage; nothing was "
            "written. Do not trust this volume: restore it from a backup, and ask the storage "
            "provider why the device was changed."
        )
    return f"{where} failed ({error.strerror}); nothing was written. Check the volume's health."


def read_region(path: str | Path, offset: int, length: int, *, name: str = "") -> bytes:
    """Read exactly ``length`` bytes at ``offset``; any failure is a DeviceError, never a guess.

    ``name`` is what the error calls ``path`` (default: the path itself), e.g. the volume's
    device for a read through its mapping.
    """
    try:
        return _read_exactly(path, offset, length, name or str(path))
    except OSError as exc:
        raise DeviceError(describe_read_failure(name or str(path), offset, length, exc)) from None


def write_durably(path: str | Path, pieces: Iterable[tuple[int, bytes]]) -> None:
    """Write ``pieces`` (offset, data) and return only once the device reports them stable
    (fsync on a block device flushes its volatile write cache too)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for offset, data in pieces:
                view = memoryview(data)
                position = offset
                while view:
                    written = os.pwrite(fd, view, position)
                    view = view[written:]
                    position += written
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DeviceError(
            f"{path}: writing failed ({exc.strerror}). Check the volume's health; the next "
            "start will pick up from the state the device was left in."
        ) from None


def _read_exactly(path: str | Path, offset: int, length: int, name: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        remaining = length
        position = offset
        while remaining:
            chunk = os.pread(fd, min(remaining, 4 * 1024 * 1024), position)
            if not chunk:
                raise DeviceError(
                    f"{name}: short read at offset {position} (device smaller than expected)"
                )
            chunks.append(chunk)
            remaining -= len(chunk)
            position += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
