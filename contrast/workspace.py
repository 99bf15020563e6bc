"""The user's workspace directory: the manifest, the owner keys and the encrypted seed shares.

=====================  ==========================================================  ======
file                   what                                                        mode
=====================  ==========================================================  ======
manifest.json          the manifest (canonical JSON, see contrast.manifest)        0644
seedshare-owner.pem    RSA-3072 private key (PKCS#8 PEM): decrypts the seed share  0600
workload-owner.pem     ECDSA P-384 private key (PKCS#8 PEM): may update manifests  0600
simulation-key.pem     Ed25519 private key of the simulated TEE (development)      0600
seed-shares.json       the secret seed and salt, encrypted to each seed share      0600
                       owner, as the first ``contrast set`` returned them
=====================  ==========================================================  ======

Key files are generated when missing and never overwritten: creation writes a private
temporary file and hard-links it into place, which fails if the name exists, so two
concurrent commands cannot both generate a key and a crash never leaves half a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from contrast.files import atomic_write, create_exclusive
from contrast.manifest import (
    PLATFORM_SIMULATED,
    PLATFORM_SNP,
    SNP_MEASUREMENT_BYTES,
    Manifest,
    ManifestError,
    ReferenceValues,
    SimulatedReferenceValue,
    SnpGuestPolicy,
    SnpReferenceValue,
    SnpTcb,
    key_digest,
    public_key_hex,
)

MANIFEST_FILE = "manifest.json"
SEEDSHARE_OWNER_KEY_FILE = "seedshare-owner.pem"
WORKLOAD_OWNER_KEY_FILE = "workload-owner.pem"
SIMULATION_KEY_FILE = "simulation-key.pem"
SEED_SHARES_FILE = "seed-shares.json"

SEEDSHARE_OWNER_RSA_BITS = 3072
KEY_FILE_MODE = 0o600

# Minimum SNP TCB for a fresh manifest: the Milan firmware levels that fixed the published
# SEV-SNP vulnerabilities up to 2023 (CVE-2023-20575 and earlier), as Contrast pins them.
DEFAULT_SNP_MINIMUM_TCB = SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)
DEFAULT_SNP_PRODUCT = "Milan"

_Key = TypeVar("_Key")
_GeneratedKey = TypeVar(
    "_GeneratedKey", rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey
)


class WorkspaceError(Exception):
    """A workspace file is missing, unreadable or malformed; the message says what to do."""


@dataclass(frozen=True)
class SeedShare:
    """The seed and salt (``seed || salt``), RSA-OAEP-SHA256-encrypted to one owner key."""

    public_key: str  # hex DER SubjectPublicKeyInfo of the seed share owner's key
    encrypted_secret: bytes


class Workspace:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @property
    def seedshare_owner_key_path(self) -> Path:
        return self.directory / SEEDSHARE_OWNER_KEY_FILE

    @property
    def workload_owner_key_path(self) -> Path:
        return self.directory / WORKLOAD_OWNER_KEY_FILE

    @property
    def simulation_key_path(self) -> Path:
        return self.directory / SIMULATION_KEY_FILE

    @property
    def seed_shares_path(self) -> Path:
        return self.directory / SEED_SHARES_FILE

    # Keys -------------------------------------------------------------------------------

    def ensure_seedshare_owner_key(self) -> rsa.RSAPrivateKey:
        """Load ``seedshare-owner.pem``, generating an RSA-3072 key if it does not exist."""
        return _ensure_key(
            self.seedshare_owner_key_path,
            lambda: rsa.generate_private_key(65537, SEEDSHARE_OWNER_RSA_BITS),
            rsa_key,
            "an RSA private key",
        )

    def ensure_workload_owner_key(self) -> ec.EllipticCurvePrivateKey:
        """Load ``workload-owner.pem``, generating an ECDSA P-384 key if it does not exist."""
        return _ensure_key(
            self.workload_owner_key_path,
            lambda: ec.generate_private_key(ec.SECP384R1()),
            ecdsa_key,
            "an ECDSA private key",
        )

    def ensure_simulation_key(self) -> ed25519.Ed25519PrivateKey:
        """Load ``simulation-key.pem``, generating an Ed25519 key if it does not exist."""
        return _ensure_key(
            self.simulation_key_path,
            ed25519.Ed25519PrivateKey.generate,
            ed25519_key,
            "an Ed25519 private key",
        )

    def create_simulation_key(self, key: ed25519.Ed25519PrivateKey) -> None:
        """Save ``key`` as ``simulation-key.pem``; never replaces an existing file."""
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if not _create_exclusive(self.simulation_key_path, pem, KEY_FILE_MODE):
            raise WorkspaceError(
                f"{self.simulation_key_path} was created by someone else while this command "
                "ran; run it again"
            )

    def load_seedshare_owner_key(self) -> rsa.RSAPrivateKey:
        return load_private_key(self.seedshare_owner_key_path, rsa_key, "an RSA private key")

    def load_workload_owner_key(self) -> ec.EllipticCurvePrivateKey:
        return load_private_key(self.workload_owner_key_path, ecdsa_key, "an ECDSA private key")

    # Manifest ---------------------------------------------------------------------------

    def read_manifest(self, path: Path | None = None) -> Manifest:
        """Read and validate a manifest (the workspace's, or ``path``)."""
        path = path or self.manifest_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise WorkspaceError(
                f"{path} does not exist: run `contrast manifest init` or `contrast generate` "
                "first, or pass --workspace-dir/--manifest"
            ) from None
        except OSError as exc:
            raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from None
        try:
            return Manifest.from_json(data)
        except ManifestError as exc:
            raise WorkspaceError(f"{path}: {exc}") from None

    def write_manifest(self, manifest: Manifest) -> None:
        _write(self.manifest_path, manifest.to_json(), 0o644)

    def with_owner_keys(self, manifest: Manifest) -> Manifest:
        """``manifest`` listing this workspace's owner keys, generating keys that are missing."""
        seedshare_owner = self.ensure_seedshare_owner_key()
        workload_owner = self.ensure_workload_owner_key()
        return manifest.with_owners(
            [public_key_hex(seedshare_owner.public_key())],
            [key_digest(workload_owner.public_key())],
        )

    def reference_values(
        self, platform: str, snp_measurements: Sequence[str] = ()
    ) -> ReferenceValues:
        """Reference values for a fresh manifest on ``platform`` (``simulated`` or ``snp``).

        ``simulated`` lists this workspace's simulation key (generated if missing). ``snp``
        needs the launch measurements of the pod VM image, which only its build knows.
        """
        if platform == PLATFORM_SIMULATED:
            key = self.ensure_simulation_key()
            return ReferenceValues(
                simulated=(SimulatedReferenceValue(public_key_hex(key.public_key())),)
            )
        if platform == PLATFORM_SNP:
            if not snp_measurements:
                raise WorkspaceError(
                    "SNP reference values need the launch measurement of the pod VM image: "
                    "pass --snp-measurement HEX (96 hex digits) once per trusted image"
                )
            entries = []
            for measurement in snp_measurements:
                text = measurement.strip().lower()
                try:
                    ok = len(bytes.fromhex(text)) == SNP_MEASUREMENT_BYTES
                except ValueError:
                    ok = False
                if not ok:
                    raise WorkspaceError(
                        f"SNP measurement {measurement!r} must be "
                        f"{SNP_MEASUREMENT_BYTES * 2} hex digits"
                    )
                entries.append(
                    SnpReferenceValue(
                        DEFAULT_SNP_PRODUCT,
                        text,
                        DEFAULT_SNP_MINIMUM_TCB,
                        SnpGuestPolicy(smt=True, migrate_ma=False),
                    )
                )
            return ReferenceValues(snp=tuple(entries))
        raise WorkspaceError(
            f"unknown reference values {platform!r}: choose {PLATFORM_SIMULATED} or {PLATFORM_SNP}"
        )

    # Seed shares ------------------------------------------------------------------------

    def write_seed_shares(self, shares: Sequence[SeedShare]) -> None:
        document = {
            "SeedShares": [
                {"PublicKey": s.public_key, "EncryptedSecret": s.encrypted_secret.hex()}
                for s in shares
            ]
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        _write(self.seed_shares_path, data, KEY_FILE_MODE)

    def read_seed_shares(self) -> list[SeedShare]:
        path = self.seed_shares_path
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise WorkspaceError(
                f"{path} does not exist: it is written by the first `contrast set`; "
                "without it the secret seed cannot be recovered"
            ) from None
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"cannot read {path}: {exc}") from None
        try:
            items = raw["SeedShares"]
            if not isinstance(items, list):
                raise TypeError("SeedShares must be a list")
            return [
                SeedShare(str(item["PublicKey"]), bytes.fromhex(item["EncryptedSecret"]))
                for item in items
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkspaceError(f"{path} is malformed ({exc}): restore it from a backup") from None


def load_private_key(
    path: Path, narrow: Callable[[PrivateKeyTypes], _Key | None], description: str
) -> _Key:
    """Load a PEM private key from ``path``; ``narrow`` returns it if it has the right type."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist") from None
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from None
    key = _parse_private_key(data, path, description)
    narrowed = narrow(key)
    if narrowed is None:
        raise WorkspaceError(f"{path} holds a {type(key).__name__}, expected {description}")
    return narrowed


def rsa_key(key: PrivateKeyTypes) -> rsa.RSAPrivateKey | None:
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def ecdsa_key(key: PrivateKeyTypes) -> ec.EllipticCurvePrivateKey | None:
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def ed25519_key(key: PrivateKeyTypes) -> ed25519.Ed25519PrivateKey | None:
    return key if isinstance(key, ed25519.Ed25519PrivateKey) else None


def _parse_private_key(data: bytes, path: Path, description: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The parser's message may quote key bytes; name the file and stay silent on content.
        raise WorkspaceError(
            f"{path} is not an unencrypted PEM private key ({description} expected); "
            "it is never overwritten: fix or move it away"
        ) from None


def _ensure_key(
    path: Path,
    generate: Callable[[], _GeneratedKey],
    narrow: Callable[[PrivateKeyTypes], _GeneratedKey | None],
    description: str,
) -> _GeneratedKey:
    if path.exists():
        return load_private_key(path, narrow, description)
    key = generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if _create_exclusive(path, pem, KEY_FILE_MODE):
        return key
    # Someone else created it between our check and our link: theirs wins.
    return load_private_key(path, narrow, description)


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` atomically with ``data`` unless it exists; True if we created it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_exclusive(path, data, mode)
    except OSError as exc:
        raise WorkspaceError(f"cannot create {path}: {exc.strerror}") from None


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode)
    except OSError as exc:
        raise WorkspaceError(f"cannot write {path}: {exc.strerror}") from None
