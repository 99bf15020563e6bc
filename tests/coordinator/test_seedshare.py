"""Seed shares: RSA-OAEP-SHA256 of seed || salt, readable only by the seed share owner."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contrast.seedshare import (
    SecretSeed,
    SeedShareError,
    decrypt_seed_share,
    encrypt_seed_share,
    find_seed_share,
)
from contrast.workspace import SeedShare


@pytest.fixture(scope="module")
def owner() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 3072)


@pytest.fixture(scope="module")
def stranger() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 3072)


SECRET = SecretSeed(os.urandom(32), os.urandom(32))


def test_seed_share_round_trips(owner: rsa.RSAPrivateKey) -> None:
    share = encrypt_seed_share(SECRET, owner.public_key())
    assert decrypt_seed_share(share, owner) == SECRET


def test_seed_share_is_standard_rsa_oaep_sha256(owner: rsa.RSAPrivateKey) -> None:
    share = encrypt_seed_share(SECRET, owner.public_key())
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    assert owner.decrypt(share.encrypted_secret, oaep) == SECRET.seed + SECRET.salt


def test_share_for_another_owner_is_refused(
    owner: rsa.RSAPrivateKey, stranger: rsa.RSAPrivateKey
) -> None:
    share = encrypt_seed_share(SECRET, owner.public_key())
    with pytest.raises(SeedShareError, match="different seed share owner"):
        decrypt_seed_share(share, stranger)


def test_modified_ciphertext_is_refused(owner: rsa.RSAPrivateKey) -> None:
    share = encrypt_seed_share(SECRET, owner.public_key())
    flipped = bytearray(share.encrypted_secret)
    flipped[10] ^= 1
    with pytest.raises(SeedShareError, match="does not decrypt"):
        decrypt_seed_share(SeedShare(share.public_key, bytes(flipped)), owner)


def test_find_seed_share_picks_the_owners_share(
    owner: rsa.RSAPrivateKey, stranger: rsa.RSAPrivateKey
) -> None:
    shares = [
        encrypt_seed_share(SECRET, stranger.public_key()),
        encrypt_seed_share(SECRET, owner.public_key()),
    ]
    assert find_seed_share(shares, owner) is shares[1]


def test_secret_seed_never_shows_its_bytes() -> None:
    assert SECRET.seed.hex() not in repr(SECRET)
    assert "redacted" in repr(SECRET)
