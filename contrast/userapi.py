"""The user's side of the Coordinator API: status, set, get manifests, recover.

Every call verifies the Coordinator's attestation before sending anything, and signs what
needs authority over the Coordinator's per-connection nonce (see ``contrast.protocol``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.client import CoordinatorAddress, CoordinatorVerifier, exchange
from contrast.manifest import Manifest
from contrast.protocol import (
    GET_MANIFESTS,
    RECOVER,
    SET_MANIFEST,
    STATUS,
    ProtocolError,
    sign_request,
)
from contrast.seedshare import SecretSeed
from contrast.workspace import SeedShare


@dataclass(frozen=True)
class Status:
    state: str
    manifests: int


@dataclass(frozen=True)
class SetResult:
    seed_shares: list[SeedShare]  # only on the first set
    root_ca_pem: str
    mesh_ca_pem: str


@dataclass(frozen=True)
class History:
    manifests: list[bytes]  # oldest first, canonical JSON
    policies: dict[str, str]
    root_ca_pem: str
    mesh_ca_pem: str


def _field(response: dict[str, Any], key: str, kind: type) -> Any:
    value = response.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(f"the Coordinator's response lacks {key}")
    return value


def get_status(address: CoordinatorAddress, verifier: CoordinatorVerifier) -> Status:
    response, _ = exchange(address, verifier, lambda _nonce: {"Method": STATUS})
    return Status(str(_field(response, "State", str)), int(_field(response, "Manifests", int)))


def set_manifest(
    address: CoordinatorAddress,
    verifier: CoordinatorVerifier,
    manifest: Manifest,
    policies: Sequence[bytes],
    workload_owner_key: ec.EllipticCurvePrivateKey | None,
) -> SetResult:
    body: dict[str, Any] = {
        "Method": SET_MANIFEST,
        "Manifest": manifest.to_json().decode(),
        "Policies": [p.decode("utf-8") for p in policies],
    }

    def build(nonce: bytes) -> dict[str, Any]:
        if workload_owner_key is None:
            return body
        return {**body, "Auth": sign_request(workload_owner_key, SET_MANIFEST, nonce, body)}

    response, _ = exchange(address, verifier, build)
    try:
        shares = [
            SeedShare(str(item["PublicKey"]), bytes.fromhex(item["EncryptedSecret"]))
            for item in _field(response, "SeedShares", list)
        ]
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("the Coordinator's seed shares are malformed") from None
    return SetResult(
        shares, str(_field(response, "RootCA", str)), str(_field(response, "MeshCA", str))
    )


def get_history(address: CoordinatorAddress, verifier: CoordinatorVerifier) -> History:
    response, _ = exchange(address, verifier, lambda _nonce: {"Method": GET_MANIFESTS})
    manifests = [str(m).encode() for m in _field(response, "Manifests", list)]
    policies = {str(k): str(v) for k, v in _field(response, "Policies", dict).items()}
    return History(
        manifests,
        policies,
        str(_field(response, "RootCA", str)),
        str(_field(response, "MeshCA", str)),
    )


def recover(
    address: CoordinatorAddress,
    verifier: CoordinatorVerifier,
    secret: SecretSeed,
    seedshare_owner_key: rsa.RSAPrivateKey,
) -> int:
    """Send the seed and salt to a Coordinator in recovery mode; return its manifest count."""
    body = {"Method": RECOVER, "Seed": secret.seed.hex(), "Salt": secret.salt.hex()}

    def build(nonce: bytes) -> dict[str, Any]:
        return {**body, "Auth": sign_request(seedshare_owner_key, RECOVER, nonce, body)}

    response, _ = exchange(address, verifier, build)
    return int(_field(response, "Manifests", int))
