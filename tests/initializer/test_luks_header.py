"""The header check against real headers from the real cryptsetup, and forged variants.

Every forged variant has valid checksums, so cryptsetup itself would load it: the check in
initializer.luks_header is what stands between it and an unlock.
"""

from __future__ import annotations

import copy
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from initializer import luks
from initializer.luks_header import (
    KEYSLOT_AREA_OFFSET,
    MAX_SEQUENCE_ID,
    HeaderRejected,
    check_header,
    keyslot_area_bytes,
)
from tests.initializer import forge

DEVICE_BYTES = 64 * 1024 * 1024
NAME = "/dev/test"


def rejected(raw: bytes, device_bytes: int = DEVICE_BYTES) -> str:
    with pytest.raises(HeaderRejected) as error:
        check_header(NAME, raw, device_bytes)
    return str(error.value)


def test_header_written_by_this_project_passes(pristine_header: bytes) -> None:
    checked = check_header(NAME, pristine_header, DEVICE_BYTES)
    assert checked.data_offset == luks.LuksLayout.DATA_OFFSET_BYTES
    assert checked.sequence_id > 0


def test_resealed_but_unchanged_header_still_passes(pristine_header: bytes) -> None:
    # Guards the forging helper itself: a re-serialised, re-sealed header is accepted, so
    # each rejection below is caused by its one change.
    check_header(NAME, forge.with_json(pristine_header, lambda metadata: None), DEVICE_BYTES)


FORGERIES: dict[str, tuple[Any, str]] = {
    "cipher_null segment": (
        lambda m: m["segments"]["0"].update(encryption="cipher_null-ecb"),
        "segment 0 encryption is 'cipher_null-ecb'",
    ),
    "cipher_null keyslot area": (
        lambda m: m["keyslots"]["0"]["area"].update(encryption="cipher_null-ecb"),
        "keyslot 0 area encryption is 'cipher_null-ecb'",
    ),
    "weaker segment cipher": (
        lambda m: m["segments"]["0"].update(encryption="aes-cbc-essiv:sha256"),
        "segment 0 encryption is 'aes-cbc-essiv:sha256'",
    ),
    "smaller key": (
        lambda m: m["keyslots"]["0"].update(key_size=32),
        "keyslot 0 key_size is 32, expected 64",
    ),
    "512-byte sectors": (
        lambda m: m["segments"]["0"].update(sector_size=512),
        "segment 0 sector_size is 512",
    ),
    "extra keyslot": (
        lambda m: m["keyslots"].update({"1": copy.deepcopy(m["keyslots"]["0"])}),
        "expected exactly one keyslot",
    ),
    "extra segment": (
        lambda m: m["segments"].update({"1": copy.deepcopy(m["segments"]["0"])}),
        "expected exactly one segment",
    ),
    "extra digest": (
        lambda m: m["digests"].update({"1": copy.deepcopy(m["digests"]["0"])}),
        "expected exactly one digest",
    ),
    "token": (
        lambda m: m["tokens"].update({"0": {"type": "systemd-tpm2", "keyslots": ["0"]}}),
        "tokens ['0'] are present",
    ),
    "reencryption requirement": (
        lambda m: m["config"].update(requirements={"mandatory": ["online-reencrypt-v2"]}),
        "config has unexpected requirements",
    ),
    "config flags": (
        lambda m: m["config"].update(flags=["allow-discards"]),
        "config has unexpected flags",
    ),
    "unknown top-level key": (
        lambda m: m.update(backdoor={}),
        "metadata has unexpected backdoor",
    ),
    "argon2id keyslot": (
        lambda m: m["keyslots"]["0"].update(
            kdf={
                "type": "argon2id",
                "time": 4,
                "memory": 1048576,
                "cpus": 4,
                "salt": m["keyslots"]["0"]["kdf"]["salt"],
            }
        ),
        "keyslot 0 kdf has unexpected cpus, memory, time",
    ),
    "keyslot area inside the data segment": (
        lambda m: m["keyslots"]["0"]["area"].update(offset=str(16 * 1024 * 1024)),
        "keyslot 0 area offset is 16777216, expected",
    ),
    "keyslot area over the metadata": (
        lambda m: m["keyslots"]["0"]["area"].update(offset="4096"),
        "keyslot 0 area offset is 4096, expected",
    ),
    "data segment moved": (
        lambda m: m["segments"]["0"].update(offset="1048576"),
        "segment 0 offset is 1048576",
    ),
    "fixed segment size": (
        lambda m: m["segments"]["0"].update(size="4096"),
        "segment 0 size is '4096'",
    ),
    "integrity added": (
        lambda m: m["segments"]["0"].update(integrity={"type": "hmac(sha256)"}),
        "segment 0 has integrity protection 'hmac(sha256)', but this Initializer is "
        "configured with integrity none",
    ),
    "absurd digest iterations": (
        lambda m: m["digests"]["0"].update(iterations=4_000_000_000),
        "digest 0 iterations is 4000000000",
    ),
    "digest bound to no segment": (
        lambda m: m["digests"]["0"].update(segments=[]),
        "digest 0 segments is []",
    ),
    "offset that is not a decimal string": (
        lambda m: m["segments"]["0"].update(offset=16777216),
        "segment 0 offset is 16777216, expected a canonical decimal string",
    ),
    "salt that is not base64": (
        lambda m: m["digests"]["0"].update(salt="***"),
        "digest 0 salt is not valid base64",
    ),
}


