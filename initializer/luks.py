"""The pinned LUKS2 layout of a secure PV, and the cryptsetup commands that use it.

Parameters (documented in the README, checked field by field in ``luks_header``):

- LUKS2, ``aes-xts-plain64`` with a 512-bit key (AES-256 in XTS), 4096-byte sectors: the
  kernel's fastest authenticated-free full-disk mode, and 4 KiB sectors cut per-sector
  overhead 8x against 512-byte sectors on devices with 4 KiB physical blocks.
- Keyslot KDF: PBKDF2-SHA256 with the minimum 1000 iterations. The passphrase is a 256-bit
  HKDF output, not a human password: brute force is 2^256 work whatever the KDF costs, so a
  memory-hard KDF (argon2id, cryptsetup's default) would only add start-up time and memory
  (dangerous under a 100 MiB container limit) and buy nothing.
- 16 KiB metadata copies and data at 16 MiB (cryptsetup's defaults), a keyslots area that
  ends 4 KiB before the data, and in those 4 KiB the Initializer's state record
  (``initializer.state``): pinned so a cryptsetup upgrade cannot change what a valid header
  looks like.
- The header is never written by cryptsetup to the device: ``luksFormat`` writes a detached
  header image, which is checked and then copied (``initializer.securepv``).
- Integrity, chosen per volume (``IntegrityProfile``): ``none`` (the above) or
  ``hmac-sha256``: dm-crypt's ``authenc(hmac(sha256),xts(aes))`` over dm-integrity, a 768-bit
  volume key (512 bits XTS + 256 bits HMAC), a 32-byte tag per 4 KiB sector, the
  dm-integrity journal on, no initial wipe (sectors never written read as errors; see
  the README, *Integrity protection*, and ``securepv.make_file_system``). No AEAD with random nonces
  (aes-gcm-random, chacha20-random): 96-bit random IVs collide after about 2^32 sector
  writes, and a GCM nonce collision leaks the authentication key; hmac-sha256 has no nonce.

Key material reaches cryptsetup on stdin (``--key-file=-``), never in argv or a file.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from contrast.process import CommandError, Result, require_binary, run
from initializer.errors import InitializerError, UsageError


class LuksLayout:
    CIPHER = "aes-xts-plain64"
    KEY_BITS = 512
    KEY_BYTES = KEY_BITS // 8
    SECTOR_BYTES = 4096
    HASH = "sha256"
    PBKDF = "pbkdf2"
    PBKDF_ITERATIONS = 1000
    # cryptsetup sizes the digest's iterations itself; a forged header must not be able to
    # stall the unlock with an absurd count.
    MAX_DIGEST_ITERATIONS = 2_000_000
    AF_STRIPES = 4000
    METADATA_BYTES = 16 * 1024
    DATA_OFFSET_BYTES = 16 * 1024 * 1024
    STATE_RECORD_BYTES = 4096
    STATE_RECORD_OFFSET = DATA_OFFSET_BYTES - STATE_RECORD_BYTES
    KEYSLOTS_BYTES = STATE_RECORD_OFFSET - 2 * METADATA_BYTES


@dataclass(frozen=True)
class IntegrityProfile:
    """One pinned header variant: what luksFormat is told and what the header must then say."""

    # The name users choose (Initializer option, contrast generate annotation).
    name: str
    # The LUKS2 segment's ``integrity.type``, or None for a segment without integrity.
    segment_integrity: str | None
    # The volume key: the XTS key, plus the HMAC key when there is one.
    volume_key_bytes: int
    format_options: tuple[str, ...]


NO_INTEGRITY = IntegrityProfile(
    name="none",
    segment_integrity=None,
    volume_key_bytes=LuksLayout.KEY_BYTES,
    format_options=(),
)
HMAC_SHA256 = IntegrityProfile(
    name="hmac-sha256",
    segment_integrity="hmac(sha256)",
    volume_key_bytes=LuksLayout.KEY_BYTES + 32,
    # No full-device wipe: the first start costs the same on any size. Sectors never written
    # then fail their tag check on read; the file-system set-up writes before it reads.
    format_options=("--integrity=hmac-sha256", "--integrity-no-wipe"),
)
INTEGRITY_PROFILES = {profile.name: profile for profile in (NO_INTEGRITY, HMAC_SHA256)}
INTEGRITY_MODES = tuple(INTEGRITY_PROFILES)
# dm-integrity's device under the crypt mapping is named NAME_dif.
INTEGRITY_DEVICE_SUFFIX = "_dif"


def integrity_profile(value: str, source: str) -> IntegrityProfile:
    """The profile named ``value``; ``source`` names where the value came from, for errors."""
    profile = INTEGRITY_PROFILES.get(value)
    if profile is None:
        raise UsageError(f"{source} is {value!r}; allowed values are {', '.join(INTEGRITY_MODES)}")
    return profile


CRYPTSETUP_PACKAGE = "cryptsetup-bin"
# cryptsetup exits 2 when no keyslot opens with the given passphrase.
_EXIT_NO_KEY = 2
_TIMEOUT_SECONDS = 60.0


class WrongWorkloadSecret(InitializerError):
    def __init__(self, device: str):
        super().__init__(
            f"{device}: this volume was formatted with a different workload secret (or its "
            "keyslot was tampered with); it does not open with the key derived from this "
            "workload's secret. The device was left untouched. Check the pod's workload "
            "secret ID in the manifest, or that the Coordinator was recovered with the "
            "original seed."
        )


class CryptsetupFailed(InitializerError):
    pass


def _cryptsetup_environment() -> dict[str, str]:
    # Containers have no udev daemon of their own: without this, libdevmapper waits for a
    # udev cookie that never comes and cryptsetup hangs. It then creates /dev/mapper nodes
    # itself. https://gitlab.com/cryptsetup/cryptsetup/-/issues/523
    return {"DM_DISABLE_UDEV": "1", "LC_ALL": "C"}


def _common_options() -> list[str]:
    options = [
        # Token plugins are code loaded because the (untrusted) header asks for them.
        "--disable-external-tokens",
        # The kernel keyring is often unavailable to containers (seccomp); the key then
        # travels in the dm table, which only the trusted guest kernel can read.
        "--disable-keyring",
    ]
    # A nearly empty /run in the container lacks cryptsetup's lock directory.
    lock_dir = Path("/run/cryptsetup")
    try:
        lock_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.ENOENT, errno.EPERM):
            raise
        options.append("--disable-locks")
    return options


class DeviceMapperMissing(InitializerError):
    pass


def device_mapper_listed(misc: str) -> bool:
    """Whether /proc/misc (``MINOR NAME`` lines) lists the device-mapper control device."""
    return any(line.split()[1:] == ["device-mapper"] for line in misc.splitlines())


def require_device_mapper(device: str) -> None:
    """Refuse before anything is written when the kernel cannot map the volume at all.

    /dev/mapper/control proves nothing (any cryptsetup run creates the node); the kernel's
    list of misc devices does. A kernel with dm as a module gets one chance to load it.
    """
    if device_mapper_listed(Path("/proc/misc").read_text()):
        return
    modprobe = shutil.which("modprobe")
    if modprobe:
        run([modprobe, "-q", "dm_mod"], timeout=_TIMEOUT_SECONDS, check=False)
        if device_mapper_listed(Path("/proc/misc").read_text()):
            return
    raise DeviceMapperMissing(
        f"{device}: this kernel has no device-mapper, so dm-crypt cannot map the volume; the "
        "device was not changed. Run the Initializer in a (confidential) VM whose kernel has "
        "dm_mod and dm_crypt."
    )


def cryptsetup(args: list[str], *, key: bytes | None = None, check: bool = True) -> Result:
    binary = require_binary("cryptsetup", CRYPTSETUP_PACKAGE)
    try:
        return run(
            [binary, *_common_options(), *args],
            stdin=key,
            timeout=_TIMEOUT_SECONDS,
            check=check,
            env=_cryptsetup_environment(),
        )
    except CommandError as exc:
        raise CryptsetupFailed(str(exc)) from exc


def luks_format(
    device: str, header_path: str, key: bytes, integrity: IntegrityProfile = NO_INTEGRITY
) -> None:
    """Write a fresh LUKS2 header with the pinned layout for ``device`` into the detached
    header image at ``header_path``. Without integrity the device itself is only read; with
    integrity, cryptsetup also formats dm-integrity's superblock at the data offset."""
    layout = LuksLayout
    cryptsetup(
        [
            "luksFormat",
            f"--header={header_path}",
            "--batch-mode",
            "--type=luks2",
            f"--cipher={layout.CIPHER}",
            f"--key-size={layout.KEY_BITS}",
            f"--sector-size={layout.SECTOR_BYTES}",
            f"--hash={layout.HASH}",
            f"--pbkdf={layout.PBKDF}",
            f"--pbkdf-force-iterations={layout.PBKDF_ITERATIONS}",
            f"--luks2-metadata-size={layout.METADATA_BYTES}",
            f"--luks2-keyslots-size={layout.KEYSLOTS_BYTES}",
            f"--offset={layout.DATA_OFFSET_BYTES // 512}",
            *integrity.format_options,
            "--key-file=-",
            device,
        ],
        key=key,
    )


