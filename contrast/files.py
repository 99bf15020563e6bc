"""The one atomic-write helper: a crash leaves either the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _durable_temporary(path: Path, data: bytes, mode: int) -> Iterator[str]:
    """A fsynced temporary file beside ``path`` holding ``data``; removed unless renamed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), mode)
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        yield tmp_name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename and directory fsync."""
    with _durable_temporary(path, data, mode) as tmp_name:
        os.replace(tmp_name, path)
    fsync_directory(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data``, durably and all at once, unless it already exists.

    Returns False (and changes nothing) if ``path`` exists, also when another process
    creates it concurrently: the file appears by link(2), which never replaces.
    """
    with _durable_temporary(path, data, mode) as tmp_name:
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False
    fsync_directory(path.parent)
    return True
