"""The attestation interface every platform implements, and how evidence binds a channel.

Report data (the 64 bytes a TEE signs on the guest's behalf) binds evidence to a fresh
nonce chosen by the verifier and to the public key that terminates the channel::

    report_data = SHA-512(nonce || SHA-256(DER SubjectPublicKeyInfo of the key))

with a 32-byte nonce. A verifier computes the report data it expects from its own nonce and
the key it sees, and hands that to the platform's validator; evidence replayed from another
connection (other nonce) or made for another key never matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

NONCE_BYTES = 32
REPORT_DATA_BYTES = 64
HOST_DATA_BYTES = 32


class AttestationError(Exception):
    """Evidence was refused; ``check`` names the check that failed (``signature``, ...)."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"attestation check {check!r} failed: {message}")


@dataclass(frozen=True)
class Evidence:
    """What an issuer produces: a platform tag, the signed report, and its endorsements.

    ``endorsements`` is platform-specific: the simulated TEE puts its public key there, an
    SNP issuer the VCEK and the certificate chain the host provides.
    """

    platform: str
    report: bytes
    endorsements: bytes = b""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "Platform": self.platform,
                "Report": base64.b64encode(self.report).decode(),
                "Endorsements": base64.b64encode(self.endorsements).decode(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evidence:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or set(raw) != {"Platform", "Report", "Endorsements"}:
                raise ValueError("unexpected fields")
            platform = raw["Platform"]
            if not isinstance(platform, str):
                raise ValueError("platform is not a string")
            report = base64.b64decode(raw["Report"], validate=True)
            endorsements = base64.b64decode(raw["Endorsements"], validate=True)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise AttestationError("format", f"evidence is malformed ({exc})") from None
        return cls(platform, report, endorsements)


@dataclass(frozen=True)
class VerifiedEvidence:
    """What a validator vouches for once every check passed."""

    platform: str
    host_data: bytes  # 32 bytes: the SHA-256 of the runtime policy the host pinned
    measurement: bytes  # the launch measurement of the guest

    @property
    def policy_hash(self) -> str:
        return self.host_data.hex()


class Issuer(Protocol):
    """Produces evidence inside a TEE, carrying the given report data."""

    @property
    def platform(self) -> str: ...

    def issue(self, report_data: bytes) -> Evidence: ...


class Validator(Protocol):
    """Checks evidence of one platform against reference values.

    ``validate`` raises AttestationError naming the failed check, or returns what the
    evidence proves. It must compare the report data in the evidence with
    ``expected_report_data`` (constant time is not needed: both are public).
    """

    @property
    def platform(self) -> str: ...

    def validate(self, evidence: Evidence, expected_report_data: bytes) -> VerifiedEvidence: ...


def report_data_for(nonce: bytes, public_key_der: bytes) -> bytes:
    """The report data binding evidence to ``nonce`` and the key whose DER SPKI is given."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce has {len(nonce)} bytes, {NONCE_BYTES} are required")
    return hashlib.sha512(nonce + hashlib.sha256(public_key_der).digest()).digest()


def validate_evidence(
    evidence: Evidence, expected_report_data: bytes, validators: Sequence[Validator]
) -> VerifiedEvidence:
    """Validate with the validator of the evidence's platform; unknown platforms are refused."""
    for validator in validators:
        if validator.platform == evidence.platform:
            return validator.validate(evidence, expected_report_data)
    trusted = ", ".join(v.platform for v in validators) or "none"
    raise AttestationError(
        "platform",
        f"evidence comes from platform {evidence.platform!r}, but the reference values "
        f"trust only: {trusted}",
    )
