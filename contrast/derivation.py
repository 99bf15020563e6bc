"""Every HKDF derivation of the project, with its label, in one place.

The key hierarchy can be read, reviewed and reproduced from this file alone. Labels are
fixed byte strings with a version suffix; changing what a label derives means a new label
(``.../v2``), never an edit, because existing volumes and Coordinator state depend on them.

Initializer
    LUKS passphrase = HKDF-SHA256(ikm=workload secret, salt=none,
                                  info=LUKS_PASSPHRASE_LABEL, length=32)

The workload secret itself is never used as a key: a volume's keyslot only ever sees the
derived passphrase, so the same workload secret can safely feed other derivations.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LUKS_PASSPHRASE_LABEL = b"contrast-securepv/luks-passphrase/v1"
LUKS_PASSPHRASE_BYTES = 32

# A workload secret must carry at least 256 bits so that the derived LUKS passphrase is a
# full-strength key and a cheap KDF on the keyslot is justified.
MIN_WORKLOAD_SECRET_BYTES = 32


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
