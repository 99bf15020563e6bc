"""SNP evidence on the wire: the report followed by the host's certificate table.

``evidence = report (1184 bytes) || certificate table (possibly empty)``

That is exactly what a guest gets from the kernel (configfs-tsm ``outblob`` and
``auxblob``, or the two buffers of ``SNP_GET_EXT_REPORT``), so the issuer forwards it
unchanged and the validator needs no other framing.

The certificate table is the one the GHCB specification defines for extended guest
requests: entries of (GUID, offset, length), each 24 bytes, ended by an all-zero entry;
offsets count from the start of the table. GUIDs are compared in the byte order in which
google/go-sev-guest and the hosts that feed it write them (RFC 4122 order).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from contrast.attestation.snp.report import REPORT_SIZE

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")

ENTRY_SIZE = 24
MAX_ENTRIES = 64


class EvidenceFormatError(ValueError):
    """The evidence or its certificate table is malformed."""


@dataclass(frozen=True)
class SnpEvidence:
    report: bytes
    certificates: Mapping[uuid.UUID, bytes]

    @property
    def leaf_certificate(self) -> bytes | None:
        return self.certificates.get(GUID_VCEK) or self.certificates.get(GUID_VLEK)


def parse_certificate_table(table: bytes) -> dict[uuid.UUID, bytes]:
    """The certificates in a GHCB certificate table, by GUID. An empty table has none."""
    if not table:
        return {}
    entries: list[tuple[uuid.UUID, int, int]] = []
    offset = 0
    while True:
        if offset + ENTRY_SIZE > len(table):
            raise EvidenceFormatError(
                "certificate table is truncated: no all-zero entry ends its index"
            )
        raw_guid = table[offset : offset + 16]
        data_offset, length = struct.unpack_from("<II", table, offset + 16)
        offset += ENTRY_SIZE
        if raw_guid == bytes(16) and data_offset == 0 and length == 0:
            break
        if len(entries) == MAX_ENTRIES:
            raise EvidenceFormatError(f"certificate table has more than {MAX_ENTRIES} entries")
        entries.append((uuid.UUID(bytes=raw_guid), data_offset, length))
    certificates: dict[uuid.UUID, bytes] = {}
    for guid, data_offset, length in entries:
        if data_offset < offset or data_offset + length > len(table):
            raise EvidenceFormatError(
                f"certificate table entry {guid} points outside the table "
                f"(offset {data_offset}, length {length}, table {len(table)} bytes)"
            )
        if guid in certificates:
            raise EvidenceFormatError(f"certificate table names {guid} twice")
        certificates[guid] = table[data_offset : data_offset + length]
    return certificates


def build_certificate_table(certificates: Mapping[uuid.UUID, bytes]) -> bytes:
    """The GHCB certificate table holding ``certificates`` (the inverse of parsing)."""
    if not certificates:
        return b""
    index = bytearray()
    data = bytearray()
    data_start = (len(certificates) + 1) * ENTRY_SIZE
    for guid, certificate in certificates.items():
        index += guid.bytes + struct.pack("<II", data_start + len(data), len(certificate))
        data += certificate
    return bytes(index + bytes(ENTRY_SIZE) + data)


def encode_evidence(report: bytes, certificate_table: bytes) -> bytes:
    if len(report) != REPORT_SIZE:
        raise EvidenceFormatError(f"SNP report has {len(report)} bytes, expected {REPORT_SIZE}")
    return report + certificate_table


def decode_evidence(evidence: bytes) -> SnpEvidence:
    if len(evidence) < REPORT_SIZE:
        raise EvidenceFormatError(
            f"SNP evidence has {len(evidence)} bytes, less than one {REPORT_SIZE}-byte report"
        )
    return SnpEvidence(
        report=evidence[:REPORT_SIZE],
        certificates=parse_certificate_table(evidence[REPORT_SIZE:]),
    )
