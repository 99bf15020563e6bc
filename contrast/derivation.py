"""Every HKDF derivation of the project, with its label, in one place.

The key hierarchy can be read, reviewed and reproduced from this file alone. Labels are
fixed byte strings with a version suffix; changing what a label derives means a new label
(``.../v2``), never an edit, because existing volumes and Coordinator state depend on them.

Initializer
    LUKS passphrase = HKDF-SHA256(ikm=workload secret, salt=none,
                                  info=LUKS_PASSPHRASE_LABEL, length=32)

The workload secret itself is never used as a key: a volume's keyslot only ever sees the
derived passphrase, so the same workload secret can safely feed other derivations.

Coordinator
    The first ``contrast set`` makes the Coordinator draw a random 32-byte secret seed and a
    random 32-byte salt. Everything below is a pure function of (seed, salt), so any
    Coordinator given them, and the seed share owner on their own machine, reach the same
    keys and secrets.

    root CA key (ECDSA P-384)
        okm = HKDF-SHA256(ikm=seed, salt=salt, info=ROOT_CA_KEY_LABEL, length=56)
        d   = int.from_bytes(okm, "big") mod (n - 1) + 1      (n: the P-384 group order)
    manifest-history signing key (ECDSA P-384)
        the same, with info=HISTORY_SIGNING_KEY_LABEL
    mesh CA key of one manifest (ECDSA P-384)
        the same, with info=MESH_CA_KEY_LABEL + b"/" + the manifest's hex SHA-256 (ASCII)
    workload secret base (32 bytes)
        base = HKDF-SHA256(ikm=seed, salt=salt, info=WORKLOAD_SECRET_BASE_LABEL, length=32)
    workload secret of workload secret ID ``id`` (32 bytes)
        HKDF-SHA256(ikm=base, salt=none, info=WORKLOAD_SECRET_LABEL + b"/" + id (UTF-8),
                    length=32)

    Turning 56 uniformly random bytes into a private scalar by reduction modulo n - 1 is
    FIPS 186-5 appendix A.2.1 ("extra random bits"): the 64 extra bits make the bias
    negligible. Private keys are never stored; they are re-derived after every restart.

Attested TLS
    The workload secret travels to the workload HPKE-sealed (RFC 9180, DHKEM(P-256),
    HKDF-SHA256, AES-256-GCM) to the public key the workload attested, with
    info=WORKLOAD_SECRET_SEAL_INFO, so only the attested key holder can open it.

The test vectors in tests/coordinator/derivation_vectors.json pin every derivation.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LUKS_PASSPHRASE_LABEL = b"contrast-securepv/luks-passphrase/v1"
LUKS_PASSPHRASE_BYTES = 32

# A workload secret must carry at least 256 bits so that the derived LUKS passphrase is a
# full-strength key and a cheap KDF on the keyslot is justified.
MIN_WORKLOAD_SECRET_BYTES = 32

ROOT_CA_KEY_LABEL = b"contrast-securepv/coordinator/root-ca-key/v1"
HISTORY_SIGNING_KEY_LABEL = b"contrast-securepv/coordinator/history-signing-key/v1"
MESH_CA_KEY_LABEL = b"contrast-securepv/coordinator/mesh-ca-key/v1"
WORKLOAD_SECRET_BASE_LABEL = b"contrast-securepv/coordinator/workload-secret-base/v1"
WORKLOAD_SECRET_LABEL = b"contrast-securepv/workload-secret/v1"
WORKLOAD_SECRET_SEAL_INFO = b"contrast-securepv/atls/workload-secret-seal/v1"

SECRET_SEED_BYTES = 32
SALT_BYTES = 32
WORKLOAD_SECRET_BYTES = 32

# P-384 group order n (SEC 2, section 2.5.1).
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_P384_EXTRA_BITS_BYTES = 48 + 8


def hkdf_sha256(ikm: bytes, info: bytes, length: int, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_luks_passphrase(workload_secret: bytes) -> bytes:
    """The 32-byte passphrase of a secure PV's LUKS keyslot, derived from the workload secret."""
    if len(workload_secret) < MIN_WORKLOAD_SECRET_BYTES:
        raise ValueError(
            f"workload secret has {len(workload_secret)} bytes, "
            f"at least {MIN_WORKLOAD_SECRET_BYTES} are required"
        )
    return hkdf_sha256(workload_secret, LUKS_PASSPHRASE_LABEL, LUKS_PASSPHRASE_BYTES)


def _check_seed_and_salt(seed: bytes, salt: bytes) -> None:
    if len(seed) != SECRET_SEED_BYTES:
        raise ValueError(f"secret seed has {len(seed)} bytes, {SECRET_SEED_BYTES} are required")
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt has {len(salt)} bytes, {SALT_BYTES} are required")


def _derive_p384_key(seed: bytes, salt: bytes, info: bytes) -> ec.EllipticCurvePrivateKey:
    _check_seed_and_salt(seed, salt)
    okm = hkdf_sha256(seed, info, _P384_EXTRA_BITS_BYTES, salt=salt)
    scalar = int.from_bytes(okm, "big") % (_P384_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP384R1())


def derive_root_ca_key(seed: bytes, salt: bytes) -> ec.EllipticCurvePrivateKey:
    """The Coordinator's root CA key: the same seed and salt give the same root of trust."""
    return _derive_p384_key(seed, salt, ROOT_CA_KEY_LABEL)


def derive_history_signing_key(seed: bytes, salt: bytes) -> ec.EllipticCurvePrivateKey:
    """The key that signs the manifest history, and proves it untouched after a restart."""
    return _derive_p384_key(seed, salt, HISTORY_SIGNING_KEY_LABEL)


def derive_mesh_ca_key(
    seed: bytes, salt: bytes, manifest_digest: str
) -> ec.EllipticCurvePrivateKey:
    """The mesh CA key of the manifest with hex SHA-256 ``manifest_digest``."""
    return _derive_p384_key(seed, salt, MESH_CA_KEY_LABEL + b"/" + manifest_digest.encode("ascii"))


def derive_workload_secret_base(seed: bytes, salt: bytes) -> bytes:
    _check_seed_and_salt(seed, salt)
    return hkdf_sha256(seed, WORKLOAD_SECRET_BASE_LABEL, WORKLOAD_SECRET_BYTES, salt=salt)


def derive_workload_secret(seed: bytes, salt: bytes, workload_secret_id: str) -> bytes:
    """The 32-byte workload secret of ``workload_secret_id``: same seed and ID, same secret."""
    if not workload_secret_id:
        raise ValueError("the workload secret ID must not be empty")
    base = derive_workload_secret_base(seed, salt)
    info = WORKLOAD_SECRET_LABEL + b"/" + workload_secret_id.encode("utf-8")
    return hkdf_sha256(base, info, WORKLOAD_SECRET_BYTES)
