"""The header check against real headers from the real cryptsetup, and forged variants.

Every forged variant has valid checksums, so cryptsetup itself would load it: the check in
initializer.luks_header is what stands between it and an unlock.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from initializer import luks
from initializer.luks_header import HeaderRejected, check_header
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
        "is not inside the keyslots area",
    ),
    "keyslot area over the metadata": (
        lambda m: m["keyslots"]["0"]["area"].update(offset="4096"),
        "is not inside the keyslots area",
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
        "expected a decimal string",
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
