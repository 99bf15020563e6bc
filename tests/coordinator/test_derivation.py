"""The Coordinator's key hierarchy, pinned by test vectors and reproduced independently."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from contrast import derivation
from contrast.manifest import public_key_hex

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "derivation_vectors.json").read_text(encoding="utf-8")
)
SEED = bytes.fromhex(VECTORS["seed"])
SALT = bytes.fromhex(VECTORS["salt"])
P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
    "581a0db248b0a77aecec196accc52973",
    16,
)


def rfc5869(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written out from RFC 5869, as a seed share owner could reproduce it."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def scalar(key: ec.EllipticCurvePrivateKey) -> str:
    return format(key.private_numbers().private_value, "096x")


def test_root_ca_key_matches_vector() -> None:
    key = derivation.derive_root_ca_key(SEED, SALT)
    assert scalar(key) == VECTORS["root_ca_key_scalar"]
    assert public_key_hex(key.public_key()) == VECTORS["root_ca_public_key"]


def test_history_signing_key_matches_vector() -> None:
    key = derivation.derive_history_signing_key(SEED, SALT)
    assert scalar(key) == VECTORS["history_signing_key_scalar"]


def test_mesh_ca_key_matches_vector() -> None:
    vector = VECTORS["mesh_ca_key"]
    key = derivation.derive_mesh_ca_key(SEED, SALT, vector["manifest_digest"])
    assert scalar(key) == vector["scalar"]


def test_workload_secret_base_matches_vector() -> None:
    base = derivation.derive_workload_secret_base(SEED, SALT)
    assert base.hex() == VECTORS["workload_secret_base"]


@pytest.mark.parametrize("secret_id", sorted(VECTORS["workload_secrets"]))
def test_workload_secret_matches_vector(secret_id: str) -> None:
    secret = derivation.derive_workload_secret(SEED, SALT, secret_id)
    assert secret.hex() == VECTORS["workload_secrets"][secret_id]


@pytest.mark.parametrize("secret_id", sorted(VECTORS["luks_passphrases"]))
def test_luks_passphrase_of_workload_secret_matches_vector(secret_id: str) -> None:
    secret = bytes.fromhex(VECTORS["workload_secrets"][secret_id])
    passphrase = derivation.derive_luks_passphrase(secret)
    assert passphrase.hex() == VECTORS["luks_passphrases"][secret_id]


def test_workload_secret_is_reproducible_from_the_documented_recipe() -> None:
    base = rfc5869(SEED, SALT, derivation.WORKLOAD_SECRET_BASE_LABEL, 32)
    info = derivation.WORKLOAD_SECRET_LABEL + b"/" + "ünïcode-id".encode()
    assert rfc5869(base, None, info, 32).hex() == VECTORS["workload_secrets"]["ünïcode-id"]


def test_root_ca_key_is_reproducible_from_the_documented_recipe() -> None:
    okm = rfc5869(SEED, SALT, derivation.ROOT_CA_KEY_LABEL, 56)
    d = int.from_bytes(okm, "big") % (P384_ORDER - 1) + 1
    assert format(d, "096x") == VECTORS["root_ca_key_scalar"]


def test_every_label_is_distinct() -> None:
    labels = [
        derivation.LUKS_PASSPHRASE_LABEL,
        derivation.ROOT_CA_KEY_LABEL,
        derivation.HISTORY_SIGNING_KEY_LABEL,
        derivation.MESH_CA_KEY_LABEL,
        derivation.WORKLOAD_SECRET_BASE_LABEL,
        derivation.WORKLOAD_SECRET_LABEL,
        derivation.WORKLOAD_SECRET_SEAL_INFO,
    ]
    assert len(set(labels)) == len(labels)


def test_different_ids_give_different_secrets() -> None:
    a = derivation.derive_workload_secret(SEED, SALT, "a")
    b = derivation.derive_workload_secret(SEED, SALT, "b")
    assert a != b


def test_different_salt_gives_different_root_ca_key() -> None:
    other = derivation.derive_root_ca_key(SEED, bytes(32))
    assert scalar(other) != VECTORS["root_ca_key_scalar"]


@pytest.mark.parametrize(("seed", "salt"), [(SEED[:31], SALT), (SEED, SALT + b"\x00")])
def test_seed_and_salt_of_wrong_length_are_refused(seed: bytes, salt: bytes) -> None:
    with pytest.raises(ValueError, match="bytes"):
        derivation.derive_root_ca_key(seed, salt)


def test_empty_workload_secret_id_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        derivation.derive_workload_secret(SEED, SALT, "")
