"""Parse a LUKS2 header and check it against exactly what this project writes. Pure: bytes in.

The header sits on a device the storage provider controls, so it is attacker input. A forged
header can use ``cipher_null``, a weaker cipher, an extra keyslot or segment, tokens, or a
reencryption requirement, so that the guest "unlocks" a volume whose data is plaintext or
under a key the attacker knows (CVE-2025-59054, CVE-2025-58356). The defence: read the header
into private memory once, check every field here against the pinned layout in
``initializer.luks`` (an allow-list, not a deny-list), and open the device with that same
detached copy, so that nothing can change between check and use.

On-disk format: https://gitlab.com/cryptsetup/LUKS2-docs (luks2_doc_wip.pdf). Two copies of
a 4096-byte binary header, each followed by its JSON area, then the keyslots area, then the
data segment.

Allow-list, field by field: the only header accepted is one equal to what ``luks_format``
writes, except for the values that are random per format (UUID, binary-header salts,
checksums, keyslot and digest salts, the digest, the digest's benchmarked iteration count
within bounds, the sequence ID within bounds). Both copies must agree byte for byte in their
JSON and in every binary field but magic, offset, salt and checksum. Every value has one
spelling: canonical decimal strings, canonical base64, JSON integers that are integers, no
duplicate keys, zero padding, nothing after a NUL terminator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from initializer.errors import InitializerError
from initializer.luks import NO_INTEGRITY, IntegrityProfile, LuksLayout

BINARY_HEADER_BYTES = 4096
# Both metadata copies: all of the header that is metadata rather than key material.
METADATA_AREA_BYTES = 2 * LuksLayout.METADATA_BYTES
PRIMARY_MAGIC = b"LUKS\xba\xbe"
SECONDARY_MAGIC = b"SKUL\xba\xbe"
# Layout of the binary header (big-endian): magic, version, hdr_size, seqid, label,
# checksum_alg, salt, uuid, subsystem, hdr_offset, padding, csum, padding.
_BINARY = struct.Struct(">6sHQQ48s32s64s40s48sQ184s64s3584s")
assert _BINARY.size == BINARY_HEADER_BYTES
_CSUM_OFFSET = 448
_CSUM_BYTES = 64
# cryptsetup puts keyslot 0's area at the start of the keyslots area, right after both
# metadata copies, sized for the AF-split key rounded up to 4 KiB.
KEYSLOT_AREA_OFFSET = 2 * LuksLayout.METADATA_BYTES


def keyslot_area_bytes(integrity: IntegrityProfile) -> int:
    """Where cryptsetup puts keyslot 0's anti-forensic stripes: the volume key times the
    stripes, rounded up to 4 KiB."""
    return -(-integrity.volume_key_bytes * LuksLayout.AF_STRIPES // 4096) * 4096


# The header is written once, by luksFormat (cryptsetup 2.6 leaves sequence ID 3), and never
# updated. Far above what a format writes, far below 2^64: a value near the top is a game
# with the counter's overflow, not something this project wrote.
MAX_SEQUENCE_ID = 1 << 16
# The deepest nesting of the pinned JSON is 4 (metadata, keyslots, "0", area); anything much
# deeper is not ours, and must not reach code that recurses over it.
_MAX_JSON_DEPTH = 8
# libuuid's canonical text form, which cryptsetup writes when no --uuid is given.
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# The keyslots area before the state record took its last 4 KiB (the project's first layout).
LEGACY_KEYSLOTS_BYTES = LuksLayout.DATA_OFFSET_BYTES - 2 * LuksLayout.METADATA_BYTES


class HeaderRejected(InitializerError):
    """The LUKS2 header differs from what this project writes; the device is not opened."""

    def __init__(self, device: str, problems: list[str]):
        self.problems = problems
        listed = "; ".join(problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        super().__init__(
            f"{device}: the LUKS2 header does not match the parameters this Initializer writes, "
            f"so it was not opened and not changed: {listed}{more}. It may have been forged "
            "by the storage provider or written by another tool; restore the volume from a "
            "trusted backup or give the pod a blank device."
        )


@dataclass(frozen=True)
class BinaryHeader:
    magic: bytes
    version: int
    header_size: int
    sequence_id: int
    label: bytes
    checksum_algorithm: bytes
    uuid: bytes
    subsystem: bytes
    header_offset: int
    checksum: bytes
    # The raw fixed-size fields, so that bytes after a NUL terminator are checked too.
    checksum_algorithm_field: bytes
    uuid_field: bytes
    padding: bytes


@dataclass(frozen=True)
class CheckedHeader:
    """A header that passed every check; the facts the Initializer uses afterwards."""

    uuid: str
    sequence_id: int
    data_offset: int
    keyslot_area_offset: int
    keyslot_area_size: int


def _cstring(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def parse_binary_header(raw: bytes) -> BinaryHeader:
    fields = _BINARY.unpack(raw[:BINARY_HEADER_BYTES])
    return BinaryHeader(
        magic=fields[0],
        version=fields[1],
        header_size=fields[2],
        sequence_id=fields[3],
        label=fields[4],
        checksum_algorithm=_cstring(fields[5]),
        uuid=_cstring(fields[7]),
        subsystem=fields[8],
        header_offset=fields[9],
        checksum=fields[11],
        checksum_algorithm_field=fields[5],
        uuid_field=fields[7],
        padding=fields[10] + fields[12],
    )


def header_checksum(area: bytes) -> bytes:
    """SHA-256 over the binary header and JSON area with the checksum field zeroed."""
    zeroed = area[:_CSUM_OFFSET] + bytes(_CSUM_BYTES) + area[_CSUM_OFFSET + _CSUM_BYTES :]
    return hashlib.sha256(zeroed).digest()


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate JSON key '{_key(key)}'")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile value can be deep)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > _MAX_JSON_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


# How many of an object's key names a message lists.
_LISTED_KEYS = 8


def _key(key: str) -> str:
    """A JSON key name for a message: escaped (repr without quotes) and bounded."""
    text = repr(key)[1:-1]
    return text if len(text) <= 60 else text[:60] + "..."


def _show(value: object, limit: int = 60) -> str:
    """A bounded repr for error messages: attacker values may be long or hold control bytes."""
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def parse_json_area(area: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata of one copy and its exact text; raises ValueError when malformed."""
    end = area.find(b"\0")
    if end < 0:
        raise ValueError("JSON area is not NUL-terminated")
    if any(area[end:]):
        raise ValueError("JSON area has bytes after its terminating NUL")
    text = area[:end]
    metadata = json.loads(
        text.decode("utf-8"),
        object_pairs_hook=_reject_duplicate_keys,
        parse_constant=_reject_constant,
    )
    if not isinstance(metadata, dict):
        raise ValueError("JSON metadata is not an object")
    if _depth(metadata) > _MAX_JSON_DEPTH:
        raise ValueError(f"JSON metadata is nested deeper than {_MAX_JSON_DEPTH} levels")
    return metadata, text


