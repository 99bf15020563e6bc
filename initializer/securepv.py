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
from initializer import growth, luks, mount, termination
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
EXT4_MAGIC_OFFSET = 0x38
EXT4_MAGIC = b"\x53\xef"
MOUNT_FLAGS = mount.MS_NOSUID | mount.MS_NODEV
MOUNT_OPTIONS = "errors=remount-ro"
MKFS_PACKAGE = "e2fsprogs"
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
    device: BlockDevice, metadata: bytes, name: str, key: bytes
) -> Iterator[CheckedHeader]:
    """Check the header's metadata and open the device with a detached copy of it.

    The copy holds the checked metadata and the one keyslot's key material; the rest of the
    keyslots area, which the pinned layout leaves unused, reads as zeros.
    """
    with step(log, "header-check", device=device.path):
        header = check_header(device.path, metadata, device.size_bytes)
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
    """A mapping left by an Initializer that was killed; close it or explain why not."""
    if not luks.mapping_exists(name):
        return
    event(log, "stale-mapping", logging.WARNING, mapping=name)
    try:
        luks.close(name)
    except luks.CryptsetupFailed as exc:
        raise VolumeError(
            f"a mapping {luks.mapping_path(name)} already exists and is in use, probably by a "
            f"previous Initializer's mount that is still active: {exc}. Unmount it and run "
            f"'cryptsetup close {name}', or pass another --mapping-name."
        ) from None


def has_ext4_superblock(device: str, mapping: Path) -> bool:
    superblock = growth.read_superblock(device, mapping)
    return superblock[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC


def make_file_system(device: str, mapping: Path, data_offset: int) -> None:
    """Create ext4 on a volume proven never to have held data.

    The raw ciphertext where mkfs writes first must still be zeros: everything written
    through the mapping, by mkfs or an application, lands there as non-zero ciphertext. So a
    volume whose first start was interrupted before mkfs gets its file system, and one that
    holds anything else is refused.
    """
    raw = read_region(device, data_offset, UNFINISHED_CHECK_BYTES)
    offset = first_nonzero(raw)
    if offset is not None:
        raise VolumeError(
            f"{device}: the encrypted volume opens with this workload's key but holds no ext4 "
            f"file system, and its data area has been written (offset "
            f"{data_offset + offset}). Refusing to create a file system over it; the device "
            "was not changed. Inspect it with cryptsetup and fsck.ext4, or restore a backup."
        )
    mkfs = require_binary("mkfs.ext4", MKFS_PACKAGE)
    with step(log, "mkfs", mapping=mapping):
        run(
            [
                mkfs,
                "-q",
                # Initialise inode tables and the journal lazily, after mount, and skip the
                # discard pass: mkfs then costs the same on 1 GiB and on 64 GiB.
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                str(mapping),
            ],
            timeout=MKFS_TIMEOUT_SECONDS,
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
    if contents is Contents.BLANK:
        termination.check()
        luks.require_device_mapper(device.path)
        with step(log, "luks-format", device=device.path):
            luks.luks_format(device.path, key)
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
    termination.check()

    mapping = luks.mapping_path(config.mapping_name)
    with contextlib.ExitStack() as stack:
        header = stack.enter_context(opened_mapping(device, metadata, config.mapping_name, key))
        termination.check()
        if not has_ext4_superblock(device.path, mapping):
            make_file_system(device.path, mapping, header.data_offset)
            termination.check()
        sizes = growth.check_volume_fits(device.path, mapping, header.data_offset)
        stack.enter_context(mounted(mapping, config.mount_point))
        growth.grow_file_system(sizes, mapping, config.mount_point)
        ensure_writable(config.mount_point)
        termination.check()
        stack.enter_context(done_marker(config.done_path, config.mount_point))
        yield device
