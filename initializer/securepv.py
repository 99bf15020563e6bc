"""The secure-PV flow: workload secret -> LUKS key -> checked header -> mapping -> ext4 -> mount.

Each resource with a lifetime (the detached header copy, the dm-crypt mapping, the mount,
``/done``) is a context manager, so teardown on SIGTERM, and on any failure half-way, undoes
exactly what was done, in reverse order.
"""

from __future__ import annotations

import contextlib
import errno
import functools
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
from initializer.device import BlockDevice, read_region, wait_for_block_device, write_durably
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
from initializer.probe import Contents, Probe, classify, probe_luks_magic
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
    try:
        with sealed_header_copy(pieces, header.data_offset) as header_path:
            open_mapping(device, header, header_path, name, key, integrity)
            if integrity.segment_integrity is not None and growth.integrity_offers_more(
                device.path, header.data_offset, luks.mapping_path(name)
            ):
                # The device grew: this activation updated dm-integrity's superblock, and
                # the next one maps the new size.
                event(log, "integrity-device-grew", device=device.path, mapping=name)
                close_mapping(name)
                open_mapping(device, header, header_path, name, key, integrity)
        yield header
    finally:
        # Asked of the kernel alone: whatever made the open fail must not be hidden here.
        if luks.kernel_device_number(name) is not None:
            close_mapping(name)