class _Checker:
    """Collects every difference, so one error message names all that is wrong at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def equal(self, where: str, actual: object, expected: object) -> None:
        if type(actual) is not type(expected) or actual != expected:
            shown = _show(actual) if not isinstance(actual, list) else _show_list(actual)
            self.fail(f"{where} is {shown}, expected {expected!r}")

    def keys(self, where: str, obj: object, required: set[str]) -> dict[str, Any] | None:
        if not isinstance(obj, dict):
            self.fail(f"{where} is not an object")
            return None
        missing = sorted(required - obj.keys())
        unknown = sorted(obj.keys() - required)
        # repr: key names come from the attacker and must not reach the log verbatim.
        if missing:
            self.fail(f"{where} lacks {', '.join(missing)}")
        if unknown:
            listed = ", ".join(_key(k) for k in unknown[:_LISTED_KEYS])
            more = " ..." if len(unknown) > _LISTED_KEYS else ""
            self.fail(f"{where} has unexpected {listed}{more}")
        return obj

    def decimal(self, where: str, value: object) -> int | None:
        """LUKS2 stores 64-bit sizes and offsets as decimal strings, canonical ones only."""
        # LUKS2 values are 64-bit: at most 20 digits (and Python refuses int() of huge ones).
        # Only the form cryptsetup writes: no sign, spaces, leading zeros, hex or exponent,
        # so that no two strings stand for the same number.
        if (
            not isinstance(value, str)
            or not value.isascii()
            or not value.isdigit()
            or len(value) > 20
            or str(int(value)) != value
            or int(value) >= 1 << 64
        ):
            self.fail(f"{where} is {_show(value)}, expected a canonical decimal string")
            return None
        return int(value)

    def base64_bytes(self, where: str, value: object, length: int) -> None:
        if not isinstance(value, str):
            self.fail(f"{where} is not a string")
            return
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.fail(f"{where} is not valid base64")
            return
        if len(decoded) != length:
            self.fail(f"{where} has {len(decoded)} bytes, expected {length}")
        elif base64.b64encode(decoded).decode() != value:
            # Stray bits in the last character: another spelling of the same bytes.
            self.fail(f"{where} is not canonical base64")

    def integer_in(self, where: str, value: object, low: int, high: int) -> None:
        if type(value) is not int or not low <= value <= high:
            self.fail(f"{where} is {_show(value)}, expected an integer from {low} to {high}")


def _show_list(values: list[Any]) -> str:
    if len(values) <= 4 and all(isinstance(v, str | int) for v in values):
        text = repr(values)
        return text if len(text) <= 60 else text[:60] + "..."
    return f"a list of {len(values)} items"


def _check_binary(
    check: _Checker, copy: str, header: BinaryHeader, magic: bytes, offset: int, area: bytes
) -> None:
    layout = LuksLayout
    check.equal(f"{copy} header magic", header.magic, magic)
    check.equal(f"{copy} header version", header.version, 2)
    check.equal(f"{copy} header size", header.header_size, layout.METADATA_BYTES)
    check.equal(f"{copy} header offset", header.header_offset, offset)
    check.equal(f"{copy} checksum algorithm", header.checksum_algorithm, b"sha256")
    if any(header.checksum_algorithm_field[len(header.checksum_algorithm) :]):
        check.fail(f"{copy} checksum algorithm field has bytes after its terminating NUL")
    if not 1 <= header.sequence_id <= MAX_SEQUENCE_ID:
        check.fail(
            f"{copy} header sequence ID is {header.sequence_id}, expected 1 to {MAX_SEQUENCE_ID}"
        )
    if _UUID.fullmatch(header.uuid) is None or any(header.uuid_field[len(header.uuid) :]):
        check.fail(
            f"{copy} header UUID is {_show(header.uuid_field.rstrip(bytes(1)))}, "
            "expected a lowercase canonical UUID"
        )
    if any(header.padding):
        check.fail(f"{copy} header has non-zero padding")
    if any(header.label):
        check.fail(f"{copy} header has a label; this project writes none")
    if any(header.subsystem):
        check.fail(f"{copy} header has a subsystem; this project writes none")
    if (
        header.checksum_algorithm == b"sha256"
        and len(area) == layout.METADATA_BYTES
        and (header_checksum(area) != header.checksum[:32] or any(header.checksum[32:]))
    ):
        check.fail(f"{copy} header checksum does not match its contents")


def _check_segment_integrity(
    check: _Checker, segment: dict[str, Any], integrity: IntegrityProfile
) -> None:
    """The segment's integrity must be exactly the one configured for this start.

    Both directions matter: a header without integrity on a volume configured with it would
    let the provider downgrade the volume to malleable XTS by swapping the header (the
    keyslot holds only the XTS part of the key then, and the data area is re-encrypted under
    a key the guest derives itself, so nothing else notices); one with integrity on a volume
    configured without it is a volume this configuration did not make.
    """
    present = "integrity" in segment
    if integrity.segment_integrity is None:
        if present:
            check.fail(
                "segment 0 has integrity protection "
                f"{_kind(segment['integrity'])}, but this Initializer is configured with "
                "integrity none: start it with the integrity setting the volume was "
                "formatted with"
            )
        return
    if not present:
        check.fail(
            "segment 0 has no integrity protection, but this Initializer is configured with "
            f"integrity {integrity.name}; a header without it is refused so that the "
            "storage provider cannot downgrade the volume by swapping the header"
        )
        return
    config = check.keys(
        "segment 0 integrity",
        segment["integrity"],
        {"type", "journal_encryption", "journal_integrity"},
    )
    if config is not None:
        check.equal("segment 0 integrity type", config.get("type"), integrity.segment_integrity)
        check.equal(
            "segment 0 integrity journal_encryption", config.get("journal_encryption"), "none"
        )
        check.equal(
            "segment 0 integrity journal_integrity", config.get("journal_integrity"), "none"
        )


def _kind(value: object) -> str:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return repr(value["type"])[:40]
    return "of an unknown kind"


def _check_metadata(
    check: _Checker, metadata: dict[str, Any], device_bytes: int, integrity: IntegrityProfile
) -> int | None:
    """Check the JSON against the pinned layout; return the data segment's offset if sane."""
    layout = LuksLayout
    root = check.keys("metadata", metadata, {"keyslots", "tokens", "segments", "digests", "config"})
    if root is None:
        return None

    tokens = root.get("tokens")
    if isinstance(tokens, dict) and tokens:
        check.fail(f"tokens {_names(tokens)} are present; this project writes none")
    elif not isinstance(tokens, dict):
        check.fail("tokens is not an object")

    config = check.keys("config", root.get("config"), {"json_size", "keyslots_size"})
    if config is not None:
        json_size = check.decimal("config.json_size", config.get("json_size"))
        if json_size is not None:
            check.equal("config.json_size", json_size, layout.METADATA_BYTES - 4096)
        keyslots_size = check.decimal("config.keyslots_size", config.get("keyslots_size"))
        if keyslots_size == LEGACY_KEYSLOTS_BYTES:
            check.fail(
                f"config.keyslots_size is {LEGACY_KEYSLOTS_BYTES}, cryptsetup's default and "
                "the layout of Initializers from before the first-start state record (which "
                "lies in the last 4 KiB of that area); this Initializer does not open such "
                "volumes: if an earlier Initializer made it, copy the data to a new volume "
                "with that Initializer"
            )
        elif keyslots_size is not None:
            check.equal("config.keyslots_size", keyslots_size, layout.KEYSLOTS_BYTES)
    # "flags" and "requirements" (for example online-reencrypt) are rejected above as
    # unexpected keys of config: this project never sets them.

    data_offset = None
    segments = root.get("segments")
    if not isinstance(segments, dict) or list(segments) != ["0"]:
        check.fail(f"segments are {_names(segments)}, expected exactly one segment '0'")
    else:
        segment_keys = {"type", "offset", "size", "iv_tweak", "encryption", "sector_size"}
        if isinstance(segments["0"], dict) and "integrity" in segments["0"]:
            segment_keys.add("integrity")
        segment = check.keys("segment 0", segments["0"], segment_keys)
        if segment is not None:
            _check_segment_integrity(check, segment, integrity)
            check.equal("segment 0 type", segment.get("type"), "crypt")
            check.equal("segment 0 encryption", segment.get("encryption"), layout.CIPHER)
            check.equal("segment 0 sector_size", segment.get("sector_size"), layout.SECTOR_BYTES)
            check.equal("segment 0 size", segment.get("size"), "dynamic")
            check.equal("segment 0 iv_tweak", segment.get("iv_tweak"), "0")
            offset = check.decimal("segment 0 offset", segment.get("offset"))
            if offset is not None:
                check.equal("segment 0 offset", offset, layout.DATA_OFFSET_BYTES)
                if offset >= device_bytes:
                    check.fail(f"segment 0 offset {offset} lies beyond the device end")
                else:
                    data_offset = offset

    keyslots = root.get("keyslots")
    if not isinstance(keyslots, dict) or list(keyslots) != ["0"]:
        check.fail(f"keyslots are {_names(keyslots)}, expected exactly one keyslot '0'")
    else:
        _check_keyslot(check, keyslots["0"], integrity)

    digests = root.get("digests")
    if not isinstance(digests, dict) or list(digests) != ["0"]:
        check.fail(f"digests are {_names(digests)}, expected exactly one digest '0'")
    else:
        digest = check.keys(
            "digest 0",
            digests["0"],
            {"type", "keyslots", "segments", "hash", "iterations", "salt", "digest"},
        )
        if digest is not None:
            check.equal("digest 0 type", digest.get("type"), "pbkdf2")
            check.equal("digest 0 keyslots", digest.get("keyslots"), ["0"])
            check.equal("digest 0 segments", digest.get("segments"), ["0"])
            check.equal("digest 0 hash", digest.get("hash"), layout.HASH)
            check.integer_in(
                "digest 0 iterations",
                digest.get("iterations"),
                layout.PBKDF_ITERATIONS,
                layout.MAX_DIGEST_ITERATIONS,
            )
            check.base64_bytes("digest 0 salt", digest.get("salt"), 32)
            check.base64_bytes("digest 0 digest", digest.get("digest"), 32)
    return data_offset if not check.problems else None


