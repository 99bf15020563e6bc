"""The Coordinator's decisions, apart from sockets: set, recover, status, workload credentials.

States: ``uninitialized`` (no history: the first ``set`` creates the seed),
``recovery-required`` (history on disk, seed unknown: only ``Recover`` helps) and ``ready``.
Only a ready Coordinator hands out certificates or workload secrets. State changes are
serialized by one lock, so concurrent ``set`` calls keep the history a single line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.base import (
    AttestationError,
    Evidence,
    Validator,
    report_data_for,
    validate_evidence,
)
from contrast.attestation.platforms import validators_for
from contrast.derivation import (
    SALT_BYTES,
    SECRET_SEED_BYTES,
    derive_history_signing_key,
    derive_mesh_ca_key,
    derive_root_ca_key,
    derive_workload_secret,
)
from contrast.log import event
from contrast.manifest import (
    Manifest,
    ManifestError,
    load_seedshare_owner_public_key,
    policy_hash,
)
from contrast.protocol import (
    STATE_READY,
    STATE_RECOVERY_REQUIRED,
    STATE_UNINITIALIZED,
    seal_workload_secret,
)
from contrast.seedshare import SecretSeed, encrypt_seed_share
from coordinator.ca import mesh_ca_certificate, pem, root_ca_certificate, workload_certificate
from coordinator.history import HistoryEntry, HistoryError, HistoryStore

log = logging.getLogger("coordinator")


class ServiceError(Exception):
    """A refused request: ``code`` for programs, the message for the person at the CLI."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class ReadyState:
    """Everything a ready Coordinator derived from the seed and the verified history."""

    secret: SecretSeed
    signing_key: ec.EllipticCurvePrivateKey
    history: tuple[HistoryEntry, ...]
    root_ca_pem: str
    mesh_key: ec.EllipticCurvePrivateKey
    mesh_ca_pem: str
    validators: Sequence[Validator]

    @property
    def latest(self) -> HistoryEntry:
        return self.history[-1]


def build_ready_state(secret: SecretSeed, history: Sequence[HistoryEntry]) -> ReadyState:
    root_key = derive_root_ca_key(secret.seed, secret.salt)
    latest = history[-1]
    mesh_key = derive_mesh_ca_key(secret.seed, secret.salt, latest.transition.manifest)
    return ReadyState(
        secret=secret,
        signing_key=derive_history_signing_key(secret.seed, secret.salt),
        history=tuple(history),
        root_ca_pem=pem(root_ca_certificate(root_key)),
        mesh_key=mesh_key,
        mesh_ca_pem=pem(mesh_ca_certificate(mesh_key, root_key)),
        validators=validators_for(latest.manifest.reference_values),
    )


