"""Request signatures bind the request to the connection's nonce; secrets are sealed to a key."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.manifest import public_key_der
from contrast.protocol import (
    ProtocolError,
    open_workload_secret,
    seal_workload_secret,
    sign_request,
    verify_request_signature,
)

NONCE = os.urandom(32)
BODY = {"Method": "SetManifest", "Manifest": "{}", "Policies": []}
OWNER = ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def seedshare_owner() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 3072)


def test_ecdsa_signature_verifies_and_names_the_signer() -> None:
    auth = sign_request(OWNER, "SetManifest", NONCE, BODY)
    signer = verify_request_signature(auth, "SetManifest", NONCE, {**BODY, "Auth": auth})
    assert signer == public_key_der(OWNER.public_key())


def test_rsa_pss_signature_verifies(seedshare_owner: rsa.RSAPrivateKey) -> None:
    auth = sign_request(seedshare_owner, "Recover", NONCE, BODY)
    assert verify_request_signature(auth, "Recover", NONCE, BODY) == public_key_der(
        seedshare_owner.public_key()
    )


def test_signature_replayed_on_another_connection_is_refused() -> None:
    auth = sign_request(OWNER, "SetManifest", NONCE, BODY)
    with pytest.raises(ProtocolError, match="does not verify"):
        verify_request_signature(auth, "SetManifest", os.urandom(32), BODY)


def test_signature_over_another_body_is_refused() -> None:
    auth = sign_request(OWNER, "SetManifest", NONCE, BODY)
    with pytest.raises(ProtocolError, match="does not verify"):
        verify_request_signature(auth, "SetManifest", NONCE, {**BODY, "Manifest": "{ }"})


def test_signature_for_another_method_is_refused() -> None:
    auth = sign_request(OWNER, "SetManifest", NONCE, BODY)
    with pytest.raises(ProtocolError, match="does not verify"):
        verify_request_signature(auth, "Recover", NONCE, BODY)


@pytest.mark.parametrize(
    "auth", [None, {}, {"PublicKey": "zz", "Signature": "00"}, {"PublicKey": "00"}]
)
def test_malformed_auth_is_refused(auth: object) -> None:
    with pytest.raises(ProtocolError):
        verify_request_signature(auth, "SetManifest", NONCE, BODY)


def test_sealed_secret_opens_only_with_the_attested_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sealed = seal_workload_secret(b"s" * 32, key.public_key())
    assert open_workload_secret(sealed, key) == b"s" * 32
    with pytest.raises(ProtocolError, match="does not open"):
        open_workload_secret(sealed, ec.generate_private_key(ec.SECP256R1()))