def _check_keyslot(check: _Checker, slot: object, integrity: IntegrityProfile) -> None:
    layout = LuksLayout
    keyslot = check.keys("keyslot 0", slot, {"type", "key_size", "af", "area", "kdf"})
    if keyslot is None:
        return
    check.equal("keyslot 0 type", keyslot.get("type"), "luks2")
    # The volume key; the keyslot area's own cipher key below stays the XTS size.
    check.equal("keyslot 0 key_size", keyslot.get("key_size"), integrity.volume_key_bytes)

    af = check.keys("keyslot 0 af", keyslot.get("af"), {"type", "stripes", "hash"})
    if af is not None:
        check.equal("keyslot 0 af type", af.get("type"), "luks1")
        check.equal("keyslot 0 af stripes", af.get("stripes"), layout.AF_STRIPES)
        check.equal("keyslot 0 af hash", af.get("hash"), layout.HASH)

    area = check.keys(
        "keyslot 0 area", keyslot.get("area"), {"type", "offset", "size", "encryption", "key_size"}
    )
    if area is not None:
        check.equal("keyslot 0 area type", area.get("type"), "raw")
        check.equal("keyslot 0 area encryption", area.get("encryption"), layout.CIPHER)
        check.equal("keyslot 0 area key_size", area.get("key_size"), layout.KEY_BYTES)
        # Exactly where cryptsetup puts it: right after both metadata copies, sized for the
        # AF-split key. Anything else could overlap the metadata, the data segment or (once
        # there are several) another keyslot, or leave room for material that is not ours.
        offset = check.decimal("keyslot 0 area offset", area.get("offset"))
        if offset is not None:
            check.equal("keyslot 0 area offset", offset, KEYSLOT_AREA_OFFSET)
        size = check.decimal("keyslot 0 area size", area.get("size"))
        if size is not None:
            check.equal("keyslot 0 area size", size, keyslot_area_bytes(integrity))

    kdf = check.keys("keyslot 0 kdf", keyslot.get("kdf"), {"type", "hash", "iterations", "salt"})
    if kdf is not None:
        check.equal("keyslot 0 kdf type", kdf.get("type"), layout.PBKDF)
        check.equal("keyslot 0 kdf hash", kdf.get("hash"), layout.HASH)
        check.equal("keyslot 0 kdf iterations", kdf.get("iterations"), layout.PBKDF_ITERATIONS)
        check.base64_bytes("keyslot 0 kdf salt", kdf.get("salt"), 32)


