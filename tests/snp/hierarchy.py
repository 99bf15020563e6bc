"""A test ARK -> ASK -> VCEK hierarchy shaped like AMD's, and reports signed by its VCEK.

The real report in shared/testdata/snp proves that parsing and cryptography match the real
world; this hierarchy lets tests vary every field, because the tests hold the keys.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from contrast.attestation.snp.certchain import parse_certificate
from contrast.attestation.snp.report import Product, TcbVersion, encode_tcb
from contrast.attestation.snp.verify import CertificateSet

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "snp"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
CHIP_ID = bytes(range(64))
TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
MEASUREMENT = bytes.fromhex("ab" * 48)
HOST_DATA = hashlib.sha256(b"policy").digest()
REPORT_DATA = hashlib.sha512(b"public key" + b"nonce").digest()
POLICY_NO_DEBUG = (1 << 17) | (1 << 16)  # reserved-one bit, SMT allowed


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _integer_extension(oid: str, value: int) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), bytes([0x02, 0x01, value]))


def _spl_extensions(tcb: TcbVersion) -> list[x509.UnrecognizedExtension]:
    return [
        _integer_extension("1.3.6.1.4.1.3704.1.3.1", tcb.bootloader),
        _integer_extension("1.3.6.1.4.1.3704.1.3.2", tcb.tee),
        _integer_extension("1.3.6.1.4.1.3704.1.3.3", tcb.snp),
        _integer_extension("1.3.6.1.4.1.3704.1.3.8", tcb.microcode),
    ] + ([] if tcb.fmc is None else [_integer_extension("1.3.6.1.4.1.3704.1.3.9", tcb.fmc)])


@functools.cache
def _rsa_key(label: str) -> rsa.RSAPrivateKey:
    del label  # one key per label, generated once per test session
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    del label
    return ec.generate_private_key(ec.SECP384R1())


def _certificate(
    subject: str,
    issuer: str,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signer: rsa.RSAPrivateKey,
    extensions: list[x509.UnrecognizedExtension],
    ca: bool,
    not_after: datetime,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=365))
        .not_valid_after(not_after)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    certificate = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Hierarchy:
    """A product's test ARK, ASK and VCEK, and the root pin that trusts this ARK."""

    product: Product
    ark: bytes
    ask: bytes
    vcek: bytes
    vcek_key: ec.EllipticCurvePrivateKey
    key_label: str = "main"

    @property
    def certificates(self) -> CertificateSet:
        return CertificateSet(root=self.ark, intermediate=self.ask, leaf=self.vcek)

    @property
    def roots(self) -> dict[Product, bytes]:
        return {self.product: parse_certificate(self.ark, "ARK").public_key_sha256}


def make_hierarchy(
    product: Product = Product.MILAN,
    tcb: TcbVersion = TCB,
    chip_id: bytes = CHIP_ID,
    leaf_name: str = "SEV-VCEK",
    product_name: str | None = None,
    vcek_not_after: datetime = NOW + timedelta(days=365),
    key_label: str = "main",
) -> Hierarchy:
    ark_key, ask_key = _rsa_key(f"ark-{key_label}"), _rsa_key(f"ask-{key_label}")
    vcek_key = _ec_key(f"vcek-{key_label}")
    ark_name, ask_name = f"ARK-{product.value}", f"SEV-{product.value}"
    if leaf_name == "SEV-VLEK":
        ask_name = f"SEV-VLEK-{product.value}"
    ark = _certificate(
        ark_name, ark_name, ark_key.public_key(), ark_key, [], True, NOW + timedelta(days=3650)
    )
    ask = _certificate(
        ask_name, ark_name, ask_key.public_key(), ark_key, [], True, NOW + timedelta(days=3650)
    )
    name = (product_name or f"{product.value}-B0").encode()
    extensions = [
        _integer_extension("1.3.6.1.4.1.3704.1.1", 0),
        x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.2"), bytes([0x16, len(name)]) + name
        ),
        *_spl_extensions(tcb),
    ]
    if leaf_name == "SEV-VCEK":
        extensions.append(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4"), chip_id)
        )
    vcek = _certificate(
        leaf_name, ask_name, vcek_key.public_key(), ask_key, extensions, False, vcek_not_after
    )
    return Hierarchy(product, ark, ask, vcek, vcek_key, key_label)