def open_mapping(
    device: BlockDevice,
    header: CheckedHeader,
    header_path: str,
    name: str,
    key: bytes,
    integrity: luks.IntegrityProfile,
) -> None:
    with step(log, "luks-open", device=device.path, mapping=name), faults.during("luks-open"):
        try:
            luks.open_with_detached_header(device.path, header_path, name, key)
        except luks.CryptsetupFailed:
            if integrity.segment_integrity is not None:
                growth.check_integrity_area_fits(device.path, header.data_offset, device.size_bytes)
            raise


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
    still be tearing down: a busy mapping gets a few seconds to become free. With
    integrity, ``cryptsetup open`` creates the dm-integrity device NAME_dif before the crypt
    mapping NAME, and closing NAME removes both; an Initializer killed in between leaves
    NAME_dif alone, which would make the next open fail.
    """
    # Closing NAME normally takes NAME_dif with it, so look again before the second.
    for stale in (name, name + luks.INTEGRITY_DEVICE_SUFFIX):
        if not luks.mapping_exists(stale):
            continue
        event(log, "stale-mapping", logging.WARNING, mapping=stale)
        try:
            retry_briefly(
                functools.partial(luks.close, stale),
                retryable=lambda exc: isinstance(exc, luks.CryptsetupFailed),
            )
        except GaveUp as gave_up:
            raise VolumeError(
                f"a mapping {luks.mapping_path(stale)} already exists and is in use, probably "
                f"by a previous Initializer's mount that is still active: {gave_up.last}. "
                f"Unmount it and run 'cryptsetup close {stale}', or pass another "
                "--mapping-name."
            ) from None


def volume_still_mounted(config: SecurePVConfig, device: BlockDevice) -> bool:
    """Whether an earlier Initializer of this pod opened the volume and it is still mounted
    at the mount point: the Initializer's container was restarted while the application
    kept running (a native sidecar is restarted on its own, after a crash or an OOM kill).

    The application holds the mount, so the mapping cannot be closed and opened again; the
    mapping is the guest kernel's, made by this pod's own Initializer with the checked header
    (nothing outside the guest can create one), so it is taken over instead.
    """
    mapping = luks.mapping_path(config.mapping_name)
    if not luks.mapping_exists(config.mapping_name):
        return False
    if not mount.is_mounted_at(mapping, config.mount_point):
        return False
    if not luks.stacked_on(mapping, device.path):
        raise VolumeError(
            f"{mapping} is mounted at {config.mount_point}, but it is not a mapping of "
            f"{device.path}: another volume uses this mapping name and mount point. Give "
            "each secure PV its own --mapping-name and --mount-point; nothing was changed."
        )
    return True


@contextlib.contextmanager
def adopted_volume(config: SecurePVConfig, device: BlockDevice) -> Iterator[None]:
    """Serve the volume an earlier Initializer of this pod left mounted: check it is still
    writable, finish a growth the earlier one did not, write /done, and at SIGTERM unmount
    and close it as usual.

    If the volume turns out not to be writable, or the growth fails, it is left mounted: the
    application may be using it, and the error says what to do.
    """
    mapping = luks.mapping_path(config.mapping_name)
    event(
        log,
        "volume-taken-over",
        logging.WARNING,
        device=device.path,
        mapping=mapping,
        mount_point=config.mount_point,
    )
    # What the volume is, from the kernel: its mapping stands on a dm-integrity device or not
    # (the configured setting could differ when the command is run by hand).
    with_integrity = luks.mapping_exists(config.mapping_name + luks.INTEGRITY_DEVICE_SUFFIX)
    try:
        try:
            ensure_writable(config.mount_point)
            # The mapping keeps the size it was opened with; a growth that the earlier
            # Initializer started on it is finished here, online.
            sizes = growth.check_volume_fits(
                device.path, mapping, luks.LuksLayout.DATA_OFFSET_BYTES
            )
            growth.grow_file_system(sizes, mapping, config.mount_point, integrity=with_integrity)
        except InitializerError as exc:
            raise VolumeError(
                f"{exc} (This start took over a volume still mounted for the application: "
                "it was left mounted; look for ext4 or integrity errors in the kernel log "
                "(dmesg), and delete the pod to start it afresh in a new VM.)"
            ) from None
    except termination.Terminated:
        # The pod is being stopped (the application first): unmount as a teardown does.
        unmount_patiently(config.mount_point)
        close_mapping(config.mapping_name)
        raise
    try:
        termination.check()
        with done_marker(config.done_path, config.mount_point):
            yield
    finally:
        unmount_patiently(config.mount_point)
        close_mapping(config.mapping_name)


def remove_stale_temporary_devices(device: str) -> None:
    """cryptsetup's temporary device left on ``device`` by an Initializer killed while it
    formatted dm-integrity: it holds the device open, so the next luksFormat would fail."""
    for stale in luks.temporary_devices_on(device):
        event(log, "stale-mapping", logging.WARNING, mapping=stale)
        try:
            luks.remove_device(stale)
        except luks.CryptsetupFailed as exc:
            raise VolumeError(
                f"{device}: cryptsetup's temporary device {stale}, left by an interrupted "
                f"format, cannot be removed: {exc}. Run 'dmsetup remove {stale}' on the "
                "pod's VM, or delete the pod so that it starts in a new VM."
            ) from None


def has_ext4_superblock(device: str, mapping: Path) -> bool:
    superblock = growth.read_superblock(device, mapping)
    return superblock[EXT4_MAGIC_OFFSET : EXT4_MAGIC_OFFSET + 2] == EXT4_MAGIC


def flush(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise VolumeError(f"{path}: flushing to the device failed: {exc.strerror}") from None


def write_new_header(device: BlockDevice, key: bytes, integrity: luks.IntegrityProfile) -> None:
    """Format: the state record "formatting" (the first write to the device), a new header
    made in memory and checked, then that header on the device."""
    with step(log, "state-formatting", device=device.path):
        state.write_state(device.path, VolumeState.FORMATTING)
    faults.boundary("state-formatting")
    with contextlib.ExitStack() as stack:
        with (
            step(log, "luks-format", device=device.path, integrity=integrity.name),
            faults.during("luks-format"),
        ):
            image = stack.enter_context(new_header_image(device.path, key, integrity))
        metadata = read_image(image, 0, METADATA_AREA_BYTES)
        # What goes onto the device passes the same check as every later start.
        check_header(device.path, metadata, device.size_bytes, integrity)
        faults.boundary("luks-format")
        with step(log, "header-write", device=device.path):
            copy_header_to_device(image, device.path)
    faults.boundary("header-written")


def names_more_than_the_record(probe: Probe) -> bool:
    """Whether a probe of a device with a damaged state record found more than that record.

    A signature, or data before the record, is what the device holds; a device whose only
    non-zero bytes in the probed region start at the record is best described as a damaged
    record.
    """
    first_data = probe.first_nonzero_offset
    return (
        bool(probe.tags)
        or probe.ambivalent
        or (first_data is not None and first_data < state.RECORD_OFFSET)
    )


def probe_contents(
    device: BlockDevice, metadata: bytes, integrity: luks.IntegrityProfile = luks.NO_INTEGRITY
) -> tuple[Contents, VolumeState]:
    """What the device holds, and what its state record says about it."""
    luks_probe = probe_luks_magic(metadata)
    try:
        volume_state = state.read_state(device.path)
    except state.StateRecordDamaged:
        # The record's block lies where other formats keep their data (a partition, a file
        # system, a LUKS1 data area, the keyslots area of a LUKS2 header made with other
        # options): on a device that is not ours, what it holds is the clearer refusal.
        # classify raises DeviceNotBlank for anything but blank or LUKS2; the header check
        # raises HeaderRejected for a LUKS2 header other than ours.
        if luks_probe is not None and luks_probe.tags.get("VERSION") == "2":
            check_header(device.path, metadata, device.size_bytes, integrity)
        probe = luks_probe or probe_raw_device(device.path, device.size_bytes)
        if names_more_than_the_record(probe):
            classify(device.path, probe)
        raise
    if volume_state is VolumeState.FORMATTING:
        return Contents.UNFINISHED, volume_state
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
    write_durably(mapping, [(block * EXT4_BLOCK_BYTES, zeros) for block in blocks])


def make_file_system(mapping: Path, integrity: luks.IntegrityProfile) -> None:
    """Create ext4 on the mapping of a volume whose first start is not finished (its state
    record says so: nothing but that first start ever wrote to it), then flush it all to the
    device, so that the record can say "initialized" next."""
    mkfs = require_binary("mkfs.ext4", MKFS_PACKAGE)
    options = mkfs_options(integrity, growth.mapping_size(mapping))
    if integrity.segment_integrity is not None:
        with step(log, "integrity-prepare", mapping=mapping) as fields:
            blocks = blocks_mkfs_reads(mkfs, mapping, options)
            zero_blocks(mapping, blocks)
            fields["zeroed_blocks"] = len(blocks)
    with step(log, "mkfs", mapping=mapping), faults.during("mkfs"):
        run([mkfs, "-q", *options, str(mapping)], timeout=MKFS_TIMEOUT_SECONDS)
        flush(mapping)


@contextlib.contextmanager
def mounted(source: Path, target: Path) -> Iterator[None]:
    with step(log, "mount", source=source, target=target):
        mount.mount(source, target, "ext4", MOUNT_FLAGS, MOUNT_OPTIONS)
    try:
        yield
    finally:
        unmount_patiently(target)
        faults.boundary("unmount")


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
        faults.boundary("done-removed")


def check_tools() -> None:
    require_binary("cryptsetup", luks.CRYPTSETUP_PACKAGE)
    require_binary("mkfs.ext4", MKFS_PACKAGE)
    require_binary("blkid", "util-linux")


def check_device(device: BlockDevice, integrity: luks.IntegrityProfile = luks.NO_INTEGRITY) -> None:
    """Refuse, before anything is read or written, a device no volume can live on."""
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
    data_bytes = device.size_bytes - luks.LuksLayout.DATA_OFFSET_BYTES
    sector = luks.LuksLayout.SECTOR_BYTES
    # dm-crypt refuses a mapping that is not a whole number of its sectors ("Device size is
    # not multiple of sector_size feature"), and the LUKS2 data segment is "dynamic": it
    # spans the device to its end, so luksFormat refuses such a device, and cryptsetup open
    # fails on a volume whose device grew to such a size. With integrity cryptsetup skips
    # the rule: dm-integrity exposes only whole 4 KiB blocks and leaves the rest unused.
    if integrity.segment_integrity is None and data_bytes % sector:
        raise VolumeError(
            f"{device.path} has {device.size_bytes} bytes: the data area after the "
            f"{luks.LuksLayout.DATA_OFFSET_BYTES}-byte LUKS2 header area would be "
            f"{data_bytes} bytes, which is not a multiple of the {sector}-byte encryption "
            "sector, so dm-crypt cannot map it. The device was not changed. Give the "
            f"PersistentVolumeClaim a size that is a multiple of {sector // 1024} KiB (in Mi "
            "or Gi: 1536Mi, not 1.5G); a volume that holds data opens again once its claim "
            "is expanded to such a size."
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
    # Before the device checks: a device that changed under a running application (say,
    # grown to an unaligned size) must not stop the takeover of the volume it still uses.
    if volume_still_mounted(config, device):
        with adopted_volume(config, device):
            yield device
        return
    check_device(device, config.integrity)
    termination.check()
    remove_stale_mapping(config.mapping_name)
    remove_stale_temporary_devices(device.path)

    with step(log, "probe", device=device.path) as fields:
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
        contents, volume_state = probe_contents(device, metadata, config.integrity)
        fields.update(contents=contents.value, state=volume_state.value)
    faults.boundary("probe")
    first_start = contents in (Contents.BLANK, Contents.UNFINISHED)
    if first_start:
        if contents is Contents.UNFINISHED:
            event(log, "first-start-unfinished", logging.WARNING, device=device.path)
        termination.check()
        luks.require_device_mapper(device.path)
        write_new_header(device, key, config.integrity)
        # From here on, as on every later start: what is opened is what the device holds.
        metadata = read_region(device.path, 0, METADATA_AREA_BYTES)
    termination.check()

    mapping = luks.mapping_path(config.mapping_name)
    with contextlib.ExitStack() as stack:
        header = stack.enter_context(
            opened_mapping(device, metadata, config.mapping_name, key, config.integrity)
        )
        faults.boundary("luks-open")
        termination.check()
        if first_start:
            make_file_system(mapping, config.integrity)
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
        growth.grow_file_system(
            sizes,
            mapping,
            config.mount_point,
            integrity=config.integrity.segment_integrity is not None,
        )
        if sizes.needs_growth:
            faults.boundary("grow-file-system")
        ensure_writable(config.mount_point)
        termination.check()
        stack.enter_context(done_marker(config.done_path, config.mount_point))
        faults.boundary("done")
        yield device