@pytest.mark.parametrize("case", FORGERIES, ids=list(FORGERIES))
def test_forged_header_is_rejected_naming_what_differs(pristine_header: bytes, case: str) -> None:
    change, message = FORGERIES[case]
    assert message in rejected(forge.with_json(pristine_header, change))


def test_segment_beyond_the_device_end_is_rejected(pristine_header: bytes) -> None:
    assert "beyond the device end" in rejected(pristine_header, device_bytes=8 * 1024 * 1024)


def test_duplicate_json_keys_are_rejected(pristine_header: bytes) -> None:
    body = json.dumps(forge.json_of(pristine_header)).encode()
    # A second "keyslots" key ahead of the real one: parsers disagree on which one wins.
    duplicated = b'{"keyslots": {}, ' + body[1:]
    forged = forge.with_json_text(pristine_header, duplicated)
    assert "duplicate JSON key 'keyslots'" in rejected(forged)


def test_json_without_terminating_nul_is_rejected(pristine_header: bytes) -> None:
    area = forge.SIZE - 4096
    forged = forge.with_json_text(pristine_header, b" " * (area - 1))
    data = bytearray(forged)
    for name, offset in forge.COPIES.items():
        data[offset + forge.SIZE - 1] = ord(" ")
        forge.reseal(data, name)
    assert "not NUL-terminated" in rejected(bytes(data))


def test_flipped_byte_without_resealing_fails_the_checksum(pristine_header: bytes) -> None:
    data = bytearray(pristine_header)
    data[4096 + 10] ^= 0x01
    assert "primary header checksum does not match" in rejected(bytes(data))


def test_secondary_copy_that_disagrees_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_json(
        pristine_header,
        lambda m: m["segments"]["0"].update(iv_tweak="0"),  # same content, other serialisation
        copies=("secondary",),
    )
    assert "the two metadata copies hold different JSON" in rejected(forged)


def test_sequence_id_game_between_the_copies_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_sequence_id(pristine_header, "secondary", 999)
    assert "sequence IDs" in rejected(forged)


def test_label_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_binary_field(pristine_header, "primary", 24, b"evil")
    assert "primary header has a label" in rejected(forged)


def test_luks1_magic_version_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_binary_field(pristine_header, "primary", 6, b"\x00\x01")
    assert "primary header version is 1, expected 2" in rejected(forged)


def test_truncated_header_is_rejected(pristine_header: bytes) -> None:
    assert "truncated" in rejected(pristine_header[:20000])


def test_zeroed_header_is_rejected(pristine_header: bytes) -> None:
    assert "magic" in rejected(bytes(len(pristine_header)))


def real_cryptsetup(image: Path, *args: str, key: bytes) -> None:
    subprocess.run(
        ["cryptsetup", *args, "--key-file=-", str(image)],
        input=key,
        check=True,
        capture_output=True,
    )


def header_of(image: Path) -> bytes:
    with image.open("rb") as data:
        return data.read(luks.LuksLayout.DATA_OFFSET_BYTES)