def _names(obj: object) -> str:
    """An object's key names for a message, as a list: each escaped and shortened by
    ``_key``, and only the first few, since a forged object can have hundreds of keys."""
    if not isinstance(obj, dict):
        return "not an object"
    names = sorted(obj)
    listed = ", ".join(f"'{_key(name)}'" for name in names[:_LISTED_KEYS])
    more = f", ... {len(names) - _LISTED_KEYS} more" if len(names) > _LISTED_KEYS else ""
    return f"[{listed}{more}]"


def check_header(
    device: str, raw: bytes, device_bytes: int, integrity: IntegrityProfile = NO_INTEGRITY
) -> CheckedHeader:
    """Check both metadata copies in ``raw`` (the device's first bytes) and return the facts.

    ``raw`` must hold both metadata copies (``METADATA_AREA_BYTES``); more is ignored.
    ``integrity`` is the profile configured for this start: the header must match it exactly.
    Raises HeaderRejected naming every field that differs from the pinned layout; returns
    only when the header is exactly one this project would have written.
    """
    layout = LuksLayout
    check = _Checker()
    size = layout.METADATA_BYTES
    if len(raw) < 2 * size:
        raise HeaderRejected(device, [f"header is truncated to {len(raw)} bytes"])
    copies = []
    for copy, magic, offset in (
        ("primary", PRIMARY_MAGIC, 0),
        ("secondary", SECONDARY_MAGIC, size),
    ):
        area = raw[offset : offset + size]
        binary = parse_binary_header(area)
        _check_binary(check, copy, binary, magic, offset, area)
        try:
            metadata, text = parse_json_area(area[BINARY_HEADER_BYTES:])
        except (ValueError, UnicodeDecodeError) as exc:
            check.fail(f"{copy} JSON metadata is malformed: {exc}")
            continue
        except RecursionError:
            check.fail(f"{copy} JSON metadata is nested too deeply")
            continue
        copies.append((binary, metadata, text))
    if check.problems:
        raise HeaderRejected(device, check.problems)

    (primary, metadata, text), (secondary, _, secondary_text) = copies
    if secondary_text != text:
        check.fail("the two metadata copies hold different JSON")
    if secondary.sequence_id != primary.sequence_id:
        check.fail(
            f"the metadata copies have sequence IDs {primary.sequence_id} and "
            f"{secondary.sequence_id}; this project always writes both together"
        )
    if secondary.uuid_field != primary.uuid_field:
        check.fail("the two metadata copies name different UUIDs")
    data_offset = _check_metadata(check, metadata, device_bytes, integrity)
    if check.problems or data_offset is None:
        raise HeaderRejected(device, check.problems)
    area = metadata["keyslots"]["0"]["area"]
    return CheckedHeader(
        uuid=primary.uuid.decode("ascii", errors="replace"),
        sequence_id=primary.sequence_id,
        data_offset=data_offset,
        keyslot_area_offset=int(area["offset"]),
        keyslot_area_size=int(area["size"]),
    )
