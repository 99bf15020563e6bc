"""Deciding "blank": proven by libblkid finding nothing and the format region reading as zeros."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from initializer.probe import (
    Contents,
    DeviceNotBlank,
    Probe,
    classify,
    first_nonzero,
    parse_blkid_export,
    probe_device,
    probe_luks_magic,
)
from tests.initializer.conftest import MiB, sparse_image

NOTHING = Probe(tags={}, ambivalent=False, first_nonzero_offset=None)


def test_no_signature_and_all_zeros_is_blank() -> None:
    assert classify("/dev/x", NOTHING) is Contents.BLANK


def test_luks2_signature_is_opened_not_formatted() -> None:
    probe = Probe(
        tags={"TYPE": "crypto_LUKS", "VERSION": "2"}, ambivalent=False, first_nonzero_offset=None
    )
    assert classify("/dev/x", probe) is Contents.LUKS2


@pytest.mark.parametrize(
    ("probe", "named"),
    [
        (
            Probe({"TYPE": "ext4", "USAGE": "filesystem", "UUID": "u-1"}, False, None),
            "ext4 file system (uuid u-1)",
        ),
        (Probe({"PTTYPE": "gpt"}, False, None), "found gpt partition table"),
        (Probe({"TYPE": "crypto_LUKS", "VERSION": "1"}, False, None), "LUKS1 volume"),
        (Probe({"TYPE": "xfs"}, True, None), "several conflicting signatures"),
        (Probe({}, False, 4096), "non-zero byte at offset 4096"),
    ],
)
def test_anything_else_is_refused_naming_what_was_found(probe: Probe, named: str) -> None:
    with pytest.raises(DeviceNotBlank, match="untouched") as error:
        classify("/dev/csi0", probe)
    assert named in str(error.value)
    assert "/dev/csi0" in str(error.value)


def test_blkid_export_output_is_parsed_without_the_device_name() -> None:
    tags = parse_blkid_export("DEVNAME=/dev/vda\nUUID=abc\nTYPE=ext4\nUSAGE=filesystem\n")
    assert tags == {"UUID": "abc", "TYPE": "ext4", "USAGE": "filesystem"}


def test_first_nonzero_finds_the_offset() -> None:
    assert first_nonzero(bytes(10)) is None
    assert first_nonzero(bytes(7) + b"\x01" + bytes(3)) == 7


def test_sparse_loop_device_is_probed_blank(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(sparse_image(tmp_path / "blank.img", 64 * MiB))
    assert classify(device, probe_device(device, 64 * MiB)) is Contents.BLANK


def test_ext4_on_a_loop_device_is_found(tmp_path: Path, loop_device: Callable[..., str]) -> None:
    image = sparse_image(tmp_path / "ext4.img", 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = loop_device(image)
    probe = probe_device(device, 64 * MiB)
    assert probe.tags["TYPE"] == "ext4"


def test_data_without_signature_beyond_the_first_megabytes_is_found(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "data.img", 64 * MiB)
    with image.open("r+b") as data:
        data.seek(16 * MiB + 512)
        data.write(os.urandom(16))
    device = loop_device(image)
    assert probe_device(device, 64 * MiB).first_nonzero_offset == 16 * MiB + 512


def test_our_luks_header_on_a_loop_device_is_luks2(
    luks_image: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(luks_image, read_only=True)
    assert classify(device, probe_device(device, 64 * MiB)) is Contents.LUKS2


def test_luks_magic_is_recognised_with_its_version_without_libblkid() -> None:
    assert probe_luks_magic(b"LUKS\xba\xbe\x00\x02" + bytes(8)) == Probe(
        {"TYPE": "crypto_LUKS", "VERSION": "2"}, False, None
    )
    luks1 = probe_luks_magic(b"LUKS\xba\xbe\x00\x01" + bytes(8))
    assert luks1 is not None
    with pytest.raises(DeviceNotBlank, match="LUKS1 volume"):
        classify("/dev/x", luks1)


def test_no_luks_magic_needs_the_full_probe() -> None:
    assert probe_luks_magic(bytes(64)) is None
    assert probe_luks_magic(b"SKUL\xba\xbe\x00\x02") is None


def test_device_mapper_is_found_in_the_kernels_misc_list() -> None:
    from initializer.luks import device_mapper_listed

    assert device_mapper_listed(" 62 ppp\n236 device-mapper\n") is True
    assert device_mapper_listed(" 62 ppp\n227 mcelog\n") is False
    assert device_mapper_listed("") is False