def copy_of(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def test_header_with_cryptsetup_defaults_is_rejected(tmp_path: Path) -> None:
    image = tmp_path / "defaults.img"
    with image.open("wb") as data:
        data.truncate(DEVICE_BYTES)
    # cryptsetup's defaults (argon2id), with a short benchmark time to keep the test quick.
    real_cryptsetup(
        image, "luksFormat", "--batch-mode", "--type=luks2", "--iter-time=50", key=b"k" * 32
    )
    assert "keyslot 0 kdf type is 'argon2id', expected 'pbkdf2'" in rejected(header_of(image))


def test_keyslot_added_by_cryptsetup_is_rejected(
    tmp_path: Path, passphrase: bytes, luks_image: Path
) -> None:
    image = copy_of(luks_image, tmp_path / "two-slots.img")
    existing = tmp_path / "existing.key"
    existing.write_bytes(passphrase)
    added = tmp_path / "added.key"
    added.write_bytes(b"the attacker's own passphrase")
    subprocess.run(
        [
            "cryptsetup",
            "luksAddKey",
            "--batch-mode",
            "--pbkdf=pbkdf2",
            "--pbkdf-force-iterations=1000",
            f"--key-file={existing}",
            str(image),
            str(added),
        ],
        check=True,
        capture_output=True,
    )
    assert "expected exactly one keyslot" in rejected(header_of(image))


def test_token_imported_by_cryptsetup_is_rejected(tmp_path: Path, luks_image: Path) -> None:
    image = copy_of(luks_image, tmp_path / "token.img")
    token = b'{"type":"contrast-test","keyslots":["0"]}'
    subprocess.run(
        ["cryptsetup", "token", "import", str(image)], input=token, check=True, capture_output=True
    )
    assert "tokens ['0'] are present" in rejected(header_of(image))


def test_deeply_nested_json_is_rejected_not_a_crash(pristine_header: bytes) -> None:
    forged = forge.with_json_text(pristine_header, b"[" * 5000 + b"]" * 5000)
    assert "nested too deeply" in rejected(forged)


def test_huge_decimal_string_is_rejected_not_a_crash(pristine_header: bytes) -> None:
    forged = forge.with_json(
        pristine_header, lambda m: m["segments"]["0"].update(offset="9" * 5000)
    )
    assert "segment 0 offset" in rejected(forged)


def test_attacker_key_names_cannot_carry_control_characters_into_the_error(
    pristine_header: bytes,
) -> None:
    key = "\nts=x level=info component=initializer event=ready\x1b[0m"
    message = rejected(forge.with_json(pristine_header, lambda m: m["config"].update({key: 1})))
    assert "\n" not in message and "\x1b" not in message
    assert "\\nts=x" in message


# --- Every field an attacker could bend, one test each -----------------------------------

LAYOUT = luks.LuksLayout
AREA_OFFSET = KEYSLOT_AREA_OFFSET
AREA_BYTES = keyslot_area_bytes(luks.NO_INTEGRITY)
U64_MAX = (1 << 64) - 1


def area(m: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = m["keyslots"]["0"]["area"]
    return result


KEYSLOT_AREA_FORGERIES: dict[str, tuple[Any, str]] = {
    "over the primary metadata": (
        lambda m: area(m).update(offset="0"),
        f"keyslot 0 area offset is 0, expected {AREA_OFFSET}",
    ),
    "over the secondary metadata": (
        lambda m: area(m).update(offset=str(LAYOUT.METADATA_BYTES)),
        f"keyslot 0 area offset is {LAYOUT.METADATA_BYTES}, expected {AREA_OFFSET}",
    ),
    "moved inside the keyslots area": (
        lambda m: area(m).update(offset=str(AREA_OFFSET + 4096)),
        f"keyslot 0 area offset is {AREA_OFFSET + 4096}, expected {AREA_OFFSET}",
    ),
    "reaching into the data segment": (
        lambda m: area(m).update(offset=str(LAYOUT.DATA_OFFSET_BYTES - 4096)),
        f"keyslot 0 area offset is {LAYOUT.DATA_OFFSET_BYTES - 4096}",
    ),
    "beyond the device": (
        lambda m: area(m).update(offset=str(U64_MAX - 4096)),
        f"keyslot 0 area offset is {U64_MAX - 4096}",
    ),
    "grown over the whole keyslots area": (
        lambda m: area(m).update(size=str(LAYOUT.KEYSLOTS_BYTES)),
        f"keyslot 0 area size is {LAYOUT.KEYSLOTS_BYTES}, expected {AREA_BYTES}",
    ),
    "grown into the data segment": (
        lambda m: area(m).update(size=str(LAYOUT.DATA_OFFSET_BYTES)),
        f"keyslot 0 area size is {LAYOUT.DATA_OFFSET_BYTES}, expected {AREA_BYTES}",
    ),
    "shrunk below the AF-split key": (
        lambda m: area(m).update(size="4096"),
        f"keyslot 0 area size is 4096, expected {AREA_BYTES}",
    ),
    "of size zero": (
        lambda m: area(m).update(size="0"),
        f"keyslot 0 area size is 0, expected {AREA_BYTES}",
    ),
    "wrapping around 2^64": (
        lambda m: area(m).update(size=str(U64_MAX)),
        f"keyslot 0 area size is {U64_MAX}, expected {AREA_BYTES}",
    ),
    "a second keyslot overlapping the first": (
        lambda m: m["keyslots"].update({"1": copy.deepcopy(m["keyslots"]["0"])}),
        "keyslots are ['0', '1'], expected exactly one keyslot '0'",
    ),
    "a second keyslot just after the first": (
        lambda m: m["keyslots"].update(
            {
                "1": copy.deepcopy(m["keyslots"]["0"])
                | {"area": area(m) | {"offset": str(AREA_OFFSET + AREA_BYTES)}}
            }
        ),
        "keyslots are ['0', '1'], expected exactly one keyslot '0'",
    ),
}


@pytest.mark.parametrize("case", KEYSLOT_AREA_FORGERIES, ids=list(KEYSLOT_AREA_FORGERIES))
def test_keyslot_area_anywhere_but_the_pinned_place_is_rejected(
    pristine_header: bytes, case: str
) -> None:
    change, message = KEYSLOT_AREA_FORGERIES[case]
    assert message in rejected(forge.with_json(pristine_header, change))


def segment(m: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = m["segments"]["0"]
    return result


SEGMENT_FORGERIES: dict[str, tuple[Any, str]] = {
    "offset inside the keyslots area": (
        lambda m: segment(m).update(offset=str(AREA_OFFSET)),
        f"segment 0 offset is {AREA_OFFSET}, expected {LAYOUT.DATA_OFFSET_BYTES}",
    ),
    "offset far beyond the device": (
        lambda m: segment(m).update(offset=str(U64_MAX)),
        f"segment 0 offset is {U64_MAX}, expected {LAYOUT.DATA_OFFSET_BYTES}",
    ),
    "offset past 64 bits": (
        lambda m: segment(m).update(offset=str(1 << 64)),
        "segment 0 offset is '18446744073709551616', expected a canonical decimal string",
    ),
    "size zero": (lambda m: segment(m).update(size="0"), "segment 0 size is '0'"),
    "size as a JSON number": (lambda m: segment(m).update(size=4096), "segment 0 size is 4096"),
    "size bigger than the device": (
        lambda m: segment(m).update(size=str(1 << 40)),
        "segment 0 size is '1099511627776'",
    ),
    "size 'dynamic' with a space": (
        lambda m: segment(m).update(size="dynamic "),
        "segment 0 size is 'dynamic '",
    ),
    "size missing": (lambda m: segment(m).pop("size"), "segment 0 lacks size"),
    "iv_tweak moved": (lambda m: segment(m).update(iv_tweak="1"), "segment 0 iv_tweak is '1'"),
    "type linear (plaintext)": (
        lambda m: segment(m).update(type="linear"),
        "segment 0 type is 'linear'",
    ),
}


@pytest.mark.parametrize("case", SEGMENT_FORGERIES, ids=list(SEGMENT_FORGERIES))
def test_segment_field_is_checked(pristine_header: bytes, case: str) -> None:
    change, message = SEGMENT_FORGERIES[case]
    assert message in rejected(forge.with_json(pristine_header, change))


def test_segment_offset_at_the_device_end_is_rejected(pristine_header: bytes) -> None:
    # Data offset equal to the device size: a volume of no bytes at all.
    message = rejected(pristine_header, device_bytes=LAYOUT.DATA_OFFSET_BYTES)
    assert f"segment 0 offset {LAYOUT.DATA_OFFSET_BYTES} lies beyond the device end" in message


def digest(m: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = m["digests"]["0"]
    return result


DIGEST_FORGERIES: dict[str, tuple[Any, str]] = {
    "a second digest for another key": (
        lambda m: m["digests"].update({"1": copy.deepcopy(digest(m))}),
        "digests are ['0', '1'], expected exactly one digest '0'",
    ),
    "the one digest renamed": (
        lambda m: m.update(digests={"7": digest(m)}),
        "digests are ['7'], expected exactly one digest '0'",
    ),
    "naming a keyslot that does not exist": (
        lambda m: digest(m).update(keyslots=["1"]),
        "digest 0 keyslots is ['1'], expected ['0']",
    ),
    "naming a segment that does not exist": (
        lambda m: digest(m).update(segments=["1"]),
        "digest 0 segments is ['1'], expected ['0']",
    ),
    "naming its keyslot twice": (
        lambda m: digest(m).update(keyslots=["0", "0"]),
        "digest 0 keyslots is ['0', '0'], expected ['0']",
    ),
    "naming a missing keyslot besides the real one": (
        lambda m: digest(m).update(keyslots=["0", "1"]),
        "digest 0 keyslots is ['0', '1'], expected ['0']",
    ),
    "keyslot named by number": (
        lambda m: digest(m).update(keyslots=[0]),
        "digest 0 keyslots is [0], expected ['0']",
    ),
    "keyslots not a list": (
        lambda m: digest(m).update(keyslots="0"),
        "digest 0 keyslots is '0', expected ['0']",
    ),
    "keyslot renamed away from the digest": (
        lambda m: m.update(keyslots={"1": m["keyslots"]["0"]}),
        "keyslots are ['1'], expected exactly one keyslot '0'",
    ),
    "segment renamed away from the digest": (
        lambda m: m.update(segments={"1": segment(m)}),
        "segments are ['1'], expected exactly one segment '0'",
    ),
    "digest of another type": (
        lambda m: digest(m).update(type="argon2i"),
        "digest 0 type is 'argon2i'",
    ),
    "digest that is too short": (
        lambda m: digest(m).update(digest="AAAA"),
        "digest 0 digest has 3 bytes, expected 32",
    ),
}


@pytest.mark.parametrize("case", DIGEST_FORGERIES, ids=list(DIGEST_FORGERIES))
def test_digest_field_is_checked(pristine_header: bytes, case: str) -> None:
    change, message = DIGEST_FORGERIES[case]
    assert message in rejected(forge.with_json(pristine_header, change))


# Every JSON object of the pinned layout, by the path to it and the name used in messages.
OBJECTS: dict[str, tuple[tuple[str, ...], str]] = {
    "top": ((), "metadata"),
    "keyslot": (("keyslots", "0"), "keyslot 0"),
    "kdf": (("keyslots", "0", "kdf"), "keyslot 0 kdf"),
    "af": (("keyslots", "0", "af"), "keyslot 0 af"),
    "area": (("keyslots", "0", "area"), "keyslot 0 area"),
    "segment": (("segments", "0"), "segment 0"),
    "digest": (("digests", "0"), "digest 0"),
    "config": (("config",), "config"),
}


def at(metadata: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    obj = metadata
    for key in path:
        obj = obj[key]
    return obj


@pytest.mark.parametrize("level", OBJECTS)
def test_unknown_key_is_rejected_at_every_level(pristine_header: bytes, level: str) -> None:
    path, name = OBJECTS[level]
    forged = forge.with_json(pristine_header, lambda m: at(m, path).update(priority=2))
    assert f"{name} has unexpected priority" in rejected(forged)


@pytest.mark.parametrize("level", OBJECTS)
def test_duplicate_key_is_rejected_at_every_level(pristine_header: bytes, level: str) -> None:
    # Even a duplicate with the same value: json-c keeps the last one, Python the last one
    # too, but another reader may keep the first, and a pure allow-list has no duplicates.
    path, _ = OBJECTS[level]
    metadata = forge.json_of(pristine_header)
    obj = at(metadata, path)
    key, value = next(iter(obj.items()))
    obj["@duplicate@"] = None
    text = json.dumps(metadata)
    text = text.replace('"@duplicate@": null', f"{json.dumps(key)}: {json.dumps(value)}")
    forged = forge.with_json_text(pristine_header, text.encode())
    assert f"duplicate JSON key '{key}'" in rejected(forged)


# --- The two metadata copies ---------------------------------------------------------------

UUID_FIELD = 168
CSUM_ALG_FIELD = 72
HEADER_SIZE_FIELD = 8
HEADER_OFFSET_FIELD = 256
SUBSYSTEM_FIELD = 208


def test_secondary_copy_with_other_json_content_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_json(
        pristine_header,
        lambda m: segment(m).update(encryption="cipher_null-ecb"),
        copies=("secondary",),
    )
    assert "the two metadata copies hold different JSON" in rejected(forged)


def test_primary_copy_with_other_json_content_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_json(
        pristine_header, lambda m: segment(m).update(encryption="cipher_null-ecb"), ("primary",)
    )
    message = rejected(forged)
    assert "the two metadata copies hold different JSON" in message
    assert "segment 0 encryption is 'cipher_null-ecb'" in message


@pytest.mark.parametrize("copy_name", ["primary", "secondary"])
def test_header_offset_of_the_other_copy_is_rejected(
    pristine_header: bytes, copy_name: str
) -> None:
    other = forge.SIZE - forge.COPIES[copy_name]
    forged = forge.with_binary_field(
        pristine_header, copy_name, HEADER_OFFSET_FIELD, struct.pack(">Q", other)
    )
    expected = forge.COPIES[copy_name]
    assert f"{copy_name} header offset is {other}, expected {expected}" in rejected(forged)


def test_copies_with_different_uuids_are_rejected(pristine_header: bytes) -> None:
    forged = forge.with_binary_field(
        pristine_header, "secondary", UUID_FIELD, b"00000000-0000-4000-8000-000000000000"
    )
    assert "the two metadata copies name different UUIDs" in rejected(forged)


@pytest.mark.parametrize(
    ("uuid", "why"),
    [
        (b"3ED2E29F-A361-432A-BA58-8B73DB0CEEBA", "upper case"),
        (b"3ed2e29fa361432aba588b73db0ceeba\0\0\0\0", "no dashes"),
        (b"../../../../dev/mapper/control\0\0\0\0\0\0", "a path"),
        (b"\0" * 36, "empty"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_uuid_that_is_not_canonical_is_rejected(
    pristine_header: bytes, uuid: bytes, why: str
) -> None:
    forged = pristine_header
    for name in forge.COPIES:
        forged = forge.with_binary_field(forged, name, UUID_FIELD, uuid)
    assert "primary header UUID is" in rejected(forged), why


def test_bytes_after_the_uuid_terminator_are_rejected(pristine_header: bytes) -> None:
    forged = pristine_header
    for name in forge.COPIES:
        # 36 characters, the terminating NUL, then 3 spare bytes of the 40-byte field.
        forged = forge.with_binary_field(forged, name, UUID_FIELD + 37, b"ev!")
    message = rejected(forged)
    assert "primary header UUID is" in message
    assert "subsystem" not in message


def test_bytes_after_the_checksum_algorithm_terminator_are_rejected(
    pristine_header: bytes,
) -> None:
    forged = forge.with_binary_field(pristine_header, "secondary", CSUM_ALG_FIELD + 7, b"x")
    assert "secondary checksum algorithm field has bytes after" in rejected(forged)


@pytest.mark.parametrize(("offset", "length"), [(264, 184), (512, 3584)], ids=["first", "last"])
def test_non_zero_binary_padding_is_rejected(
    pristine_header: bytes, offset: int, length: int
) -> None:
    forged = forge.with_binary_field(pristine_header, "primary", offset + length - 1, b"\x01")
    assert "primary header has non-zero padding" in rejected(forged)


@pytest.mark.parametrize("copy_name", ["primary", "secondary"])
def test_subsystem_is_rejected(pristine_header: bytes, copy_name: str) -> None:
    forged = forge.with_binary_field(pristine_header, copy_name, SUBSYSTEM_FIELD, b"evil")
    assert f"{copy_name} header has a subsystem" in rejected(forged)


def test_label_on_the_secondary_only_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_binary_field(pristine_header, "secondary", 24, b"evil")
    assert "secondary header has a label" in rejected(forged)


def test_secondary_with_the_primary_magic_is_rejected(pristine_header: bytes) -> None:
    forged = forge.with_binary_field(pristine_header, "secondary", 0, b"LUKS\xba\xbe")
    assert "secondary header magic is" in rejected(forged)


def test_secondary_checksum_that_does_not_match_is_rejected(pristine_header: bytes) -> None:
    data = bytearray(pristine_header)
    data[forge.SIZE + 4096 + 3] ^= 0x20
    assert "secondary header checksum does not match" in rejected(bytes(data))


# --- Sequence-ID games ----------------------------------------------------------------------


def current_sequence_id(raw: bytes) -> int:
    value: int = struct.unpack(">Q", raw[16:24])[0]
    return value


@pytest.mark.parametrize("copy_name", ["primary", "secondary"])
def test_higher_sequence_id_on_one_copy_is_rejected(pristine_header: bytes, copy_name: str) -> None:
    # cryptsetup trusts the copy with the higher sequence ID: one newer copy would win.
    forged = forge.with_sequence_id(
        pristine_header, copy_name, current_sequence_id(pristine_header) + 1
    )
    assert "the metadata copies have sequence IDs" in rejected(forged)


def test_equal_sequence_ids_with_different_content_are_rejected(pristine_header: bytes) -> None:
    forged = forge.with_json(
        pristine_header, lambda m: segment(m).update(sector_size=512), ("secondary",)
    )
    assert current_sequence_id(forged) == current_sequence_id(forged[forge.SIZE :])
    assert "the two metadata copies hold different JSON" in rejected(forged)


@pytest.mark.parametrize("sequence_id", [0, MAX_SEQUENCE_ID + 1, 1 << 63, U64_MAX])
def test_sequence_id_out_of_range_on_both_copies_is_rejected(
    pristine_header: bytes, sequence_id: int
) -> None:
    forged = pristine_header
    for name in forge.COPIES:
        forged = forge.with_sequence_id(forged, name, sequence_id)
    assert f"primary header sequence ID is {sequence_id}, expected 1 to" in rejected(forged)


# --- The JSON area and its size fields ----------------------------------------------------


def test_bytes_after_the_json_terminator_are_rejected(pristine_header: bytes) -> None:
    text = json.dumps(forge.json_of(pristine_header)).encode()
    forged = forge.with_json_text(pristine_header, text + b"\0 hidden")
    assert "JSON area has bytes after its terminating NUL" in rejected(forged)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[]", "JSON metadata is not an object"),
        (b'{"keyslots": NaN}', "non-standard JSON constant NaN"),
        (b'{"keyslots": "\xff"}', "JSON metadata is malformed"),
        (b"\xef\xbb\xbf{}", "JSON metadata is malformed"),
        (b"{} {}", "JSON metadata is malformed"),
    ],
    ids=["array", "NaN", "not UTF-8", "BOM", "two documents"],
)
def test_json_that_is_not_one_plain_object_is_rejected(
    pristine_header: bytes, text: bytes, message: str
) -> None:
    assert message in rejected(forge.with_json_text(pristine_header, text))


@pytest.mark.parametrize(
    "header_size",
    [
        2 * LAYOUT.METADATA_BYTES,  # bigger than the area: would swallow the secondary copy
        4096,  # smaller than binary header plus JSON
        1 << 20,  # another size LUKS2 allows
        0,
        U64_MAX,
    ],
)
def test_header_size_that_lies_is_rejected(pristine_header: bytes, header_size: int) -> None:
    forged = pristine_header
    for name in forge.COPIES:
        forged = forge.with_binary_field(
            forged, name, HEADER_SIZE_FIELD, struct.pack(">Q", header_size)
        )
    message = rejected(forged)
    for name in forge.COPIES:
        assert f"{name} header size is {header_size}, expected {LAYOUT.METADATA_BYTES}" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("json_size", "4096", LAYOUT.METADATA_BYTES - 4096),
        ("json_size", str(2 * LAYOUT.METADATA_BYTES), LAYOUT.METADATA_BYTES - 4096),
        ("keyslots_size", str(LAYOUT.DATA_OFFSET_BYTES), LAYOUT.KEYSLOTS_BYTES),
        ("keyslots_size", "0", LAYOUT.KEYSLOTS_BYTES),
    ],
)
def test_config_size_that_lies_is_rejected(
    pristine_header: bytes, field: str, value: str, expected: int
) -> None:
    forged = forge.with_json(pristine_header, lambda m: m["config"].update({field: value}))
    assert f"config.{field} is {value}, expected {expected}" in rejected(forged)


def test_a_volume_of_the_first_layout_is_refused_saying_what_it_is(
    pristine_header: bytes,
) -> None:
    legacy = str(LAYOUT.DATA_OFFSET_BYTES - 2 * LAYOUT.METADATA_BYTES)
    forged = forge.with_json(pristine_header, lambda m: m["config"].update(keyslots_size=legacy))
    message = rejected(forged)
    assert f"config.keyslots_size is {legacy}, cryptsetup's default and the layout of" in message
    assert "copy the data to a new volume" in message


# --- Numbers: one spelling each ------------------------------------------------------------

# The string-typed numbers of the layout, by path, with the name the error uses.
STRING_NUMBERS: dict[str, tuple[tuple[str, ...], str]] = {
    "area offset": (("keyslots", "0", "area", "offset"), "keyslot 0 area offset"),
    "area size": (("keyslots", "0", "area", "size"), "keyslot 0 area size"),
    "segment offset": (("segments", "0", "offset"), "segment 0 offset"),
    "json_size": (("config", "json_size"), "config.json_size"),
    "keyslots_size": (("config", "keyslots_size"), "config.keyslots_size"),
}

SPELLINGS: dict[str, Any] = {
    "plus sign": lambda n: f"+{n}",
    "hex": hex,
    "leading space": lambda n: f" {n}",
    "trailing newline": lambda n: f"{n}\n",
    "leading zero": lambda n: f"0{n}",
    "exponent": lambda n: f"{n}e0",
    "fraction": lambda n: f"{n}.0",
    "negative": lambda n: f"-{n}",
    "full-width digits": lambda n: "".join(chr(0xFF10 + int(d)) for d in str(n)),
    "empty": lambda n: "",
    "huge": lambda n: "9" * 5000,
    "JSON number": lambda n: n,
}


def set_at(metadata: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    at(metadata, path[:-1])[path[-1]] = value


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("field", STRING_NUMBERS)
def test_number_spelled_another_way_is_rejected(
    pristine_header: bytes, field: str, spelling: str
) -> None:
    path, name = STRING_NUMBERS[field]
    canonical = int(at(forge.json_of(pristine_header), path[:-1])[path[-1]])
    value = SPELLINGS[spelling](canonical)
    forged = forge.with_json(pristine_header, lambda m: set_at(m, path, value))
    assert f"{name} is " in (message := rejected(forged))
    assert "expected a canonical decimal string" in message


# The JSON-number fields of the layout: a float, a string or a boolean is not the integer.
JSON_NUMBERS: dict[str, tuple[tuple[str, ...], str]] = {
    "key_size": (("keyslots", "0", "key_size"), "keyslot 0 key_size"),
    "area key_size": (("keyslots", "0", "area", "key_size"), "keyslot 0 area key_size"),
    "af stripes": (("keyslots", "0", "af", "stripes"), "keyslot 0 af stripes"),
    "kdf iterations": (("keyslots", "0", "kdf", "iterations"), "keyslot 0 kdf iterations"),
    "digest iterations": (("digests", "0", "iterations"), "digest 0 iterations"),
    "sector_size": (("segments", "0", "sector_size"), "segment 0 sector_size"),
}


@pytest.mark.parametrize("spelling", ["float", "string", "boolean", "exponent"])
@pytest.mark.parametrize("field", JSON_NUMBERS)
def test_json_number_of_another_type_is_rejected(
    pristine_header: bytes, field: str, spelling: str
) -> None:
    path, name = JSON_NUMBERS[field]
    metadata = forge.json_of(pristine_header)
    canonical = at(metadata, path[:-1])[path[-1]]
    marker = "@number@"
    set_at(metadata, path, marker)
    spelled = {
        "float": f"{canonical}.0",
        "string": f'"{canonical}"',
        "boolean": "true",
        "exponent": f"{canonical}e0",
    }[spelling]
    text = json.dumps(metadata).replace(f'"{marker}"', spelled)
    assert f"{name} is " in rejected(forge.with_json_text(pristine_header, text.encode()))


@pytest.mark.parametrize(
    "path",
    [("keyslots", "0", "kdf", "salt"), ("digests", "0", "salt"), ("digests", "0", "digest")],
    ids=["kdf salt", "digest salt", "digest"],
)
def test_base64_with_stray_bits_is_rejected(pristine_header: bytes, path: tuple[str, ...]) -> None:
    # 32 bytes take 43 base64 characters and 2 spare bits; setting them decodes to the same
    # bytes, so the field would have two spellings.
    metadata = forge.json_of(pristine_header)
    value: str = at(metadata, path[:-1])[path[-1]]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(value[42]) | 1]
    set_at(metadata, path, value[:42] + last + "=")
    forged = forge.with_json_text(pristine_header, json.dumps(metadata).encode())
    assert "is not canonical base64" in rejected(forged)


def test_deeply_nested_value_is_rejected_before_it_is_shown(pristine_header: bytes) -> None:
    # Shallow enough for json.loads, deep enough that repr() in the message could recurse.
    deep = "[" * 900 + "]" * 900
    text = json.dumps(forge.json_of(pristine_header)).replace('"aes-xts-plain64"', deep, 1)
    assert "nested deeper than" in rejected(forge.with_json_text(pristine_header, text.encode()))


def test_long_attacker_value_is_shortened_in_the_message(pristine_header: bytes) -> None:
    forged = forge.with_json(pristine_header, lambda m: segment(m).update(encryption="A" * 10000))
    message = rejected(forged)
    assert "segment 0 encryption is 'AAAA" in message
    assert len(message) < 1000


# 200 long key names: about 8.6 KB if every name were listed in the message.
MANY_KEYS: dict[str, dict[str, str]] = {f"key-{index:03d}-" + "x" * 30: {} for index in range(200)}


@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("tokens", "tokens ['key-000-xxx"),
        ("segments", "segments are ['key-000-xxx"),
        ("keyslots", "keyslots are ['key-000-xxx"),
        ("digests", "digests are ['key-000-xxx"),
    ],
    ids=["tokens", "segments", "keyslots", "digests"],
)
def test_object_with_many_keys_is_shortened_in_the_message(
    pristine_header: bytes, field: str, named: str
) -> None:
    message = rejected(forge.with_json(pristine_header, lambda m: m.update({field: MANY_KEYS})))
    assert named in message
    assert len(message) < 1000
    assert "... 192 more]" in message


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (6, b"\x00\x03", "secondary header version is 3, expected 2"),
        (HEADER_SIZE_FIELD, struct.pack(">Q", 32768), "secondary header size is 32768"),
        (CSUM_ALG_FIELD, b"sha1\0\0", "secondary checksum algorithm is b'sha1'"),
        (300, b"\x01", "secondary header has non-zero padding"),
    ],
    ids=["version", "header size", "checksum algorithm", "padding"],
)
def test_secondary_copy_that_differs_in_a_binary_field_is_rejected(
    pristine_header: bytes, offset: int, value: bytes, message: str
) -> None:
    forged = forge.with_binary_field(pristine_header, "secondary", offset, value)
    assert message in rejected(forged)
