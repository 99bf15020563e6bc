"""The SEV-SNP attestation report: strict parsing of the 1184-byte structure, nothing else.

Layout from AMD's "SEV Secure Nested Paging Firmware ABI Specification" (publication
56860), table "ATTESTATION_REPORT Structure". Versions 2, 3 and 5 share one size and one
layout; later versions only give meaning to bytes that were reserved before (version 3 adds
the CPUID family/model/stepping at 0x188, version 5 the mitigation vectors at 0x1F8).

The signature covers bytes 0x000..0x29F. The signature field itself (0x2A0..0x49F) is not
signed, so every byte of it that is not R or S must be zero and R and S must fit in 48
bytes; otherwise bits could be flipped there without the signature noticing.

This module only parses. Whether a report is genuine and acceptable is decided in
``verify.py``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
MIN_REPORT_VERSION = 2
# The newest layout we know. A newer version may give meaning to bytes we ignore, so it is
# refused until someone reads the new specification and raises this number.
MAX_REPORT_VERSION = 5
SIGNATURE_ALGORITHM_ECDSA_P384_SHA384 = 1
ECDSA_COMPONENT_SIZE = 72  # R and S are stored as 72-byte little-endian integers
P384_SCALAR_SIZE = 48
MAX_VMPL = 3


class ReportFormatError(ValueError):
    """The bytes are not a well-formed SNP attestation report."""


class SigningKey(enum.IntEnum):
    """Which key signed the report (ATTESTATION_REPORT bits 4:2 at 0x48)."""

    VCEK = 0
    VLEK = 1
    NONE = 7


class Product(enum.Enum):
    """AMD EPYC generations that run SEV-SNP; the value is the name AMD's KDS uses."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


