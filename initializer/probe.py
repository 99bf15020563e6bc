"""Deciding what a device holds. "Blank" is proven, never assumed.

A device is blank only when libblkid's low-level probe finds no signature at all (file
systems, LUKS and other crypto containers, RAID members, partition tables, at the start or
the end of the device), the probe itself succeeded, and every byte of the region a format
would overwrite first reads back as zero. Anything else, including an I/O or permission
error while probing, is a reason to refuse, never a reason to format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from contrast.process import CommandError, require_binary, run
from initializer.device import read_region
from initializer.errors import InitializerError
from initializer.luks import LuksLayout

# The format writes the LUKS header and keyslots area, then mkfs writes the first block
# groups: this much of the device must be zeros for "blank" to be proven. Reading it costs
# the same whatever the device size.
ZERO_CHECK_BYTES = LuksLayout.DATA_OFFSET_BYTES + 1024 * 1024
# libblkid also looks for signatures near the device's end (the GPT backup header, MD 0.90
# and 1.0 superblocks, ZFS labels, DDF and vendor RAID anchors): all within its last MiB.
TAIL_CHECK_BYTES = 1024 * 1024

LUKS_MAGIC = b"LUKS\xba\xbe"

# blkid's exit codes in low-level probe mode (blkid(8)).
_BLKID_FOUND = 0
_BLKID_NOTHING = 2
_BLKID_AMBIVALENT = 8


class DeviceNotBlank(InitializerError):
    pass


class ProbeFailed(InitializerError):
    pass


class Contents(enum.Enum):
    BLANK = "blank"
    LUKS2 = "luks2"
    # Only an interrupted first start of the Initializer (its state record says so).
    UNFINISHED = "unfinished-first-start"


@dataclass(frozen=True)
class Probe:
    """What the probe saw: blkid's tags, whether it was ambivalent, the first non-zero byte."""

    tags: dict[str, str]
    ambivalent: bool
    first_nonzero_offset: int | None


_USAGE_NOUNS = {
    "filesystem": "file system",
    "crypto": "encrypted container",
    "raid": "RAID member",
    "other": "signature",
}


def _describe(tags: dict[str, str]) -> str:
    """``ext4 file system (version 1.0, UUID ...)``, ``gpt partition table``, ..."""
    parts = []
    if "TYPE" in tags:
        noun = _USAGE_NOUNS.get(tags.get("USAGE", ""), "signature")
        details = [
            f"{key.lower()} {tags[key]}" for key in ("VERSION", "UUID", "LABEL") if key in tags
        ]
        suffix = f" ({', '.join(details)})" if details else ""
        parts.append(f"{tags['TYPE']} {noun}{suffix}")
    if "PTTYPE" in tags:
        parts.append(f"{tags['PTTYPE']} partition table")
    return " and ".join(parts) if parts else "an unnamed signature"


def classify(device: str, probe: Probe) -> Contents:
    """Decide from a probe whether ``device`` is blank or holds LUKS2; refuse everything else."""
    keep = "The device was left untouched; give the pod a blank volume or restore this one."
    if probe.ambivalent:
        raise DeviceNotBlank(
            f"{device} holds several conflicting signatures ({_describe(probe.tags)}); "
            f"refusing to guess what it is. {keep}"
        )
    if probe.tags.get("TYPE") == "crypto_LUKS":
        if probe.tags.get("VERSION") != "2":
            raise DeviceNotBlank(
                f"{device} holds a LUKS{probe.tags.get('VERSION', '?')} volume, but secure "
                f"PVs are LUKS2. {keep}"
            )
        return Contents.LUKS2
    if probe.tags:
        raise DeviceNotBlank(f"{device} is not blank: found {_describe(probe.tags)}. {keep}")
    if probe.first_nonzero_offset is not None:
        raise DeviceNotBlank(
            f"{device} is not blank: no known signature, but it holds data (a non-zero byte at "
            f"offset {probe.first_nonzero_offset}) where a new volume would be written. {keep}"
        )
    return Contents.BLANK


def probe_luks_magic(start: bytes) -> Probe | None:
    """A probe from the device's first bytes alone when they carry the LUKS magic.

    Our own volumes are recognised without running libblkid (the header check decides about
    them); anything else still goes through the full probe.
    """
    if not start.startswith(LUKS_MAGIC) or len(start) < 8:
        return None
    version = int.from_bytes(start[6:8], "big")
    return Probe(
        tags={"TYPE": "crypto_LUKS", "VERSION": str(version)},
        ambivalent=False,
        first_nonzero_offset=None,
    )


def parse_blkid_export(output: str) -> dict[str, str]:
    tags = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key != "DEVNAME":
            tags[key] = value
    return tags


def first_nonzero(data: bytes) -> int | None:
    stripped = data.lstrip(b"\0")
    return None if not stripped else len(data) - len(stripped)


def blkid_signatures(device: str) -> tuple[dict[str, str], bool]:
    """libblkid's low-level probe of ``device``: (tags, ambivalent). Raises ProbeFailed."""
    blkid = require_binary("blkid", "util-linux")
    try:
        result = run(
            [blkid, "--probe", "--output", "export", device],
            timeout=30,
            ok_returncodes=(_BLKID_FOUND, _BLKID_NOTHING, _BLKID_AMBIVALENT),
        )
    except CommandError as exc:
        raise ProbeFailed(
            f"{device}: probing for existing data failed, so the device is not formatted: {exc}"
        ) from exc
    tags = parse_blkid_export(result.stdout.decode(errors="replace"))
    return tags, result.returncode == _BLKID_AMBIVALENT


def tail_region(size_bytes: int) -> tuple[int, int]:
    """(offset, length) of the device's end that libblkid probes, clipped to the device."""
    length = min(TAIL_CHECK_BYTES, size_bytes)
    return size_bytes - length, length


def probe_device(device: str, size_bytes: int) -> Probe:
    tags, ambivalent = blkid_signatures(device)
    nonzero = None
    if not tags and not ambivalent:
        # "Nothing found" from blkid proves nothing on its own: blkid exits 2 ("nothing")
        # also when its reads fail (util-linux 2.38 maps every probe error to "nothing"), so
        # a device that returns I/O errors would look blank. Reading both ends ourselves
        # turns an unreadable region that blkid probes into a DeviceError.
        region = read_region(device, 0, min(ZERO_CHECK_BYTES, size_bytes))
        nonzero = first_nonzero(region)
        read_region(device, *tail_region(size_bytes))
    return Probe(tags=tags, ambivalent=ambivalent, first_nonzero_offset=nonzero)