def open_with_detached_header(device: str, header_path: str, name: str, key: bytes) -> None:
    """Map ``device`` as /dev/mapper/NAME using the checked header copy at ``header_path``."""
    result = cryptsetup(
        ["open", "--type=luks2", f"--header={header_path}", "--key-file=-", device, name],
        key=key,
        check=False,
    )
    if result.returncode == _EXIT_NO_KEY:
        raise WrongWorkloadSecret(device)
    if result.returncode != 0:
        raise CryptsetupFailed(
            f"{device}: cryptsetup open failed with exit status {result.returncode}: "
            f"{result.stderr}. The device was not changed; look for device-mapper errors in "
            "the kernel log (dmesg): a device smaller than when the volume was made is "
            "refused there, so restore its size if it shrank"
        )


def close(name: str, *, deferred: bool = False) -> None:
    cryptsetup(["close", *(["--deferred"] if deferred else []), name])


# While it formats dm-integrity (a volume with integrity protection), cryptsetup stacks a
# device of this name on the data device for a moment; a SIGKILL then leaves it behind.
TEMPORARY_DEVICE_PREFIX = "temporary-cryptsetup-"
DMSETUP_PACKAGE = "dmsetup"


def _sysfs_block(path: str | Path) -> Path:
    """The sysfs directory of the block device node ``path``."""
    rdev = os.stat(path).st_rdev
    return Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}").resolve()