@dataclass(frozen=True)
class TcbVersion:
    """The security patch levels in a TCB_VERSION. ``fmc`` exists only on Turin and later."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def describe(self) -> str:
        parts = [] if self.fmc is None else [f"fmc={self.fmc}"]
        parts += [
            f"bootloader={self.bootloader}",
            f"tee={self.tee}",
            f"snp={self.snp}",
            f"microcode={self.microcode}",
        ]
        return " ".join(parts)


def decode_tcb(raw: int, product: Product) -> TcbVersion:
    """Split a raw 64-bit TCB_VERSION into its components; the layout depends on the product.

    Milan and Genoa: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode. Turin: byte 0 FMC,
    1 boot loader, 2 TEE, 3 SNP, 7 microcode. The remaining bytes are reserved.
    """
    octets = raw.to_bytes(8, "little")
    if product is Product.TURIN:
        return TcbVersion(
            bootloader=octets[1], tee=octets[2], snp=octets[3], microcode=octets[7], fmc=octets[0]
        )
    return TcbVersion(bootloader=octets[0], tee=octets[1], snp=octets[6], microcode=octets[7])


def encode_tcb(tcb: TcbVersion, product: Product) -> int:
    """The inverse of :func:`decode_tcb` (used to name VCEKs at the key distribution service)."""
    octets = bytearray(8)
    if product is Product.TURIN:
        octets[0] = tcb.fmc or 0
        octets[1], octets[2], octets[3] = tcb.bootloader, tcb.tee, tcb.snp
    else:
        octets[0], octets[1], octets[6] = tcb.bootloader, tcb.tee, tcb.snp
    octets[7] = tcb.microcode
    return int.from_bytes(octets, "little")


@dataclass(frozen=True)
class GuestPolicy:
    """The guest policy the VM was launched with (ATTESTATION_REPORT 0x08)."""

    raw: int

    ABI_MINOR_MASK = 0xFF
    SMT_BIT = 16
    RESERVED_MUST_BE_ONE_BIT = 17
    MIGRATE_MA_BIT = 18
    DEBUG_BIT = 19
    SINGLE_SOCKET_BIT = 20
    # Bits 21..25 are defined by newer ABI versions (CXL, AES-256-XTS, RAPL, ciphertext
    # hiding, page swap); bits 26..63 are reserved and must be zero.
    HIGHEST_DEFINED_BIT = 25

    def _bit(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def abi_major(self) -> int:
        return self.raw >> 8 & 0xFF

    @property
    def abi_minor(self) -> int:
        return self.raw & self.ABI_MINOR_MASK

    @property
    def smt_allowed(self) -> bool:
        return self._bit(self.SMT_BIT)

    @property
    def migration_agent_allowed(self) -> bool:
        return self._bit(self.MIGRATE_MA_BIT)

    @property
    def debug_allowed(self) -> bool:
        return self._bit(self.DEBUG_BIT)

    @property
    def single_socket(self) -> bool:
        return self._bit(self.SINGLE_SOCKET_BIT)

    def describe(self) -> str:
        return (
            f"{self.raw:#x} (abi {self.abi_major}.{self.abi_minor}, "
            f"smt={'allowed' if self.smt_allowed else 'denied'}, "
            f"migration-agent={'allowed' if self.migration_agent_allowed else 'denied'}, "
            f"debug={'allowed' if self.debug_allowed else 'denied'}, "
            f"single-socket={'yes' if self.single_socket else 'no'})"
        )


@dataclass(frozen=True)
class AttestationReport:
    """Every field of an SNP attestation report that a verification decision can use."""

    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algorithm: int
    current_tcb: int
    platform_info: int
    author_key_enabled: bool
    chip_key_masked: bool
    signing_key: SigningKey
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: int
    launch_mitigation_vector: int | None  # version 5+
    current_mitigation_vector: int | None  # version 5+
    signature_r: int
    signature_s: int
    signed_bytes: bytes

    @property
    def product_from_cpuid(self) -> Product | None:
        """The product the CPUID fields name (versions 3+), or None if they name none."""
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return product_from_cpuid(self.cpuid_family, self.cpuid_model)


def product_from_cpuid(family: int, model: int) -> Product | None:
    # AMD family 19h models 00h-0Fh are Milan, 10h-1Fh and A0h-AFh Genoa (incl. Bergamo and
    # Siena); family 1Ah models 00h-1Fh are Turin.
    if family == 0x19 and model <= 0x0F:
        return Product.MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return Product.GENOA
    if family == 0x1A and model <= 0x1F:
        return Product.TURIN
    return None


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _u64(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def _signature_component(data: bytes, offset: int, name: str) -> int:
    component = data[offset : offset + ECDSA_COMPONENT_SIZE]
    if any(component[P384_SCALAR_SIZE:]):
        raise ReportFormatError(
            f"attestation report signature: {name} does not fit in 48 bytes "
            f"(bytes {offset + P384_SCALAR_SIZE:#x}..{offset + ECDSA_COMPONENT_SIZE - 1:#x} "
            "must be zero)"
        )
    return int.from_bytes(component, "little")


def parse_report(data: bytes) -> AttestationReport:
    """Parse one attestation report; raise :class:`ReportFormatError` naming the bad field."""
    if len(data) != REPORT_SIZE:
        raise ReportFormatError(
            f"attestation report has {len(data)} bytes; an SNP report has exactly "
            f"{REPORT_SIZE} bytes (truncated or extra data?)"
        )
    version = _u32(data, 0x00)
    if not MIN_REPORT_VERSION <= version <= MAX_REPORT_VERSION:
        raise ReportFormatError(
            f"attestation report version {version} is not supported "
            f"(supported: {MIN_REPORT_VERSION}..{MAX_REPORT_VERSION})"
        )
    signature_algorithm = _u32(data, 0x34)
    if signature_algorithm != SIGNATURE_ALGORITHM_ECDSA_P384_SHA384:
        raise ReportFormatError(
            f"attestation report signature algorithm {signature_algorithm} is not supported "
            "(expected 1: ECDSA P-384 with SHA-384)"
        )
    policy = GuestPolicy(_u64(data, 0x08))
    if not policy._bit(GuestPolicy.RESERVED_MUST_BE_ONE_BIT):
        raise ReportFormatError(f"guest policy {policy.raw:#x}: bit 17 is reserved and must be one")
    if policy.raw >> (GuestPolicy.HIGHEST_DEFINED_BIT + 1):
        raise ReportFormatError(
            f"guest policy {policy.raw:#x} sets reserved bits above bit "
            f"{GuestPolicy.HIGHEST_DEFINED_BIT}; their meaning is unknown, so it is refused"
        )
    vmpl = _u32(data, 0x30)
    if vmpl > MAX_VMPL:
        raise ReportFormatError(f"attestation report VMPL {vmpl} is out of range (0..3)")
    flags = _u32(data, 0x48)
    if flags >> 5:
        raise ReportFormatError(f"attestation report key flags {flags:#x} set reserved bits")
    signing_key_value = flags >> 2 & 0x7
    try:
        signing_key = SigningKey(signing_key_value)
    except ValueError:
        raise ReportFormatError(
            f"attestation report names signing key {signing_key_value}, which is reserved "
            "(0 = VCEK, 1 = VLEK, 7 = none)"
        ) from None
    has_cpuid = version >= 3
    signature_reserved = data[SIGNED_SIZE + 2 * ECDSA_COMPONENT_SIZE :]
    if any(signature_reserved):
        raise ReportFormatError(
            "attestation report signature: the reserved bytes after R and S "
            f"({SIGNED_SIZE + 2 * ECDSA_COMPONENT_SIZE:#x}..{REPORT_SIZE - 1:#x}) must be zero"
        )
    return AttestationReport(
        version=version,
        guest_svn=_u32(data, 0x04),
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algorithm=signature_algorithm,
        current_tcb=_u64(data, 0x38),
        platform_info=_u64(data, 0x40),
        author_key_enabled=bool(flags & 1),
        chip_key_masked=bool(flags >> 1 & 1),
        signing_key=signing_key,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=_u64(data, 0x180),
        cpuid_family=data[0x188] if has_cpuid else None,
        cpuid_model=data[0x189] if has_cpuid else None,
        cpuid_stepping=data[0x18A] if has_cpuid else None,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=_u64(data, 0x1E0),
        current_version=(data[0x1EA], data[0x1E9], data[0x1E8]),
        committed_version=(data[0x1EE], data[0x1ED], data[0x1EC]),
        launch_tcb=_u64(data, 0x1F0),
        launch_mitigation_vector=_u64(data, 0x1F8) if version >= 5 else None,
        current_mitigation_vector=_u64(data, 0x200) if version >= 5 else None,
        signature_r=_signature_component(data, SIGNED_SIZE, "R"),
        signature_s=_signature_component(data, SIGNED_SIZE + ECDSA_COMPONENT_SIZE, "S"),
        signed_bytes=data[:SIGNED_SIZE],
    )