class CoordinatorService:
    def __init__(self, store: HistoryStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._ready: ReadyState | None = None
        self._has_history = store.has_history()

    @property
    def state(self) -> str:
        if self._ready is not None:
            return STATE_READY
        return STATE_RECOVERY_REQUIRED if self._has_history else STATE_UNINITIALIZED

    def status(self) -> dict[str, Any]:
        ready = self._ready
        return {
            "State": self.state,
            "Manifests": len(ready.history) if ready else 0,
        }

    def _require_ready(self) -> ReadyState:
        ready = self._ready
        if ready is not None:
            return ready
        if self._has_history:
            raise ServiceError(
                STATE_RECOVERY_REQUIRED,
                "the Coordinator restarted and cannot verify its history until the seed share "
                "owner runs `contrast recover`",
            )
        raise ServiceError(
            STATE_UNINITIALIZED, "no manifest has been set yet: run `contrast set` first"
        )

    # User API -----------------------------------------------------------------------------

    def set_manifest(
        self, manifest_json: bytes, policies: Sequence[bytes], signer: bytes | None
    ) -> dict[str, Any]:
        try:
            manifest = Manifest.from_json(manifest_json)
            manifest.check_settable()
        except ManifestError as exc:
            raise ServiceError("invalid-manifest", str(exc)) from None
        policy_files = {policy_hash(text): text for text in policies}
        for digest in policy_files:
            if digest not in manifest.policies:
                raise ServiceError(
                    "invalid-manifest",
                    f"a policy with hash {digest} was sent but the manifest has no entry for it",
                )
        canonical = manifest.to_json()
        try:
            return self._set_locked(canonical, manifest, policy_files, signer)
        except OSError as exc:
            event(log, "state-write-failed", logging.ERROR, error=exc.strerror)
            raise ServiceError(
                "storage-failed",
                f"the Coordinator could not write its state directory: {exc.strerror}; "
                "the previous state is unchanged",
            ) from None

    def _set_locked(
        self,
        canonical: bytes,
        manifest: Manifest,
        policy_files: dict[str, bytes],
        signer: bytes | None,
    ) -> dict[str, Any]:
        with self._lock:
            if self._has_history and self._ready is None:
                self._require_ready()
            ready = self._ready
            if ready is None:
                return self._first_set(canonical, manifest, policy_files)
            self._authorize_update(ready, manifest, signer)
            if ready.latest.manifest_json == canonical:
                self._store.store_policies(policy_files)
                event(log, "manifest-unchanged", manifest=ready.latest.transition.manifest)
                return self._set_response(ready, [])
            entry = self._store.append(canonical, policy_files, ready.latest, ready.signing_key)
            self._ready = build_ready_state(ready.secret, (*ready.history, entry))
            event(
                log,
                "manifest-updated",
                manifest=entry.transition.manifest,
                index=entry.transition.index,
            )
            return self._set_response(self._ready, [])

    def _first_set(
        self, canonical: bytes, manifest: Manifest, policy_files: dict[str, bytes]
    ) -> dict[str, Any]:
        secret = SecretSeed(os.urandom(SECRET_SEED_BYTES), os.urandom(SALT_BYTES))
        owners = [
            load_seedshare_owner_public_key(key, f"SeedshareOwnerPubKeys[{i}]")
            for i, key in enumerate(manifest.seedshare_owner_pub_keys)
        ]
        shares = [encrypt_seed_share(secret, owner) for owner in owners]
        signing_key = derive_history_signing_key(secret.seed, secret.salt)
        entry = self._store.append(canonical, policy_files, None, signing_key)
        self._has_history = True
        self._ready = build_ready_state(secret, (entry,))
        event(
            log,
            "secret-seed-created",
            manifest=entry.transition.manifest,
            seed_share_owners=len(shares),
        )
        return self._set_response(
            self._ready,
            [
                {"PublicKey": s.public_key, "EncryptedSecret": s.encrypted_secret.hex()}
                for s in shares
            ],
        )

    def _authorize_update(
        self, ready: ReadyState, manifest: Manifest, signer: bytes | None
    ) -> None:
        current = ready.latest.manifest
        if signer is None:
            raise ServiceError(
                "unauthorized",
                "a manifest is already set: an update must be signed by a workload owner key "
                "the current manifest lists",
            )
        if hashlib.sha256(signer).hexdigest() not in current.workload_owner_key_digests:
            raise ServiceError(
                "unauthorized",
                "the signing key is not a workload owner of the current manifest "
                "(WorkloadOwnerKeyDigests)",
            )
        if sorted(manifest.seedshare_owner_pub_keys) != sorted(current.seedshare_owner_pub_keys):
            raise ServiceError(
                "invalid-manifest",
                "manifest field SeedshareOwnerPubKeys: the seed share owners cannot change "
                "after the first set",
            )

    @staticmethod
    def _set_response(ready: ReadyState, shares: list[dict[str, str]]) -> dict[str, Any]:
        return {"SeedShares": shares, "RootCA": ready.root_ca_pem, "MeshCA": ready.mesh_ca_pem}

    def get_manifests(self) -> dict[str, Any]:
        ready = self._require_ready()
        policies: dict[str, str] = {}
        for digest in ready.latest.manifest.policies:
            text = self._store.read_policy(digest)
            if text is not None:
                policies[digest] = text.decode("utf-8", errors="replace")
        return {
            "Manifests": [entry.manifest_json.decode() for entry in ready.history],
            "Policies": policies,
            "RootCA": ready.root_ca_pem,
            "MeshCA": ready.mesh_ca_pem,
        }

    def recover(self, secret: SecretSeed, signer: bytes) -> dict[str, Any]:
        with self._lock:
            if self._ready is not None:
                raise ServiceError("already-ready", "the Coordinator is ready: nothing to recover")
            if not self._has_history:
                raise ServiceError(
                    STATE_UNINITIALIZED, "the Coordinator has no history: run `contrast set`"
                )
            signing_key = derive_history_signing_key(secret.seed, secret.salt)
            try:
                history = self._store.verify(signing_key.public_key())
            except HistoryError as exc:
                event(log, "recovery-refused", logging.WARNING, reason=str(exc))
                raise ServiceError("recovery-failed", str(exc)) from None
            if signer.hex() not in history[-1].manifest.seedshare_owner_pub_keys:
                event(log, "recovery-refused", logging.WARNING, reason="not a seed share owner")
                raise ServiceError(
                    "unauthorized",
                    "the caller's key is not a seed share owner of the latest manifest",
                )
            self._ready = build_ready_state(secret, history)
            event(log, "recovered", manifests=len(history))
            return {"Manifests": len(history)}

    # Mesh API -----------------------------------------------------------------------------

    def workload_credentials(
        self, nonce: bytes, public_key_der: bytes, evidence_bytes: bytes
    ) -> dict[str, Any]:
        ready = self._require_ready()
        try:
            workload_key = serialization.load_der_public_key(public_key_der)
        except (ValueError, TypeError):
            raise ServiceError("bad-request", "PublicKey is not a DER public key") from None
        if not isinstance(workload_key, ec.EllipticCurvePublicKey) or not isinstance(
            workload_key.curve, ec.SECP256R1
        ):
            raise ServiceError("bad-request", "PublicKey must be an ECDSA P-256 key")
        try:
            evidence = Evidence.from_bytes(evidence_bytes)
            verified = validate_evidence(
                evidence, report_data_for(nonce, public_key_der), ready.validators
            )
        except AttestationError as exc:
            event(log, "workload-refused", logging.WARNING, check=exc.check, reason=str(exc))
            raise ServiceError("attestation-failed", str(exc)) from None
        entry = ready.latest.manifest.policies.get(verified.policy_hash)
        if entry is None:
            event(
                log,
                "workload-refused",
                logging.WARNING,
                policy=verified.policy_hash,
                reason="unknown policy",
            )
            raise ServiceError(
                "unknown-policy",
                f"policy hash {verified.policy_hash} is not in the current manifest",
            )
        cert = workload_certificate(
            workload_key, entry.sans, entry.workload_secret_id, ready.mesh_key
        )
        secret = derive_workload_secret(
            ready.secret.seed, ready.secret.salt, entry.workload_secret_id
        )
        event(
            log,
            "workload-attested",
            policy=verified.policy_hash,
            workload_secret_id=entry.workload_secret_id,
            platform=verified.platform,
        )
        return {
            "CertChain": pem(cert) + ready.mesh_ca_pem,
            "MeshCA": ready.mesh_ca_pem,
            "RootCA": ready.root_ca_pem,
            "WorkloadSecretID": entry.workload_secret_id,
            "SealedWorkloadSecret": seal_workload_secret(secret, workload_key).hex(),
        }
