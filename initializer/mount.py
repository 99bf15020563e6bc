"""mount(2) and umount2(2) through libc: no mount binary, no /etc/fstab, no helpers."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from pathlib import Path

from initializer.errors import InitializerError

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(InitializerError):
    def __init__(self, message: str, errno_value: int):
        self.errno = errno_value
        super().__init__(message)


def mount(source: Path, target: Path, fstype: str, flags: int, options: str) -> None:
    if _libc.mount(
        os.fsencode(source), os.fsencode(target), fstype.encode(), flags, options.encode()
    ):
        err = ctypes.get_errno()
        raise MountError(
            f"mounting {source} ({fstype}) on {target} failed: {os.strerror(err)}", err
        )


def unmount(target: Path, *, detach: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if detach else 0):
        err = ctypes.get_errno()
        raise MountError(f"unmounting {target} failed: {os.strerror(err)}", err)


def is_busy(error: MountError) -> bool:
    return error.errno == errno.EBUSY


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def is_mounted_at(
    source: Path, target: Path, mountinfo: Path = Path("/proc/self/mountinfo")
) -> bool:
    """Whether the block device ``source`` is mounted at ``target`` in this mount namespace."""
    try:
        rdev = os.stat(source).st_rdev
    except FileNotFoundError:
        return False
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    where = os.path.realpath(target)
    for line in mountinfo.read_text().splitlines():
        # ID PARENT-ID MAJOR:MINOR ROOT MOUNT-POINT OPTIONS ... (proc(5))
        fields = line.split()
        if len(fields) > 4 and fields[2] == wanted and _unescape(fields[4]) == where:
            return True
    return False
