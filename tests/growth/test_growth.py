"""Volume growth decided from sizes: the ext4 superblock parsed from real mkfs.ext4 output,
the file system compared with the mapping, a shrunk device refused naming both sizes."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from initializer.device import DeviceError
from initializer.growth import (
    DM_INTEGRITY_MAGIC,
    SUPERBLOCK_BYTES,
    SUPERBLOCK_OFFSET,
    DeviceShrunk,
    FileSystemSize,
    GrowthFailed,
    SuperblockInvalid,
    check_integrity_area_fits,
    check_volume_fits,
    compare_sizes,
    grow_file_system,
    grow_integrity_in_steps,
    integrity_offers_more,
    integrity_provided_bytes,
    mapping_size,
    parse_ext4_size,
    read_file_system_size,
    zero_range,
)
from initializer.luks import LuksLayout

MiB = 1024 * 1024
GiB = 1024 * MiB
OFFSET = LuksLayout.DATA_OFFSET_BYTES


def make_ext4(path: Path, size: int, *options: str) -> Path:
    with path.open("wb") as image:
        image.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", *options, str(path)], check=True)
    return path


def dumpe2fs_size(path: Path) -> tuple[int, int]:
    """(block count, block size) as e2fsprogs itself reports them."""
    output = subprocess.run(
        ["dumpe2fs", "-h", str(path)], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    return int(fields["Block count"]), int(fields["Block size"])


def superblock_of(path: Path) -> bytes:
    with path.open("rb") as image:
        image.seek(SUPERBLOCK_OFFSET)
        return image.read(SUPERBLOCK_BYTES)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("size", "options"),
    [
        (64 * MiB, ()),
        (64 * MiB, ("-b", "1024")),
        (300 * MiB, ("-O", "64bit")),
        (300 * MiB, ("-O", "^64bit")),
        (5 * GiB, ("-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard")),
    ],
)
def test_size_from_a_real_superblock_matches_what_e2fsprogs_reports(
    tmp_path: Path, size: int, options: tuple[str, ...]
) -> None:
    image = make_ext4(tmp_path / "fs.img", size, *options)
    block_count, block_size = dumpe2fs_size(image)
    parsed = parse_ext4_size(superblock_of(image))
    assert parsed == FileSystemSize(block_count=block_count, block_size=block_size)
    assert parsed.size_bytes == block_count * block_size


@pytest.fixture(scope="module")
def superblock(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return superblock_of(make_ext4(tmp_path_factory.mktemp("sb") / "fs.img", 64 * MiB))


def with_field(superblock: bytes, offset: int, value: bytes) -> bytes:
    return superblock[:offset] + value + superblock[offset + len(value) :]


def test_the_64bit_feature_adds_the_high_word_of_the_block_count(superblock: bytes) -> None:
    incompat = int.from_bytes(superblock[0x60:0x64], "little") | 0x80
    wide = with_field(superblock, 0x60, incompat.to_bytes(4, "little"))
    wide = with_field(wide, 0x150, (3).to_bytes(4, "little"))
    low = parse_ext4_size(superblock).block_count
    assert parse_ext4_size(wide).block_count == (3 << 32) | low


def test_the_high_word_is_ignored_without_the_64bit_feature(superblock: bytes) -> None:
    incompat = int.from_bytes(superblock[0x60:0x64], "little") & ~0x80
    narrow = with_field(superblock, 0x60, incompat.to_bytes(4, "little"))
    narrow = with_field(narrow, 0x150, (3).to_bytes(4, "little"))
    assert parse_ext4_size(narrow).block_count == parse_ext4_size(superblock).block_count


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda sb: sb[:512], "512 bytes"),
        (lambda sb: with_field(sb, 0x38, b"\x54\xef"), "no ext4 superblock (magic 0xef54"),
        (lambda sb: bytes(len(sb)), "no ext4 superblock"),
        (lambda sb: with_field(sb, 0x18, (7).to_bytes(4, "little")), "impossible block size"),
        (lambda sb: with_field(sb, 0x04, bytes(4)), "block count of 0"),
    ],
)
def test_a_damaged_superblock_is_refused_naming_what_is_wrong(
    superblock: bytes, damage: Callable[[bytes], bytes], named: str
) -> None:
    with pytest.raises(SuperblockInvalid) as error:
        parse_ext4_size(damage(superblock))
    assert named in str(error.value)


FOUR_K = FileSystemSize(block_count=262144, block_size=4096)  # 1 GiB


def test_a_file_system_filling_the_mapping_needs_no_growth() -> None:
    assert not compare_sizes("/dev/csi0", FOUR_K, 1 * GiB, OFFSET).needs_growth


def test_a_mapping_larger_by_less_than_a_block_needs_no_growth() -> None:
    assert not compare_sizes("/dev/csi0", FOUR_K, 1 * GiB + 4095, OFFSET).needs_growth


def test_a_mapping_larger_by_a_whole_block_needs_growth() -> None:
    assert compare_sizes("/dev/csi0", FOUR_K, 1 * GiB + 4096, OFFSET).needs_growth


def test_a_file_system_larger_than_the_mapping_is_refused_naming_both_sizes() -> None:
    with pytest.raises(DeviceShrunk) as error:
        compare_sizes("/dev/csi0", FOUR_K, 768 * MiB, OFFSET)
    message = str(error.value)
    assert message.startswith("/dev/csi0 ")
    assert f"ext4 file system is {GiB} bytes" in message
    assert f"holds only {768 * MiB} bytes" in message
    assert f"Restore the device to at least {GiB + OFFSET} bytes" in message
    assert "not supported" in message
    assert "not changed" in message


def test_a_file_system_one_byte_too_large_is_refused() -> None:
    with pytest.raises(DeviceShrunk):
        compare_sizes("/dev/csi0", FOUR_K, GiB - 1, OFFSET)


def test_sizes_are_read_from_the_superblock_and_the_device_end(tmp_path: Path) -> None:
    image = make_ext4(tmp_path / "fs.img", 64 * MiB)
    with image.open("r+b") as grown:
        grown.truncate(96 * MiB)
    assert read_file_system_size("/dev/csi0", image) == parse_ext4_size(superblock_of(image))
    assert mapping_size(image) == 96 * MiB
    sizes = check_volume_fits("/dev/csi0", image, OFFSET)
    assert sizes.needs_growth
    assert sizes.file_system.size_bytes == 64 * MiB


def test_a_shrunk_volume_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    image = make_ext4(tmp_path / "fs.img", 64 * MiB)
    with image.open("r+b") as cut:
        cut.truncate(48 * MiB)
    before = sha256(image)
    with pytest.raises(DeviceShrunk, match=f"at least {64 * MiB + OFFSET} bytes"):
        check_volume_fits("/dev/csi0", image, OFFSET)
    assert sha256(image) == before


def test_an_unreadable_superblock_names_the_device_and_its_mapping(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(bytes(1500))
    with pytest.raises(DeviceError, match=f"^/dev/csi0 \\(opened as {tiny}\\): .*short read"):
        read_file_system_size("/dev/csi0", tiny)


def test_a_mapping_without_ext4_names_the_device_and_how_to_check_it(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    with pytest.raises(SuperblockInvalid, match=f"^/dev/csi0 \\(opened as {blank}\\).*fsck"):
        read_file_system_size("/dev/csi0", blank)


def test_a_volume_filling_its_mapping_is_left_alone(tmp_path: Path) -> None:
    sizes = compare_sizes("/dev/csi0", FOUR_K, 1 * GiB, OFFSET)
    # Nothing runs: not even the (here missing) mapping is looked at.
    grow_file_system(sizes, tmp_path / "no-mapping", tmp_path / "state")


def test_a_failed_online_growth_stops_the_start_naming_the_device_and_both_sizes(
    tmp_path: Path,
) -> None:
    sizes = compare_sizes("/dev/csi0", FOUR_K, 2 * GiB, OFFSET)
    with pytest.raises(GrowthFailed) as error:
        grow_file_system(sizes, tmp_path / "no-mapping", tmp_path / "state")
    message = str(error.value)
    assert message.startswith("/dev/csi0: the device grew")
    assert f"from {GiB} to {2 * GiB} bytes failed" in message
    assert "resize2fs" in message
    assert "next start retries" in message


# Integrity protection: dm-integrity's superblock at the data offset says how much data the
# device provides; it decides a second open after a growth and the shrink refusal.
def dm_integrity_image(path: Path, size: int, provided_sectors: int) -> Path:
    with path.open("wb") as image:
        image.truncate(size)
        image.seek(OFFSET)
        image.write(DM_INTEGRITY_MAGIC + bytes([1, 15, 32, 0]) + bytes(4))
        image.write(provided_sectors.to_bytes(8, "little"))
    return path


def test_the_data_dm_integrity_provides_is_read_from_its_superblock(tmp_path: Path) -> None:
    image = dm_integrity_image(tmp_path / "volume", 64 * MiB, 90_000)
    assert integrity_provided_bytes(str(image), OFFSET) == 90_000 * 512


def test_a_volume_without_dm_integrity_provides_nothing_to_compare(tmp_path: Path) -> None:
    image = make_ext4(tmp_path / "volume", 64 * MiB)
    assert integrity_provided_bytes(str(image), OFFSET) is None
    check_integrity_area_fits(str(image), OFFSET, 1)  # no refusal: the open's error stands


def test_a_dm_integrity_superblock_offering_more_than_the_mapping_means_the_device_grew(
    tmp_path: Path,
) -> None:
    image = dm_integrity_image(tmp_path / "volume", 64 * MiB, 2 * 90_000)
    mapping = tmp_path / "mapping"
    mapping.write_bytes(bytes(90_000 * 512))
    assert integrity_offers_more(str(image), OFFSET, mapping)
    mapping.write_bytes(bytes(2 * 90_000 * 512))
    assert not integrity_offers_more(str(image), OFFSET, mapping)


def test_a_dm_integrity_area_beyond_the_device_is_refused_as_shrunk(tmp_path: Path) -> None:
    provided = 100 * MiB
    image = dm_integrity_image(tmp_path / "volume", 64 * MiB, provided // 512)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    with pytest.raises(DeviceShrunk) as error:
        check_integrity_area_fits(str(image), OFFSET, 64 * MiB)
    message = str(error.value)
    assert message.startswith(f"{image} is smaller than the volume on it")
    needed = OFFSET + provided + provided // 4096 * 32
    assert f"provides {provided} bytes" in message and f"more than {needed} bytes" in message
    assert "not opened" in message and "not changed" in message
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_a_dm_integrity_area_that_fits_lets_the_open_error_stand(tmp_path: Path) -> None:
    image = dm_integrity_image(tmp_path / "volume", 256 * MiB, 100 * MiB // 512)
    check_integrity_area_fits(str(image), OFFSET, 256 * MiB)


def grown_image(tmp_path: Path, fs_bytes: int, total_bytes: int) -> Path:
    """ext4 of ``fs_bytes`` and, after it, never-written sectors (0xaa) up to ``total_bytes``."""
    image = make_ext4(tmp_path / "volume", fs_bytes, "-b", "4096")
    with image.open("ab") as out:
        out.write(b"\xaa" * (total_bytes - fs_bytes))
    return image


def test_an_integrity_growth_zeroes_the_new_sectors_and_grows_in_steps(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    image = grown_image(tmp_path, 64 * MiB, 160 * MiB)
    mapping = loop_device(image)
    sizes = check_volume_fits(mapping, Path(mapping), 0)
    # resize2fs grows the unmounted image offline here; in a pod it grows the mounted one.
    grow_integrity_in_steps(sizes, Path(mapping), "resize2fs", 32 * MiB, 32 * MiB)
    assert read_file_system_size(mapping, Path(mapping)).size_bytes == 160 * MiB
    assert b"\xaa" not in image.read_bytes()[64 * MiB :]
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)


def test_zeroing_starts_at_the_live_file_system_end_not_at_the_size_seen_before_mount(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    # The size read before mounting can be older than the live one (a growth the journal
    # replays at mount): what lies between the two is file system, and must stay.
    image = grown_image(tmp_path, 64 * MiB, 160 * MiB)
    mapping = loop_device(image)
    subprocess.run(["resize2fs", mapping, "96M"], check=True, capture_output=True)
    before = image.read_bytes()
    stale = compare_sizes(mapping, FileSystemSize(64 * MiB // 4096, 4096), 160 * MiB, 0)
    no_resize = tmp_path / "resize2fs-that-does-nothing"
    no_resize.write_text("#!/bin/sh\nexit 0\n")
    no_resize.chmod(0o755)
    grow_integrity_in_steps(stale, Path(mapping), str(no_resize), 32 * MiB, 32 * MiB)
    after = image.read_bytes()
    assert after[: 96 * MiB] == before[: 96 * MiB]
    assert after[96 * MiB : 128 * MiB] == bytes(32 * MiB)  # one step, then nothing grew
    assert after[128 * MiB :] == before[128 * MiB :]


def test_a_failed_zeroing_names_the_device_and_the_range(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as error:
        zero_range(tmp_path / "missing", 4096, 8192, name="/dev/csi0 (opened as x)")
    message = str(error.value)
    assert message.startswith("/dev/csi0 (opened as x): writing zeros from offset 4096 to 8192")
    assert "start again" in message
