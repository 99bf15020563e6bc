"""Seed shares: the secret seed and salt, encrypted to each seed share owner's RSA key.

Scheme: RSA-OAEP with SHA-256 for both the digest and MGF1, no label, over the 64-byte
plaintext ``seed || salt`` (the reference project's choice; keys of 3072 bits or more, as
the manifest enforces). Anyone holding the seed share owner's private key can reproduce
this with any standard RSA-OAEP implementation, e.g.
``openssl pkeyutl -decrypt -inkey seedshare-owner.pem -pkeyopt rsa_padding_mode:oaep
-pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contrast.derivation import SALT_BYTES, SECRET_SEED_BYTES
from contrast.manifest import public_key_hex
from contrast.workspace import SeedShare


class SeedShareError(Exception):
    """A seed share does not decrypt with the given key, or decrypts to the wrong length."""


@dataclass(frozen=True)
class SecretSeed:
    """The crown jewels. ``repr`` never shows the bytes, so a stray log line cannot leak them."""

    seed: bytes
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SECRET_SEED_BYTES or len(self.salt) != SALT_BYTES:
            raise SeedShareError(f"a secret seed and salt must have {SECRET_SEED_BYTES} bytes each")

    def __repr__(self) -> str:
        return "SecretSeed(<redacted>)"


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def encrypt_seed_share(secret: SecretSeed, owner: rsa.RSAPublicKey) -> SeedShare:
    return SeedShare(public_key_hex(owner), owner.encrypt(secret.seed + secret.salt, _oaep()))


def decrypt_seed_share(share: SeedShare, owner: rsa.RSAPrivateKey) -> SecretSeed:
    if share.public_key != public_key_hex(owner.public_key()):
        raise SeedShareError("this seed share is encrypted to a different seed share owner key")
    try:
        plaintext = owner.decrypt(share.encrypted_secret, _oaep())
    except ValueError:
        raise SeedShareError(
            "the seed share does not decrypt with the seed share owner key"
        ) from None
    if len(plaintext) != SECRET_SEED_BYTES + SALT_BYTES:
        raise SeedShareError("the seed share decrypts to the wrong length")
    return SecretSeed(plaintext[:SECRET_SEED_BYTES], plaintext[SECRET_SEED_BYTES:])


def find_seed_share(shares: list[SeedShare], owner: rsa.RSAPrivateKey) -> SeedShare:
    own = public_key_hex(owner.public_key())
    for share in shares:
        if share.public_key == own:
            return share
    raise SeedShareError("no seed share is encrypted to this seed share owner key")
