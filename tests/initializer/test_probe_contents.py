"""What a device holds when its state record is damaged: a foreign device is refused by what
it holds (a partition table, a file system, data), one of ours by its damaged record."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from initializer.device import BlockDevice, read_region
from initializer.luks_header import METADATA_AREA_BYTES
from initializer.probe import DeviceNotBlank, Probe
from initializer.securepv import names_more_than_the_record, probe_contents
from initializer.state import RECORD_BYTES, RECORD_OFFSET, StateRecordDamaged
from tests.initializer.conftest import MiB, sparse_image

SIZE = 64 * MiB
# What a partition, a file system or a database keeps where our record would be.
FOREIGN_DATA = bytes(i % 255 + 1 for i in range(RECORD_BYTES))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_at(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as opened:
        opened.seek(offset)
        opened.write(data)


def probe_loop_device(image: Path, loop_device: Callable[..., str]) -> None:
    """probe_contents on ``image`` attached as a loop device; it must refuse it."""
    path = loop_device(image)
    device = BlockDevice(path=path, size_bytes=SIZE, read_only=False, sys_name=Path(path).name)
    probe_contents(device, read_region(path, 0, METADATA_AREA_BYTES))


def test_a_gpt_disk_is_refused_as_one_not_as_a_damaged_record(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "gpt.img", SIZE)
    subprocess.run(
        ["sfdisk", "--quiet", str(image)],
        input=b"label: gpt\nstart=2048, type=L\n",
        check=True,
    )
    write_at(image, RECORD_OFFSET, FOREIGN_DATA)
    before = sha256(image)
    with pytest.raises(DeviceNotBlank, match=r"found gpt partition table.*left untouched"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


def test_an_ext4_file_system_is_refused_as_one_not_as_a_damaged_record(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "ext4.img", SIZE)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    write_at(image, RECORD_OFFSET, FOREIGN_DATA)
    before = sha256(image)
    with pytest.raises(DeviceNotBlank, match=r"found ext4 file system.*left untouched"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


def test_raw_data_without_a_signature_is_refused_naming_where_it_starts(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "database.img", SIZE)
    write_at(image, 0, FOREIGN_DATA * (RECORD_OFFSET // RECORD_BYTES + 1))
    before = sha256(image)
    with pytest.raises(DeviceNotBlank, match=r"non-zero byte at offset 0\)"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


def test_a_luks1_volume_is_refused_as_one_not_as_a_damaged_record(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "luks1.img", SIZE)
    subprocess.run(
        [
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks1",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            "-",
            str(image),
        ],
        input=b"not a secret",
        check=True,
    )
    write_at(image, RECORD_OFFSET, FOREIGN_DATA)
    before = sha256(image)
    with pytest.raises(DeviceNotBlank, match="holds a LUKS1 volume"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


def test_our_volume_with_a_damaged_record_is_refused_for_its_record(
    tmp_path: Path, luks_image: Path, loop_device: Callable[..., str]
) -> None:
    image = tmp_path / "ours.img"
    shutil.copyfile(luks_image, image)
    write_at(image, RECORD_OFFSET, FOREIGN_DATA)
    before = sha256(image)
    with pytest.raises(StateRecordDamaged, match=f"state record \\(offset {RECORD_OFFSET}"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


def test_a_device_holding_nothing_but_a_damaged_record_is_refused_for_its_record(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "record-only.img", SIZE)
    write_at(image, RECORD_OFFSET, b"contrast-securepv state v1: formatteD\n")
    before = sha256(image)
    with pytest.raises(StateRecordDamaged, match="neither empty nor a record"):
        probe_loop_device(image, loop_device)
    assert sha256(image) == before


@pytest.mark.parametrize(
    ("probe", "more"),
    [
        (Probe({"PTTYPE": "gpt"}, False, 0), True),
        (Probe({}, True, None), True),
        (Probe({}, False, RECORD_OFFSET - 1), True),
        (Probe({}, False, RECORD_OFFSET), False),
        (Probe({}, False, RECORD_OFFSET + 4096), False),
        (Probe({}, False, None), False),
    ],
    ids=["signature", "ambivalent", "data-before-record", "record-first", "after-record", "none"],
)
def test_only_a_signature_or_data_before_the_record_explains_more_than_the_record(
    probe: Probe, more: bool
) -> None:
    assert names_more_than_the_record(probe) is more
