"""The simulated TEE: evidence shaped like a real report, signed by a local Ed25519 key.

For development, tests and the embedded default only. It proves nothing about the machine:
whoever holds the simulation key can sign any report. A validator therefore accepts it only
where the manifest's reference values name that key, and logs every acceptance as insecure.

Report layout (big-endian, 212 bytes)::

    offset  size  field
         0     4  magic "CSIM"
         4     4  version (1)
         8    48  measurement
        56    32  host data (the policy hash)
        88    64  report data
       152    60  reserved, zero
       212        end of the signed part; Ed25519 signature (64 bytes) follows

Endorsements: the DER SubjectPublicKeyInfo of the simulation key.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.attestation.base import (
    HOST_DATA_BYTES,
    REPORT_DATA_BYTES,
    AttestationError,
    Evidence,
    VerifiedEvidence,
)
from contrast.log import event
from contrast.manifest import PLATFORM_SIMULATED, SimulatedReferenceValue, public_key_der

log = logging.getLogger("contrast.attestation.simulated")

MAGIC = b"CSIM"
VERSION = 1
MEASUREMENT_BYTES = 48
_HEADER = struct.Struct(">4sI48s32s64s60x")
SIGNED_BYTES = _HEADER.size
SIGNATURE_BYTES = 64
REPORT_BYTES = SIGNED_BYTES + SIGNATURE_BYTES

# What a simulated guest "measures": a fixed, documented value, like a known image.
SIMULATED_MEASUREMENT = hashlib.sha384(b"contrast-securepv simulated TEE v1").digest()


@dataclass(frozen=True)
class SimulatedReport:
    measurement: bytes
    host_data: bytes
    report_data: bytes
    signature: bytes
    signed_part: bytes


def parse_report(report: bytes) -> SimulatedReport:
    if len(report) != REPORT_BYTES:
        raise AttestationError(
            "format", f"simulated report has {len(report)} bytes, expected {REPORT_BYTES}"
        )
    magic, version, measurement, host_data, report_data = _HEADER.unpack(report[:SIGNED_BYTES])
    if magic != MAGIC or version != VERSION:
        raise AttestationError("format", "not a version 1 simulated report")
    return SimulatedReport(
        measurement, host_data, report_data, report[SIGNED_BYTES:], report[:SIGNED_BYTES]
    )


class SimulatedIssuer:
    """Issues simulated evidence with a fixed host data (the policy hash a runtime would pin)."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, host_data: bytes) -> None:
        if len(host_data) != HOST_DATA_BYTES:
            raise ValueError(f"host data must have {HOST_DATA_BYTES} bytes")
        self._key = key
        self._host_data = host_data
        self._endorsement = public_key_der(key.public_key())

    @property
    def platform(self) -> str:
        return PLATFORM_SIMULATED

    def issue(self, report_data: bytes) -> Evidence:
        if len(report_data) != REPORT_DATA_BYTES:
            raise ValueError(f"report data must have {REPORT_DATA_BYTES} bytes")
        signed = _HEADER.pack(MAGIC, VERSION, SIMULATED_MEASUREMENT, self._host_data, report_data)
        return Evidence(PLATFORM_SIMULATED, signed + self._key.sign(signed), self._endorsement)


class SimulatedValidator:
    """Accepts simulated evidence signed by a key the reference values name. Insecure."""

    def __init__(self, reference_values: Sequence[SimulatedReferenceValue]) -> None:
        self._trusted = {bytes.fromhex(rv.simulation_public_key) for rv in reference_values}

    @property
    def platform(self) -> str:
        return PLATFORM_SIMULATED

    def validate(self, evidence: Evidence, expected_report_data: bytes) -> VerifiedEvidence:
        if evidence.platform != PLATFORM_SIMULATED:
            raise AttestationError("platform", f"not simulated evidence: {evidence.platform!r}")
        report = parse_report(evidence.report)
        if evidence.endorsements not in self._trusted:
            raise AttestationError(
                "simulation-key",
                "the evidence is signed by a simulation key the reference values do not name",
            )
        try:
            key = serialization.load_der_public_key(evidence.endorsements)
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise AttestationError("simulation-key", "the simulation key is not Ed25519")
            key.verify(report.signature, report.signed_part)
        except InvalidSignature:
            raise AttestationError(
                "signature", "the report's signature does not verify with the simulation key"
            ) from None
        if report.report_data != expected_report_data:
            raise AttestationError(
                "report-data",
                "the evidence is not bound to this connection's nonce and key "
                "(replayed, relayed, or made for another key)",
            )
        event(
            log,
            "insecure-simulated-attestation-accepted",
            logging.WARNING,
            insecure=True,
            host_data=report.host_data.hex(),
        )
        return VerifiedEvidence(PLATFORM_SIMULATED, report.host_data, report.measurement)
