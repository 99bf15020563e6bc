"""The secure-PV flow: workload secret -> LUKS key -> checked header -> mapping -> ext4 -> mount.

Each resource with a lifetime (the detached header copy, the dm-crypt mapping, the mount,
``/done``) is a context manager, so teardown on SIGTERM, and on any failure half-way, undoes
exactly what was done, in reverse order.
"""

from __future__ import annotations

import contextlib
import errno
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
from contrast.retry import GaveUp, retry_briefly
from initializer import faults, growth, luks, mount, state, termination
from initializer.device import BlockDevice, read_region, wait_for_block_device
from initializer.errors import InitializerError, UsageError
from initializer.header_image import (
    copy_header_to_device,
    new_header_image,
    read_image,
    sealed_header_copy,
)
from initializer.luks_header import (
    METADATA_AREA_BYTES,
    CheckedHeader,
    check_header,
)
from initializer.probe import Contents, classify, probe_luks_magic
from initializer.probe import probe_device as probe_raw_device
from initializer.secret import read_workload_secret
from initializer.state import VolumeState

log = logging.getLogger("initializer")

# A LUKS2 header with our layout plus the smallest ext4 worth having.
MIN_DEVICE_BYTES = luks.LuksLayout.DATA_OFFSET_BYTES + 16 * 1024 * 1024
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
        faults.during("luks-open"),
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

    The killed container's mount of it goes with its mount namespace, which the kernel may
    still be tearing down: a busy mapping gets a few seconds to become free.
    """
    if not luks.mapping_exists(name):
        return
    event(log, "stale-mapping", logging.WARNING, mapping=name)
    try:
        retry_briefly(
            lambda: luks.close(name),
            retryable=lambda exc: isinstance(exc, luks.CryptsetupFailed),
        )
    except GaveUp as gave_up:
        exc = gave_up.last
        raise VolumeError(
            f"a mapping {luks.mapping_path(name)} already exists and is in use, probably by a "
            f"previous Initializer's mount that is still active: {exc}. Unmount it and run "
            f"'cryptsetup close {name}', or pass another --mapping-name."
        ) from None


def has_ext4_superblock(device: str, mapping: Path) -> bool:
    superblock = growth.read_superblock(device, mapping)
    return superblock[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC


def make_file_system(mapping: Path) -> None:
    """Create ext4 on the mapping of a volume whose first start is not finished (its state
    record says so: nothing but that first start ever wrote to it), then flush it all to the
    device, so that the record can say "initialized" next."""
    mkfs = require_binary("mkfs.ext4", MKFS_PACKAGE)
    with step(log, "mkfs", mapping=mapping), faults.during("mkfs"):
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
        flush(mapping)


def flush(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise VolumeError(f"{path}: flushing to the device failed: {exc.strerror}") from None


def write_new_header(device: BlockDevice, key: bytes) -> None:
    """Format: a new header made and checked in memory, then the state record "formatting",
    then the header on the device."""
    with contextlib.ExitStack() as stack:
        with step(log, "luks-format", device=device.path), faults.during("luks-format"):
            image = stack.enter_context(new_header_image(device.path, key))
        metadata = read_image(image, 0, METADATA_AREA_BYTES)
        # What goes onto the device passes the same check as every later start.
        check_header(device.path, metadata, device.size_bytes)
        faults.boundary("luks-format")
        with step(log, "header-write", device=device.path):
            state.write_state(device.path, VolumeState.FORMATTING)
            faults.boundary("state-formatting")
            copy_header_to_device(image, device.path)
    faults.boundary("header-written")


def probe_contents(device: BlockDevice, metadata: bytes) -> tuple[Contents, VolumeState]:
    """What the device holds, and what its state record says about it."""
    volume_state = state.read_state(device.path)
    if volume_state is VolumeState.FORMATTING:
        return Contents.UNFINISHED, volume_state
    luks_probe = probe_luks_magic(metadata)
    if luks_probe is None and volume_state is VolumeState.INITIALIZED:
        raise VolumeError(
            f"{device.path}: the state record says this volume was initialized, but its LUKS2 "
            "header is gone (no LUKS magic at offset 0). The device was left untouched; "
            "restore the header from a backup (cryptsetup luksHeaderRestore)."
        )
    # A LUKS2 header is ours or a forgery: the header check decides, so libblkid is only
    # needed to prove everything else blank.
    probe = luks_probe or probe_raw_device(device.path, device.size_bytes)
    return classify(device.path, probe), volume_state


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
        contents, volume_state = probe_contents(device, metadata)
        fields.update(contents=contents.value, state=volume_state.value)
    faults.boundary("probe")
    first_start = contents in (Contents.BLANK, Contents.UNFINISHED)
    if first_start:
        if contents is Contents.UNFINISHED:
            event(log, "first-start-unfinished", logging.WARNING, device=device.path)
        termination.check()
        luks.require_device_mapper(device.path)
        write_new_header(device, key)
        # From here on, as on every later start: what is opened is what the device holds.
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
    termination.check()

    mapping = luks.mapping_path(config.mapping_name)
    with contextlib.ExitStack() as stack:
        header = stack.enter_context(opened_mapping(device, metadata, config.mapping_name, key))
        faults.boundary("luks-open")
        termination.check()
        if first_start:
            make_file_system(mapping)
            faults.boundary("mkfs")
            with step(log, "state-initialized", device=device.path):
                state.write_state(device.path, VolumeState.INITIALIZED)
            faults.boundary("state-initialized")
            termination.check()
        elif not has_ext4_superblock(device.path, mapping):
            raise VolumeError(
                f"{device.path}: the encrypted volume opens with this workload's key, but holds "
                f"no ext4 file system although its first start was completed (state record: "
                f"{volume_state.value}). Refusing to create a file system over what may be "
                "data; the device was not changed. Inspect it with cryptsetup and fsck.ext4 "
                "(backup superblocks), or restore a backup."
            )
        sizes = growth.check_volume_fits(device.path, mapping, header.data_offset)
        stack.enter_context(mounted(mapping, config.mount_point))
        faults.boundary("mount")
        growth.grow_file_system(sizes, mapping, config.mount_point)
        ensure_writable(config.mount_point)
        termination.check()
        stack.enter_context(done_marker(config.done_path, config.mount_point))
        faults.boundary("done")
        yield device
