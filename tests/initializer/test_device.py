"""Reads of the device: every failure is one actionable line, an integrity failure says so."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from initializer.device import DeviceError, describe_read_failure, read_region


def os_error(number: int) -> OSError:
    return OSError(number, os.strerror(number))


@pytest.mark.parametrize("number", [errno.EILSEQ, errno.EBADMSG])
def test_a_failed_integrity_check_is_named_as_one_with_what_to_do(number: int) -> None:
    message = describe_read_failure(
        "/dev/csi0 (opened as /dev/mapper/x)", 1024, 1024, os_error(number)
    )
    assert message.startswith(
        "/dev/csi0 (opened as /dev/mapper/x): reading 1024 bytes at offset 1024"
    )
    assert "failed its integrity check" in message
    assert "changed outside this guest" in message
    assert "nothing was written" in message
    assert "restore it from a backup" in message
    # The C library's text for the errno means nothing here.
    assert os.strerror(number) not in message


def test_an_io_error_names_the_error_and_says_to_check_the_volume() -> None:
    message = describe_read_failure("/dev/csi0", 0, 4096, os_error(errno.EIO))
    assert message == (
        "/dev/csi0: reading 4096 bytes at offset 0 failed (Input/output error); nothing was "
        "written. Check the volume's health."
    )


def test_a_read_failing_its_integrity_check_is_a_device_error_naming_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "mapping.img"
    image.write_bytes(bytes(8192))

    def failing_read(fd: int, length: int, offset: int) -> bytes:
        raise os_error(errno.EILSEQ)

    monkeypatch.setattr(os, "pread", failing_read)
    with pytest.raises(DeviceError, match=r"^/dev/csi0 \(opened as .*\): .*integrity check"):
        read_region(image, 4096, 4096, name=f"/dev/csi0 (opened as {image})")
