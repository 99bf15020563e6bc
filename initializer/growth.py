"""Volume growth: a device that grew gets its ext4 grown online; one that shrank is refused.

Kubernetes expands a PersistentVolumeClaim by growing the block device; it never tells the
pod. The LUKS2 data segment's size is "dynamic", so ``cryptsetup open`` already maps
everything from the data offset to the device's end: after an expansion the mapping has the
new size and only ext4 lags behind. So, on every start, after the mapping is open:

- before mounting, the ext4 size (block count x block size, from the superblock) is compared
  with the mapping's size. A file system larger than the mapping means the device shrank:
  ext4 would find its last blocks missing (reads beyond the device fail, writes are lost),
  so the volume is refused before it is mounted, and nothing is written;
- after mounting, a file system smaller than the mapping is grown online (resize2fs on the
  mounted file system, which asks the kernel to add the block groups) before ``/done``.

A mapping left open by an earlier Initializer keeps its old size, but it is closed at start
(``remove_stale_mapping``) and opened again, so it always spans the device as it is now.
A device that grows while the Initializer runs is grown at the next start.

With integrity protection the mapping's size is not the device's: cryptsetup sizes the
dm-integrity device from its superblock (``provided_data_sectors``), which the kernel
updates to the grown device only while it activates the mapping. So the first open after
a growth still has the old size; the Initializer sees the superblock now offering more and
opens the mapping once more (:func:`integrity_offers_more`). The new sectors were never
written and carry no valid tag, so every read of them fails: before resize2fs they are
written with zeros once, a step at a time (:func:`grow_integrity_in_steps`).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from contrast.log import event, step
from contrast.process import CommandError, require_binary, run
from initializer import faults, termination
from initializer.device import DeviceError, describe_read_failure, read_region
from initializer.errors import InitializerError

log = logging.getLogger("initializer")

E2FSPROGS_PACKAGE = "e2fsprogs"
RESIZE_TIMEOUT_SECONDS = 600.0

# The ext4 superblock: 1024 bytes at offset 1024 of the file system, little-endian fields
# (https://www.kernel.org/doc/html/latest/filesystems/ext4/globals.html#super-block).
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_BYTES = 1024
_BLOCKS_COUNT_LO = 0x04
_LOG_BLOCK_SIZE = 0x18
_MAGIC = 0x38
_FEATURE_INCOMPAT = 0x60
_BLOCKS_COUNT_HI = 0x150
_EXT4_MAGIC = 0xEF53
_INCOMPAT_64BIT = 0x80
# Block sizes from 1 KiB (log 0) to 64 KiB (log 6), the largest the kernel mounts.
_MAX_LOG_BLOCK_SIZE = 6

# dm-integrity's superblock, at the start of the LUKS2 data segment of a volume with
# integrity protection (the kernel's drivers/md/dm-integrity.c, struct superblock).
DM_INTEGRITY_MAGIC = b"integrt\0"
_PROVIDED_DATA_SECTORS = 16
DIRECT_READ_BYTES = 4096  # the superblock's first sector, read as one 4 KiB block
INTEGRITY_TAG_BYTES = 32  # hmac-sha256, per 4 KiB sector
ZERO_CHUNK_BYTES = 1024 * 1024
INTEGRITY_GROWTH_STEP = 1024 * 1024 * 1024
GROUP_BYTES = 128 * 1024 * 1024


class SuperblockInvalid(InitializerError):
    pass


class DeviceShrunk(InitializerError):
    pass


class GrowthFailed(InitializerError):
    pass


@dataclass(frozen=True)
class FileSystemSize:
    block_count: int
    block_size: int

    @property
    def size_bytes(self) -> int:
        return self.block_count * self.block_size


@dataclass(frozen=True)
class Sizes:
    """The file system's size against the mapping's, on one start."""

    device: str
    file_system: FileSystemSize
    mapping_bytes: int

    @property
    def needs_growth(self) -> bool:
        """Whether at least one more whole block fits: resize2fs grows by whole blocks."""
        return self.mapping_bytes // self.file_system.block_size > self.file_system.block_count


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def parse_ext4_size(superblock: bytes) -> FileSystemSize:
    """The size ext4 believes it has, from the 1024-byte superblock. Raises SuperblockInvalid."""
    if len(superblock) < SUPERBLOCK_BYTES:
        raise SuperblockInvalid(
            f"the ext4 superblock is {len(superblock)} bytes, expected {SUPERBLOCK_BYTES}"
        )
    magic = int.from_bytes(superblock[_MAGIC : _MAGIC + 2], "little")
    if magic != _EXT4_MAGIC:
        raise SuperblockInvalid(f"no ext4 superblock (magic {magic:#06x}, expected 0xef53)")
    log_block_size = _u32(superblock, _LOG_BLOCK_SIZE)
    if log_block_size > _MAX_LOG_BLOCK_SIZE:
        raise SuperblockInvalid(
            f"the ext4 superblock gives an impossible block size (2^{log_block_size} KiB)"
        )
    block_count = _u32(superblock, _BLOCKS_COUNT_LO)
    if _u32(superblock, _FEATURE_INCOMPAT) & _INCOMPAT_64BIT:
        block_count |= _u32(superblock, _BLOCKS_COUNT_HI) << 32
    if block_count == 0:
        raise SuperblockInvalid("the ext4 superblock gives a block count of 0")
    return FileSystemSize(block_count=block_count, block_size=1024 << log_block_size)


def compare_sizes(
    device: str, file_system: FileSystemSize, mapping_bytes: int, data_offset: int
) -> Sizes:
    """Whether the volume can be mounted as it is or after growing; refuse a shrunk device.

    ``data_offset`` is where the encrypted data starts on the device (the LUKS2 header area
    before it), so the device size the file system needs is ``data_offset`` bytes more than
    the file system itself.
    """
    if file_system.size_bytes > mapping_bytes:
        required = file_system.size_bytes + data_offset
        raise DeviceShrunk(
            f"{device} is smaller than the volume on it: its ext4 file system is "
            f"{file_system.size_bytes} bytes, but the encrypted data area now holds only "
            f"{mapping_bytes} bytes (the device shrank). Shrinking a secure PV is not "
            f"supported; the volume was not mounted and the device was not changed. Restore "
            f"the device to at least {required} bytes (the file system plus the "
            f"{data_offset}-byte LUKS2 header area), then start again."
        )
    return Sizes(device=device, file_system=file_system, mapping_bytes=mapping_bytes)


def read_superblock(device: str, mapping: Path) -> bytes:
    """The file system's superblock, read through the opened mapping of ``device``."""
    return read_region(
        mapping, SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES, name=f"{device} (opened as {mapping})"
    )


