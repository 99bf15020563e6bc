"""The secure-PV flow: workload secret -> LUKS key -> checked header -> mapping -> ext4 -> mount.

Each resource with a lifetime (the detached header copy, the dm-crypt mapping, the mount,
``/done``) is a context manager, so teardown on SIGTERM, and on any failure half-way, undoes
exactly what was done, in reverse order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from contrast.derivation import derive_luks_passphrase
from contrast.files import atomic_write
from contrast.log import event, step
from contrast.process import require_binary, run
from initializer import luks, mount, termination
from initializer.device import BlockDevice, read_region, wait_for_block_device
from initializer.errors import InitializerError, UsageError
from initializer.luks_header import (
    METADATA_AREA_BYTES,
    CheckedHeader,
    check_header,
)
from initializer.probe import Contents, classify, first_nonzero, probe_luks_magic
from initializer.probe import probe_device as probe_raw_device
from initializer.secret import read_workload_secret

log = logging.getLogger("initializer")

# A LUKS2 header with our layout plus the smallest ext4 worth having.
MIN_DEVICE_BYTES = luks.LuksLayout.DATA_OFFSET_BYTES + 16 * 1024 * 1024
# Raw ciphertext that mkfs would have written; all zeros there proves mkfs never ran.
UNFINISHED_CHECK_BYTES = 1024 * 1024
EXT4_SUPERBLOCK_OFFSET = 1024
EXT4_MAGIC_OFFSET = 0x38
EXT4_MAGIC = b"\x53\xef"
MOUNT_FLAGS = mount.MS_NOSUID | mount.MS_NODEV
MOUNT_OPTIONS = "errors=remount-ro"
MKFS_PACKAGE = "e2fsprogs"
MiB = 1024 * 1024
EXT4_BLOCK_BYTES = 4096
# With integrity the ext4 journal is zeroed at mkfs (see mkfs_options): a fixed size, so the
# first start costs the same on any device; smaller only on devices too small for it.
INTEGRITY_JOURNAL_MAX_MIB = 32
INTEGRITY_JOURNAL_MIN_MIB = 4
MKFS_TIMEOUT_SECONDS = 300.0
UNMOUNT_BUSY_SECONDS = 3.0


@dataclass(frozen=True)
class SecurePVConfig:
    device: str
    mount_point: Path
    workload_secret_path: Path
    done_path: Path
    mapping_name: str
    device_timeout: float
    # The integrity profile this volume was (or is to be) formatted with; the header must
    # match it exactly.
    integrity: luks.IntegrityProfile = luks.NO_INTEGRITY


class VolumeError(InitializerError):
    pass


# device-mapper names: no "/", at most 127 bytes (DM_NAME_LEN - 1).
_MAPPING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,126}")


def check_config(config: SecurePVConfig) -> None:
    """Refuse what would otherwise fail late (after a format) or do something surprising:
    an empty mount point means the current directory, and a mount over "." in a container
    whose working directory is / would hide its root."""
    for name, value in (
        ("device path", config.device),
        ("mount point", str(config.mount_point)),
        ("done path", str(config.done_path)),
    ):
        if not value or not value.startswith("/") or value == ".":
            raise UsageError(f"the {name} must be an absolute path, got {value!r}")
    if config.done_path.is_dir():
        raise UsageError(f"done path {config.done_path} is a directory; give a file path")
    if not _MAPPING_NAME.fullmatch(config.mapping_name):
        raise UsageError(
            f"mapping name {config.mapping_name!r} is not a valid device-mapper name: use "
            "1 to 127 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    if (
        config.integrity.segment_integrity is not None
        and len(config.mapping_name) + len(luks.INTEGRITY_DEVICE_SUFFIX) > 127
    ):
        raise UsageError(
            f"mapping name {config.mapping_name!r} is too long for a volume with integrity "
            f"protection: its dm-integrity device adds {luks.INTEGRITY_DEVICE_SUFFIX!r}, and "
            "device-mapper names have at most 127 characters; pass a shorter --mapping-name"
        )
    if not math.isfinite(config.device_timeout) or config.device_timeout < 0:
        raise UsageError(f"device timeout {config.device_timeout} is not a finite number >= 0")


def default_mapping_name(device: str) -> str:
    """A dm name per device, stable across restarts: ``/dev/csi0`` -> ``securepv-csi0``."""
    base = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(device).name)
    return f"securepv-{base or 'device'}"


def check_mount_point(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"mount point {path} exists but is not a directory")
    if not path.exists():
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"mount point {path} cannot be created: {exc.strerror}") from None
        event(log, "mount-point-created", path=path)


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
            view = memoryview(data)
            position = offset
            while view:
                written = os.pwrite(fd, view, position)
                view = view[written:]
                position += written
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        os.close(fd)


@contextlib.contextmanager
def opened_mapping(
    device: BlockDevice,
    metadata: bytes,
    name: str,
    key: bytes,
    integrity: luks.IntegrityProfile = luks.NO_INTEGRITY,
) -> Iterator[CheckedHeader]:
    """Check the header's metadata and open the device with a detached copy of it.

    The copy holds the checked metadata and the one keyslot's key material; the rest of the
    keyslots area, which the pinned layout leaves unused, reads as zeros.
    """
    with step(log, "header-check", device=device.path):
        header = check_header(device.path, metadata, device.size_bytes, integrity)
        keyslot = read_region(device.path, header.keyslot_area_offset, header.keyslot_area_size)
    luks.require_device_mapper(device.path)
    pieces = [(0, metadata), (header.keyslot_area_offset, keyslot)]
    with (
        sealed_header_copy(pieces, header.data_offset) as header_path,
        step(log, "luks-open", device=device.path, mapping=name),
    ):
        luks.open_with_detached_header(device.path, header_path, name, key)
    try:
        yield header
    finally:
        close_mapping(name)


def close_mapping(name: str) -> None:
    with step(log, "luks-close", mapping=name):
        try:
            luks.close(name)
        except luks.CryptsetupFailed:
            # Still in use (a lazily detached mount not yet released): let the kernel remove
            # the mapping as soon as its last user goes.
            luks.close(name, deferred=True)


def remove_stale_mapping(name: str) -> None:
    """A mapping left by an Initializer that was killed; close it or explain why not.

    With integrity, ``cryptsetup open`` creates the dm-integrity device NAME_dif before the
    crypt mapping NAME, and closing NAME removes both; an Initializer killed in between
    leaves NAME_dif alone, which would make the next open fail.
    """
    # Closing NAME normally takes NAME_dif with it, so look again before the second.
    for stale in (name, name + luks.INTEGRITY_DEVICE_SUFFIX):
        if not luks.mapping_exists(stale):
            continue
        event(log, "stale-mapping", logging.WARNING, mapping=stale)
        try:
            luks.close(stale)
        except luks.CryptsetupFailed as exc:
            raise VolumeError(
                f"a mapping {luks.mapping_path(stale)} already exists and is in use, probably "
                f"by a previous Initializer's mount that is still active: {exc}. Unmount it "
                f"and run 'cryptsetup close {stale}', or pass another --mapping-name."
            ) from None


def has_ext4_superblock(device: str, mapping: Path) -> bool:
    try:
        superblock = read_region(mapping, EXT4_SUPERBLOCK_OFFSET, 1024)
    except OSError as exc:
        # With integrity, a block that was never written (or was changed outside the guest)
        # fails its tag check: EILSEQ from the mapping, EIO through the page cache.
        if exc.errno not in (errno.EIO, errno.EILSEQ):
            raise
        raise VolumeError(
            f"{device}: the encrypted volume opens with this workload's key, but its first "
            f"block cannot be read ({exc.strerror}): with integrity protection that block "
            "was never written or was changed outside the guest. The device was not "
            "changed; inspect it, or restore a backup."
        ) from None
    return superblock[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC


def mkfs_options(integrity: luks.IntegrityProfile, mapping_bytes: int) -> list[str]:
    """mkfs.ext4's options for a volume; every one keeps mkfs's cost independent of size.

    Without integrity: inode tables and the journal are initialised lazily, after mount, and
    the discard pass is skipped. With integrity, sectors never written fail their tag check
    when read, so:

    - 4 KiB blocks always: with smaller blocks every metadata write would be a
      read-modify-write of a never-written 4 KiB sector;
    - the journal is zeroed at mkfs (lazy_journal_init=0) and has a fixed size: after a
      crash, jbd2's recovery reads the log up to the first block that is not part of it, and
      a never-written block there would fail the recovery and the mount;
    - inode tables stay lazy: ext4 does not read an inode table block holding no used
      inode (it zeroes it in memory) and reads ahead only up to the last used inode.
    """
    lazy = "lazy_itable_init=1,lazy_journal_init=1,nodiscard"
    if integrity.segment_integrity is None:
        return ["-E", lazy]
    journal_mib = max(
        INTEGRITY_JOURNAL_MIN_MIB, min(INTEGRITY_JOURNAL_MAX_MIB, mapping_bytes // 16 // MiB)
    )
    return [
        "-b",
        str(EXT4_BLOCK_BYTES),
        "-J",
        f"size={journal_mib}",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=0,nodiscard",
    ]


def parse_superblock_backups(mkfs_output: str) -> list[int]:
    """The block numbers from mke2fs's "Superblock backups stored on blocks:" list."""
    lines = mkfs_output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Superblock backups stored on blocks:"):
            text = line.split(":", 1)[1]
            for following in lines[index + 1 :]:
                if not following.strip():
                    break
                text += " " + following
            try:
                return [int(number) for number in text.replace(",", " ").split()]
            except ValueError:
                raise VolumeError(
                    f"mkfs.ext4 printed an unexpected list of superblock backups: {text!r}"
                ) from None
    return []


