"""A workload's request for its certificate and workload secret.

The workload verifies the Coordinator (attested TLS), then proves itself: evidence bound to
the Coordinator's nonce and to the P-256 key its certificate is issued for. The workload
secret comes back HPKE-sealed to that key, so only this process can open it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.base import Issuer, report_data_for
from contrast.client import (
    DEFAULT_TIMEOUT_SECONDS,
    CoordinatorAddress,
    CoordinatorVerifier,
    exchange,
)
from contrast.derivation import WORKLOAD_SECRET_BYTES
from contrast.manifest import public_key_der
from contrast.protocol import WORKLOAD_CREDENTIALS, ProtocolError, open_workload_secret


@dataclass(frozen=True)
class Credentials:
    """What the Initializer writes under /contrast. ``repr`` hides the key and the secret."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert_chain_pem: str
    mesh_ca_pem: str
    root_ca_pem: str
    workload_secret_id: str
    workload_secret: bytes = field(repr=False)


def generate_workload_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def workload_credentials_request(
    nonce: bytes, issuer: Issuer, key: ec.EllipticCurvePrivateKey
) -> dict[str, Any]:
    """The request a workload sends: its key, and evidence bound to ``nonce`` and that key."""
    der = public_key_der(key.public_key())
    evidence = issuer.issue(report_data_for(nonce, der))
    return {
        "Method": WORKLOAD_CREDENTIALS,
        "PublicKey": der.hex(),
        "Evidence": evidence.to_bytes().hex(),
    }


def request_workload_credentials(
    address: CoordinatorAddress,
    issuer: Issuer,
    coordinator: CoordinatorVerifier,
    key: ec.EllipticCurvePrivateKey | None = None,
    connect_attempts: int = 1,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Credentials:
    """Attest to the Coordinator at ``address`` and return this workload's credentials.

    ``key`` (ECDSA P-256) is generated when not given. Raises RemoteError (refused: unknown
    policy, failed attestation, Coordinator in recovery), AttestationError (the Coordinator
    did not verify), CoordinatorUnreachable or ProtocolError.
    """
    key = key or generate_workload_key()
    response, _ = exchange(
        address,
        coordinator,
        lambda nonce: workload_credentials_request(nonce, issuer, key),
        attempts=connect_attempts,
        timeout=timeout,
    )
    try:
        chain = str(response["CertChain"])
        sealed = bytes.fromhex(str(response["SealedWorkloadSecret"]))
        credentials_fields = (
            str(response["MeshCA"]),
            str(response["RootCA"]),
            str(response["WorkloadSecretID"]),
        )
    except (KeyError, ValueError):
        raise ProtocolError("the Coordinator's credentials response is incomplete") from None
    leaf = x509.load_pem_x509_certificate(chain.encode())
    if public_key_der(leaf.public_key()) != public_key_der(key.public_key()):
        raise ProtocolError("the Coordinator issued a certificate for another key")
    secret = open_workload_secret(sealed, key)
    if len(secret) != WORKLOAD_SECRET_BYTES:
        raise ProtocolError("the workload secret has the wrong length")
    mesh_ca, root_ca, secret_id = credentials_fields
    return Credentials(key, chain, mesh_ca, root_ca, secret_id, secret)
