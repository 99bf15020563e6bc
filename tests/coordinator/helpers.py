"""Shared test helpers: manifests with policies, and state-directory snapshots."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from contrast.manifest import (
    Manifest,
    PolicyEntry,
    ReferenceValues,
    SimulatedReferenceValue,
    key_digest,
    policy_hash,
    public_key_hex,
)


def policy_text(name: str) -> bytes:
    return f"package agent_policy\n# pod {name}\ndefault CreateContainerRequest := false\n".encode()


def make_manifest(
    seedshare_owner: rsa.RSAPrivateKey,
    simulation_key: ed25519.Ed25519PrivateKey,
    workload_owner: ec.EllipticCurvePrivateKey | None = None,
    workloads: dict[str, str] | None = None,
) -> Manifest:
    """A manifest whose policies are ``policy_text(name)`` with secret ID ``workloads[name]``."""
    policies = {
        policy_hash(policy_text(name)): PolicyEntry((name, "*"), secret_id)
        for name, secret_id in (workloads or {}).items()
    }
    return Manifest(
        policies=policies,
        reference_values=ReferenceValues(
            simulated=(SimulatedReferenceValue(public_key_hex(simulation_key.public_key())),)
        ),
        seedshare_owner_pub_keys=(public_key_hex(seedshare_owner.public_key()),),
        workload_owner_key_digests=(
            (key_digest(workload_owner.public_key()),) if workload_owner else ()
        ),
    )


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (except the lock) with the SHA-256 of its content."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "lock"
    }