def blocks_mkfs_reads(mkfs: str, mapping: Path, options: list[str]) -> list[int]:
    """The 4 KiB blocks mke2fs reads or writes only in part, which must be written first.

    mke2fs reads block 0 before it zaps old signatures there and writes each superblock
    (the primary at byte 1024, the backups at the start of their group) as 1 KiB: the
    kernel reads the rest of the 4 KiB sector first. A dry run (-n) says where the backups
    go: a handful of blocks, logarithmic in the size, never the device's size in bytes.
    """
    result = run(
        [mkfs, "-n", *options, str(mapping)], timeout=MKFS_TIMEOUT_SECONDS, env={"LC_ALL": "C"}
    )
    return [0, *parse_superblock_backups(result.stdout.decode(errors="replace"))]


def zero_blocks(mapping: Path, blocks: list[int]) -> None:
    """Write whole zero blocks through the mapping: full sectors, so nothing is read first."""
    zeros = bytes(EXT4_BLOCK_BYTES)
    fd = os.open(mapping, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for block in blocks:
            if os.pwrite(fd, zeros, block * EXT4_BLOCK_BYTES) != EXT4_BLOCK_BYTES:
                raise VolumeError(f"{mapping}: short write while zeroing block {block}")
        os.fsync(fd)
    finally:
        os.close(fd)


def make_file_system(
    device: str,
    mapping: Path,
    data_offset: int,
    integrity: luks.IntegrityProfile = luks.NO_INTEGRITY,
    *,
    formatted_now: bool = False,
) -> None:
    """Create ext4 on a volume proven never to have held data.

    ``formatted_now``: this start has just written the LUKS header on a proven-blank device,
    so the volume holds nothing yet. Otherwise the raw ciphertext where mkfs writes first
    must still be zeros: everything written through the mapping, by mkfs or an application,
    lands there as non-zero ciphertext. So a volume whose first start was interrupted before
    mkfs gets its file system, and one that holds anything else is refused. (With integrity,
    dm-integrity's own superblock sits there, so an interrupted first start is refused until
    the first-start state record replaces this check.)
    """
    if not formatted_now:
        _refuse_written_data_area(device, data_offset)
    mkfs = require_binary("mkfs.ext4", MKFS_PACKAGE)
    options = mkfs_options(integrity, _size_of(mapping))
    if integrity.segment_integrity is not None:
        with step(log, "integrity-prepare", mapping=mapping) as fields:
            blocks = blocks_mkfs_reads(mkfs, mapping, options)
            zero_blocks(mapping, blocks)
            fields["zeroed_blocks"] = len(blocks)
    with step(log, "mkfs", mapping=mapping):
        run([mkfs, "-q", *options, str(mapping)], timeout=MKFS_TIMEOUT_SECONDS)


def _size_of(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _refuse_written_data_area(device: str, data_offset: int) -> None:
    raw = read_region(device, data_offset, UNFINISHED_CHECK_BYTES)
    offset = first_nonzero(raw)
    if offset is not None:
        raise VolumeError(
            f"{device}: the encrypted volume opens with this workload's key but holds no ext4 "
            f"file system, and its data area has been written (offset "
            f"{data_offset + offset}). Refusing to create a file system over it; the device "
            "was not changed. Inspect it with cryptsetup and fsck.ext4, or restore a backup."
        )


@contextlib.contextmanager
def mounted(source: Path, target: Path) -> Iterator[None]:
    with step(log, "mount", source=source, target=target):
        mount.mount(source, target, "ext4", MOUNT_FLAGS, MOUNT_OPTIONS)
    try:
        yield
    finally:
        unmount_patiently(target)


def unmount_patiently(target: Path) -> None:
    """Unmount; while busy retry briefly, then detach lazily so shutdown never hangs."""
    with step(log, "unmount", target=target) as fields:
        os.sync()
        deadline = time.monotonic() + UNMOUNT_BUSY_SECONDS
        while True:
            try:
                mount.unmount(target)
                return
            except mount.MountError as exc:
                if exc.errno == errno.EINVAL:
                    fields["note"] = "not mounted"
                    return
                if not mount.is_busy(exc) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        fields["note"] = "busy, detached lazily"
        mount.unmount(target, detach=True)


def ensure_writable(mount_point: Path) -> None:
    probe = mount_point / ".initializer-write-check"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise VolumeError(f"{mount_point}: the mounted volume is not writable: {exc}") from None


@contextlib.contextmanager
def done_marker(path: Path, mount_point: Path) -> Iterator[None]:
    with step(log, "done", path=path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{mount_point}\n".encode(), mode=0o644)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        event(log, "done-removed", path=path)


def check_tools() -> None:
    require_binary("cryptsetup", luks.CRYPTSETUP_PACKAGE)
    require_binary("mkfs.ext4", MKFS_PACKAGE)
    require_binary("blkid", "util-linux")


def check_device(device: BlockDevice) -> None:
    if device.read_only:
        raise VolumeError(
            f"{device.path} is read-only; a secure PV needs a writable device (check the "
            "PersistentVolumeClaim's access mode and that the volumeDevice is not read-only)"
        )
    if device.size_bytes < MIN_DEVICE_BYTES:
        raise VolumeError(
            f"{device.path} has {device.size_bytes} bytes, too small for a LUKS2 header and a "
            f"file system: at least {MIN_DEVICE_BYTES // (1024 * 1024)} MiB are needed"
        )


@contextlib.contextmanager
def secure_pv(config: SecurePVConfig) -> Iterator[BlockDevice]:
    """Set up the secure PV; on exit tear it down. Yields once the volume is mounted."""
    check_config(config)
    secret = read_workload_secret(config.workload_secret_path)
    key = derive_luks_passphrase(secret)
    del secret
    check_mount_point(config.mount_point)
    check_tools()
    with step(log, "wait-device", device=config.device) as fields:
        device = wait_for_block_device(
            config.device, config.device_timeout, between_attempts=termination.check
        )
        fields.update(size_bytes=device.size_bytes, read_only=device.read_only)
    check_device(device)
    termination.check()
    remove_stale_mapping(config.mapping_name)

    with step(log, "probe", device=device.path) as fields:
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
        # A LUKS2 header is ours or a forgery: the header check decides, so libblkid is
        # only needed to prove everything else blank.
        probe = probe_luks_magic(metadata) or probe_raw_device(device.path, device.size_bytes)
        contents = classify(device.path, probe)
        fields["contents"] = contents.value
    formatted_now = contents is Contents.BLANK
    if formatted_now:
        termination.check()
        luks.require_device_mapper(device.path)
        with step(log, "luks-format", device=device.path, integrity=config.integrity.name):
            luks.luks_format(device.path, key, config.integrity)
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
    termination.check()

    mapping = luks.mapping_path(config.mapping_name)
    with contextlib.ExitStack() as stack:
        header = stack.enter_context(
            opened_mapping(device, metadata, config.mapping_name, key, config.integrity)
        )
        termination.check()
        # A volume formatted just now holds nothing: no need to read it (with integrity, its
        # never-written first block would not even read).
        if formatted_now or not has_ext4_superblock(device.path, mapping):
            make_file_system(
                device.path,
                mapping,
                header.data_offset,
                config.integrity,
                formatted_now=formatted_now,
            )
            termination.check()
        stack.enter_context(mounted(mapping, config.mount_point))
        ensure_writable(config.mount_point)
        termination.check()
        stack.enter_context(done_marker(config.done_path, config.mount_point))
        yield device
