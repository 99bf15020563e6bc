"""Device sizes dm-crypt cannot map with 4 KiB sectors are refused before anything is written,
by the same rule cryptsetup applies, except with integrity, where dm-integrity rounds down."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from initializer import luks
from initializer.device import BlockDevice
from initializer.header_image import new_header_image
from initializer.securepv import VolumeError, check_device
from tests.initializer.conftest import MiB, sparse_image

OFFSET = luks.LuksLayout.DATA_OFFSET_BYTES


def device_of(size: int) -> BlockDevice:
    return BlockDevice(path="/dev/csi0", size_bytes=size, read_only=False, sys_name="csi0")


@pytest.mark.parametrize("size", [OFFSET + 16 * MiB, OFFSET + 1024 * MiB + 4096, 8 * 10**9])
def test_a_data_area_of_whole_4k_sectors_is_accepted(size: int) -> None:
    check_device(device_of(size))


@pytest.mark.parametrize("size", [64 * MiB + 512, 64 * MiB + 3584, 10**9, 1_500_000_000])
def test_a_data_area_of_partial_4k_sectors_is_refused_naming_sizes_and_what_to_do(
    size: int,
) -> None:
    with pytest.raises(VolumeError) as refused:
        check_device(device_of(size))
    message = str(refused.value)
    assert message.startswith(f"/dev/csi0 has {size} bytes: ")
    assert f"would be {size - OFFSET} bytes" in message
    assert "not a multiple of the 4096-byte encryption sector" in message
    assert "The device was not changed" in message
    assert "multiple of 4 KiB (in Mi or Gi: 1536Mi, not 1.5G)" in message


def test_with_integrity_any_size_is_accepted_because_dm_integrity_rounds_down() -> None:
    check_device(device_of(64 * MiB + 512), luks.HMAC_SHA256)


@pytest.mark.parametrize(
    ("extra", "aligned"), [(0, True), (4096, True), (512, False), (3584, False)]
)
def test_the_check_agrees_with_cryptsetup_luks_format(
    tmp_path: Path, loop_device: Callable[..., str], extra: int, aligned: bool
) -> None:
    size = 64 * MiB + extra
    device = loop_device(sparse_image(tmp_path / "device.img", size))
    refused_by_check = False
    try:
        check_device(device_of(size))
    except VolumeError:
        refused_by_check = True
    refused_by_cryptsetup = False
    try:
        with new_header_image(device, secrets.token_bytes(32)):
            pass
    except luks.CryptsetupFailed as failed:
        assert "not aligned to requested sector size" in str(failed)
        refused_by_cryptsetup = True
    assert refused_by_check is refused_by_cryptsetup is not aligned