def stacked_on(upper: str | Path, device: str, depth: int = 3) -> bool:
    """Whether the device-mapper device ``upper`` sits on ``device``, directly or through
    at most ``depth`` layers (a mapping with integrity: crypt, then dm-integrity)."""
    wanted = _sysfs_block(device).name
    layer = [_sysfs_block(upper)]
    for _ in range(depth):
        below = [slave for block in layer for slave in sorted((block / "slaves").glob("*"))]
        if any(slave.name == wanted for slave in below):
            return True
        layer = [slave.resolve() for slave in below]
    return False


def temporary_devices_on(device: str, sys_block: Path = Path("/sys/block")) -> list[str]:
    """The names of cryptsetup's temporary device-mapper devices stacked on ``device``."""
    kernel_name = _sysfs_block(device).name
    found = []
    for dm in sorted(sys_block.glob("dm-*")):
        try:
            name = (dm / "dm" / "name").read_text().strip()
        except OSError:  # removed while we looked
            continue
        if name.startswith(TEMPORARY_DEVICE_PREFIX) and (dm / "slaves" / kernel_name).exists():
            found.append(name)
    return found


def remove_device(name: str) -> None:
    """Remove a device-mapper device that cryptsetup does not manage (``dmsetup remove``)."""
    binary = require_binary("dmsetup", DMSETUP_PACKAGE)
    try:
        run(
            [binary, "remove", "--noudevsync", name],
            timeout=_TIMEOUT_SECONDS,
            env=_cryptsetup_environment(),
        )
    except CommandError as exc:
        raise CryptsetupFailed(str(exc)) from exc


def mapping_path(name: str) -> Path:
    return Path("/dev/mapper") / name


def kernel_device_number(name: str, sys_block: Path = Path("/sys/block")) -> int | None:
    """The device number of the device-mapper device ``name`` as the kernel knows it, or
    None. Asks sysfs, not /dev: a restarted container has a fresh /dev without the node
    libdevmapper made in the old one, while the mapping lives on in the kernel."""
    for dm in sorted(sys_block.glob("dm-*")):
        try:
            if (dm / "dm" / "name").read_text().strip() != name:
                continue
            major, minor = (dm / "dev").read_text().strip().split(":")
        except (OSError, ValueError):  # removed while we looked
            continue
        return os.makedev(int(major), int(minor))
    return None


def mapping_exists(
    name: str, sys_block: Path = Path("/sys/block"), dev_mapper: Path = Path("/dev/mapper")
) -> bool:
    """Whether the kernel has the mapping NAME; its node in /dev/mapper is made if missing
    (or replaced, if a stale node there names another device)."""
    number = kernel_device_number(name, sys_block)
    if number is None:
        return False
    path = dev_mapper / name
    try:
        try:
            # Followed if it is a symlink (as udev makes them, to ../dm-N).
            node = os.stat(path)
            if stat.S_ISBLK(node.st_mode) and node.st_rdev == number:
                return True
            path.unlink()  # a stale node, or something else under the mapping's name
        except FileNotFoundError:
            if os.path.lexists(path):  # a dangling symlink
                path.unlink()
        dev_mapper.mkdir(parents=True, exist_ok=True)
        os.mknod(path, stat.S_IFBLK | 0o600, number)
    except OSError as exc:
        raise CryptsetupFailed(
            f"the mapping {name} exists in the kernel, but its device node {path} cannot be "
            f"made ({exc.strerror}); the Initializer needs a writable /dev (a privileged "
            "container)"
        ) from None
    return True