def make_crl(
    hierarchy: Hierarchy,
    revoked: tuple[int, ...] = (),
    next_update: datetime = NOW + timedelta(days=30),
    signer_label: str | None = None,
) -> bytes:
    """The ARK's CRL revoking ``revoked`` serials, signed by the ARK (or another key)."""
    ark_name = f"ARK-{hierarchy.product.value}"
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name(ark_name))
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(days=2))
            .build()
        )
    signer = _rsa_key(f"ark-{signer_label or hierarchy.key_label}")
    crl = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)
    return crl.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class ReportFields:
    """Every field of a report this test suite varies, with values that pass by default."""

    product: Product = Product.MILAN
    version: int = 3
    policy: int = POLICY_NO_DEBUG
    vmpl: int = 0
    signing_key: int = 0
    mask_chip_key: bool = False
    report_data: bytes = REPORT_DATA
    measurement: bytes = MEASUREMENT
    host_data: bytes = HOST_DATA
    reported_tcb: TcbVersion = TCB
    current_tcb: TcbVersion | None = None
    committed_tcb: TcbVersion | None = None
    chip_id: bytes = CHIP_ID
    cpuid: tuple[int, int, int] | None = None
    extra: dict[int, bytes] = field(default_factory=dict)

    def but(self, **changes: object) -> ReportFields:
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_CPUID = {
    Product.MILAN: (0x19, 0x01, 0x01),
    Product.GENOA: (0x19, 0x11, 0x01),
    Product.TURIN: (0x1A, 0x02, 0x00),
}


def build_report(fields: ReportFields, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A report with ``fields``, signed like the firmware signs it."""
    data = bytearray(0x4A0)
    product = fields.product
    struct.pack_into("<IIQ", data, 0, fields.version, 0, fields.policy)
    struct.pack_into("<II", data, 0x30, fields.vmpl, 1)
    reported = encode_tcb(fields.reported_tcb, product)
    struct.pack_into(
        "<QQ", data, 0x38, encode_tcb(fields.current_tcb or fields.reported_tcb, product), 1
    )
    struct.pack_into("<I", data, 0x48, fields.signing_key << 2 | int(fields.mask_chip_key) << 1)
    data[0x50:0x90] = fields.report_data
    data[0x90:0xC0] = fields.measurement
    data[0xC0:0xE0] = fields.host_data
    struct.pack_into("<Q", data, 0x180, reported)
    if fields.version >= 3:
        data[0x188:0x18B] = bytes(fields.cpuid or DEFAULT_CPUID[product])
    data[0x1A0:0x1E0] = fields.chip_id
    struct.pack_into(
        "<Q", data, 0x1E0, encode_tcb(fields.committed_tcb or fields.reported_tcb, product)
    )
    data[0x1E8:0x1EF] = bytes([4, 52, 1, 0, 4, 52, 1])
    struct.pack_into("<Q", data, 0x1F0, reported)
    for offset, value in fields.extra.items():
        data[offset : offset + len(value)] = value
    signature = key.sign(bytes(data[:0x2A0]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(signature)
    data[0x2A0:0x2E8] = r.to_bytes(72, "little")
    data[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(data)


def real_files() -> tuple[bytes, bytes, bytes]:
    """The real report, VCEK and Milan ASK+ARK PEM from shared/testdata/snp."""
    return (
        (TESTDATA / "attestation.bin").read_bytes(),
        (TESTDATA / "vcek.der").read_bytes(),
        (TESTDATA / "ask_ark_milan.pem").read_bytes(),
    )
