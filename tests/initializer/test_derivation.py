"""The LUKS passphrase derivation, pinned by vectors from an independent HKDF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrast.derivation import LUKS_PASSPHRASE_LABEL, derive_luks_passphrase

VECTORS = json.loads((Path(__file__).parent / "vectors" / "luks_passphrase.json").read_text())


def test_the_label_is_the_documented_versioned_one() -> None:
    assert VECTORS["label"].encode() == LUKS_PASSPHRASE_LABEL
    assert LUKS_PASSPHRASE_LABEL.endswith(b"/v1")


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_passphrase_matches_the_fixed_vector(vector: dict[str, str]) -> None:
    secret = bytes.fromhex(vector["workload_secret_hex"])
    assert derive_luks_passphrase(secret).hex() == vector["luks_passphrase_hex"]


def test_passphrase_is_never_the_workload_secret_itself() -> None:
    secret = bytes(range(32))
    assert derive_luks_passphrase(secret) != secret
    assert secret not in derive_luks_passphrase(secret + secret)


def test_one_bit_of_the_secret_changes_the_passphrase() -> None:
    secret = bytearray(range(32))
    original = derive_luks_passphrase(bytes(secret))
    secret[0] ^= 1
    assert derive_luks_passphrase(bytes(secret)) != original


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_secret_shorter_than_32_bytes_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="at least 32 are required"):
        derive_luks_passphrase(bytes(length))