def read_file_system_size(device: str, mapping: Path) -> FileSystemSize:
    superblock = read_superblock(device, mapping)
    try:
        return parse_ext4_size(superblock)
    except SuperblockInvalid as exc:
        raise SuperblockInvalid(
            f"{device} (opened as {mapping}): {exc}. The volume was not mounted; check it "
            f"with 'fsck.ext4 -n {mapping}'."
        ) from None


def mapping_size(mapping: Path) -> int:
    """The size of the opened mapping in bytes (seeking to the end of a block device)."""
    fd = os.open(mapping, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def parse_integrity_provided_bytes(superblock: bytes) -> int | None:
    """The bytes of data a dm-integrity superblock says its device provides, or None if
    ``superblock`` is not one."""
    if superblock[: len(DM_INTEGRITY_MAGIC)] != DM_INTEGRITY_MAGIC:
        return None
    field = superblock[_PROVIDED_DATA_SECTORS : _PROVIDED_DATA_SECTORS + 8]
    return int.from_bytes(field, "little") * 512 if len(field) == 8 else None


def integrity_provided_bytes(device: str, data_offset: int) -> int | None:
    """What dm-integrity's superblock at the data offset says the device provides.

    Read with O_DIRECT: the kernel writes the superblock while it activates the mapping,
    past the page cache, which may still hold the copy an earlier start read. The superblock
    is the storage provider's to change: the figure only decides whether to open the mapping
    once more, which cryptsetup sizes from the same superblock anyway, and what a refusal
    says; the ext4 size check after the open does not depend on it.
    """
    return parse_integrity_provided_bytes(read_direct(device, data_offset, DIRECT_READ_BYTES))


def read_direct(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (both multiples of 4 KiB), past the page cache."""
    buffer = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT needs
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            with memoryview(buffer) as view:
                count = os.preadv(fd, [view], offset)
        finally:
            os.close(fd)
        return bytes(buffer[:count])
    except OSError as exc:
        raise DeviceError(describe_read_failure(path, offset, length, exc)) from None
    finally:
        buffer.close()


def integrity_offers_more(device: str, data_offset: int, mapping: Path) -> bool:
    """Whether the dm-integrity device, just activated, now offers more than its mapping
    (the device grew: activation updated the superblock, but not the mapping's size)."""
    provided = integrity_provided_bytes(device, data_offset)
    return provided is not None and provided > mapping_size(mapping)


def check_integrity_area_fits(device: str, data_offset: int, device_bytes: int) -> None:
    """After ``cryptsetup open`` failed on a volume with integrity protection: refuse it as
    shrunk if its dm-integrity area no longer fits on the device (dm-integrity then refuses
    the mapping with EINVAL); otherwise let the open's own error stand."""
    provided = integrity_provided_bytes(device, data_offset)
    if provided is None:
        return
    # The data and one 32-byte tag per 4 KiB sector; dm-integrity's journal comes on top.
    needed = data_offset + provided + provided // 4096 * INTEGRITY_TAG_BYTES
    if needed > device_bytes:
        raise DeviceShrunk(
            f"{device} is smaller than the volume on it: its dm-integrity area provides "
            f"{provided} bytes of data, which with their integrity tags need more than the "
            f"{device_bytes} bytes the device now has (the device shrank, or dm-integrity's "
            "superblock was changed). Shrinking a secure PV is not supported; the volume was "
            "not opened and the device was not changed. Restore the device to its earlier "
            f"size (more than {needed} bytes: dm-integrity's journal comes on top), then "
            "start again."
        )


def check_volume_fits(device: str, mapping: Path, data_offset: int) -> Sizes:
    """Before mounting: the file system's and the mapping's sizes; raises DeviceShrunk."""
    sizes = compare_sizes(
        device, read_file_system_size(device, mapping), mapping_size(mapping), data_offset
    )
    event(
        log,
        "volume-size",
        device=device,
        file_system_bytes=sizes.file_system.size_bytes,
        mapping_bytes=sizes.mapping_bytes,
        grow=sizes.needs_growth,
    )
    return sizes


def grow_integrity_in_steps(
    sizes: Sizes,
    mapping: Path,
    resize2fs: str,
    step_bytes: int = INTEGRITY_GROWTH_STEP,
    group_bytes: int = GROUP_BYTES,
) -> None:
    """Grow a volume with integrity protection: zero a step of the new sectors, grow ext4 over
    it, and again, up to the mapping's end.

    The sectors a growth adds were never written, so they carry no valid integrity tag and
    every read of them fails, and the kernel's online resize reads some of them (the new last
    block, descriptor and bitmap blocks of the new groups): the first try in the microVM left
    the file system half grown and read-only. Written once, they read as zeros, as on a
    volume without integrity. Each step starts at the file system's end as the mounted kernel
    sees it (its live superblock, which includes a growth the journal replayed at mount), so
    nothing written holds data. The cost is proportional to the growth, not to the device;
    and since ext4's block count records each finished step, a start killed in the middle
    (say, by a startup probe running out) loses at most one step's work.
    """
    if step_bytes < group_bytes:
        raise ValueError(f"a growth step of {step_bytes} bytes is less than a block group")
    name = f"{sizes.device} (opened as {mapping})"
    end = sizes.mapping_bytes // sizes.file_system.block_size * sizes.file_system.block_size
    live = read_file_system_size(sizes.device, mapping).size_bytes
    while live < end:
        # Steps end on block-group boundaries (128 MiB with 4 KiB blocks), so no step leaves
        # a last group too small for its own metadata.
        target = min((live + step_bytes) // group_bytes * group_bytes, end)
        with step(
            log, "integrity-prepare-growth", device=sizes.device, offset=live, bytes=target - live
        ):
            zero_range(mapping, live, target, name)
        resize(resize2fs, mapping, sizes, f"{target // 1024}K")
        grown = read_file_system_size(sizes.device, mapping).size_bytes
        if grown <= live:  # resize2fs found nothing it could add
            return
        live = grown


def resize(resize2fs: str, mapping: Path, sizes: Sizes, size: str | None = None) -> None:
    """resize2fs on the mounted file system (online: EXT4_IOC_RESIZE_FS), to ``size`` or, by
    default, to the mapping's end."""
    try:
        with faults.during("grow-file-system"):
            run(
                [resize2fs, str(mapping), *([size] if size else [])],
                timeout=RESIZE_TIMEOUT_SECONDS,
            )
    except CommandError as exc:
        raise GrowthFailed(
            f"{sizes.device}: the device grew, but growing its ext4 file system online "
            f"from {sizes.file_system.size_bytes} to {sizes.mapping_bytes} bytes failed: "
            f"{exc}. The workload was not started; look for ext4 errors in the kernel log "
            "(dmesg), then start again (the next start retries the growth)."
        ) from None


def zero_range(path: Path, start: int, end: int, name: str) -> None:
    """Write zeros from ``start`` to ``end`` (both multiples of 4 KiB) with O_DIRECT, then
    flush: nothing goes through the page cache, whose dirty pages the container's memory
    limit would have to hold."""
    buffer = mmap.mmap(-1, ZERO_CHUNK_BYTES)  # page-aligned and zero-filled, as O_DIRECT needs
    view = memoryview(buffer)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            position = start
            while position < end:
                termination.check()
                written = os.pwrite(fd, view[: min(ZERO_CHUNK_BYTES, end - position)], position)
                if written <= 0:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                position += written
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DeviceError(
            f"{name}: writing zeros from offset {start} to {end} failed ({exc.strerror}). "
            "Nothing beyond the file system was in use; check the volume's health, then start "
            "again (the next start writes the range again)."
        ) from None
    finally:
        view.release()
        buffer.close()


def grow_file_system(
    sizes: Sizes, mapping: Path, mount_point: Path, *, integrity: bool = False
) -> None:
    """After mounting: grow ext4 online to fill the mapping, if the device grew."""
    if not sizes.needs_growth:
        return
    resize2fs = require_binary("resize2fs", E2FSPROGS_PACKAGE)
    with step(
        log,
        "grow-file-system",
        device=sizes.device,
        mount_point=mount_point,
        old_bytes=sizes.file_system.size_bytes,
        mapping_bytes=sizes.mapping_bytes,
    ) as fields:
        if integrity:
            grow_integrity_in_steps(sizes, mapping, resize2fs)
        else:
            resize(resize2fs, mapping, sizes)
        fields["new_bytes"] = read_file_system_size(sizes.device, mapping).size_bytes
