"""AMD's certificate chain for SEV-SNP: ARK (root, pinned) -> ASK/ASVK -> VCEK/VLEK.

Every certificate here is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt (the
leaf's own key is ECDSA P-384 and signs reports, not certificates). The product (Milan,
Genoa, Turin) is decided by which pinned root key the ARK carries, and the leaf's product
name extension must agree; the report alone never decides it.

Certificates are read with the strict DER reader in ``der.py``, not ``cryptography.x509``:
see that module for why (AMD's VCEKs have a serial number of zero).

Pinned roots, as SHA-256 over the ARK's DER SubjectPublicKeyInfo:
- Milan and Genoa: the ARKs in AMD's ``ask_ark_milan.pem``/``ask_ark_genoa.pem`` (the
  copies in ``shared/testdata/snp`` come from google/go-sev-guest's ``verify/trust``).
- Turin: the ARK-Turin certificate that AMD's KDS serves at
  ``https://kdsintf.amd.com/vcek/v1/Turin/cert_chain``, identical in google/go-sev-guest's
  ``verify/trust/ask_ark_turin_vlek.pem`` and other public copies; it is self-signed with
  the key pinned below (certificate SHA-256 1f084161a44bb6d9...73dd3f6a).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from contrast.attestation.snp import der
from contrast.attestation.snp.report import Product, SigningKey, TcbVersion

AMD_ROOT_KEYS: Mapping[Product, bytes] = {
    Product.MILAN: bytes.fromhex(
        "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9"
    ),
    Product.GENOA: bytes.fromhex(
        "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831"
    ),
    Product.TURIN: bytes.fromhex(
        "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08"
    ),
}

OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_COMMON_NAME = "2.5.4.3"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
PSS_SALT_LENGTH = 48

AMD_EXTENSION_PREFIX = "1.3.6.1.4.1.3704.1."
OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
OID_BOOTLOADER_SPL = "1.3.6.1.4.1.3704.1.3.1"
OID_TEE_SPL = "1.3.6.1.4.1.3704.1.3.2"
OID_SNP_SPL = "1.3.6.1.4.1.3704.1.3.3"
OID_MICROCODE_SPL = "1.3.6.1.4.1.3704.1.3.8"
OID_FMC_SPL = "1.3.6.1.4.1.3704.1.3.9"
OID_HARDWARE_ID = "1.3.6.1.4.1.3704.1.4"
HARDWARE_ID_SIZE = 64

# Extensions a certificate may mark critical: the ones whose meaning we enforce or that
# carry no authority. An unknown critical extension means the issuer wants a check we do
# not do, so the certificate is refused.
UNDERSTOOD_CRITICAL_EXTENSIONS = frozenset({OID_BASIC_CONSTRAINTS, OID_KEY_USAGE})


class CertificateChainError(ValueError):
    """A certificate is malformed, or the chain does not lead to a pinned AMD root."""


@dataclass(frozen=True)
class AmdCertificate:
    """The parts of an X.509 certificate that the SNP chain check reads."""

    name: str  # what the certificate is called in messages ("VCEK", "ASK", "ARK")
    der: bytes
    tbs: bytes
    tbs_signature_algorithm: bytes
    signature_algorithm: bytes
    signature: bytes
    serial_number: int
    issuer: bytes
    subject: bytes
    issuer_common_name: str
    subject_common_name: str
    not_before: datetime
    not_after: datetime
    subject_public_key_info: bytes
    extensions: Mapping[str, bytes]
    critical_extensions: frozenset[str]

    @property
    def public_key_sha256(self) -> bytes:
        return hashlib.sha256(self.subject_public_key_info).digest()

    def is_certificate_authority(self) -> bool:
        value = self.extensions.get(OID_BASIC_CONSTRAINTS)
        if value is None:
            return False
        what = f"{self.name} basicConstraints"
        try:
            fields = der.children(
                der.expect(der.parse_single(value, what), der.TAG_SEQUENCE, what), what
            )
        except der.DerError as error:
            raise CertificateChainError(str(error)) from None
        return bool(fields) and fields[0].tag == der.TAG_BOOLEAN and fields[0].content == b"\xff"


def _common_name(name: der.Element, what: str) -> str:
    for relative_name in der.children(der.expect(name, der.TAG_SEQUENCE, what), what):
        for attribute in der.children(der.expect(relative_name, der.TAG_SET, what), what):
            fields = der.children(der.expect(attribute, der.TAG_SEQUENCE, what), what)
            if len(fields) == 2 and der.decode_oid(fields[0], what) == OID_COMMON_NAME:
                if fields[1].tag not in (
                    der.TAG_UTF8_STRING,
                    der.TAG_PRINTABLE_STRING,
                    der.TAG_IA5_STRING,
                ):
                    raise der.DerError(f"{what}: common name has string tag {fields[1].tag:#x}")
                return fields[1].content.decode("utf-8", errors="strict")
    raise der.DerError(f"{what}: no common name")


def decode_time(element: der.Element, what: str) -> datetime:
    text = element.content.decode("ascii", errors="strict")
    if element.tag == der.TAG_UTC_TIME and len(text) == 13:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif element.tag != der.TAG_GENERALIZED_TIME or len(text) != 15:
        raise der.DerError(f"{what}: validity time {text!r} is not a DER UTCTime/GeneralizedTime")
    if not text.endswith("Z") or not text[:-1].isdigit():
        raise der.DerError(f"{what}: validity time {text!r} is not in UTC")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _extensions(element: der.Element, what: str) -> tuple[dict[str, bytes], frozenset[str]]:
    explicit = der.children(element, what)
    if len(explicit) != 1:
        raise der.DerError(f"{what}: malformed extensions wrapper")
    values: dict[str, bytes] = {}
    critical: set[str] = set()
    for extension in der.children(der.expect(explicit[0], der.TAG_SEQUENCE, what), what):
        fields = der.children(der.expect(extension, der.TAG_SEQUENCE, what), what)
        if len(fields) not in (2, 3):
            raise der.DerError(f"{what}: malformed extension")
        oid = der.decode_oid(fields[0], what)
        if oid in values:
            raise der.DerError(f"{what}: extension {oid} appears twice")
        if len(fields) == 3:
            flag = der.expect(fields[1], der.TAG_BOOLEAN, f"{what} extension {oid}")
            if flag.content != b"\xff":
                # DER omits the default FALSE; anything else here is not DER.
                raise der.DerError(f"{what}: extension {oid} has a non-DER critical flag")
            critical.add(oid)
        values[oid] = der.expect(fields[-1], der.TAG_OCTET_STRING, f"{what} {oid}").content
    return values, frozenset(critical)


def parse_certificate(data: bytes, name: str) -> AmdCertificate:
    """Parse one DER certificate; ``name`` ("VCEK", "ASK", ...) appears in every error."""
    what = f"{name} certificate"
    try:
        outer = der.children(der.expect(der.parse_single(data, what), der.TAG_SEQUENCE, what), what)
        if len(outer) != 3:
            raise der.DerError(f"{what}: expected tbsCertificate, algorithm and signature")
        tbs_element, algorithm, signature_element = outer
        tbs = der.children(der.expect(tbs_element, der.TAG_SEQUENCE, what), what)
        if len(tbs) < 7 or tbs[0].tag != 0xA0:
            raise der.DerError(f"{what}: only X.509 version 3 certificates are accepted")
        version = der.children(tbs[0], what)
        if len(version) != 1 or der.decode_integer(version[0], f"{what} version") != 2:
            raise der.DerError(f"{what}: only X.509 version 3 certificates are accepted")
        serial = der.decode_integer(tbs[1], f"{what} serial number")
        validity = der.children(der.expect(tbs[4], der.TAG_SEQUENCE, what), what)
        if len(validity) != 2:
            raise der.DerError(f"{what}: malformed validity")
        der.expect(tbs[6], der.TAG_SEQUENCE, f"{what} public key")
        extensions: dict[str, bytes] = {}
        critical: frozenset[str] = frozenset()
        for optional in tbs[7:]:
            if optional.tag == 0xA3:
                extensions, critical = _extensions(optional, what)
            elif optional.tag not in (0x81, 0x82):
                raise der.DerError(f"{what}: unexpected field with tag {optional.tag:#x}")
        return AmdCertificate(
            name=name,
            der=data,
            tbs=tbs_element.encoded,
            tbs_signature_algorithm=der.expect(tbs[2], der.TAG_SEQUENCE, what).encoded,
            signature_algorithm=der.expect(algorithm, der.TAG_SEQUENCE, what).encoded,
            signature=der.decode_bit_string(signature_element, f"{what} signature"),
            serial_number=serial,
            issuer=tbs[3].encoded,
            subject=tbs[5].encoded,
            issuer_common_name=_common_name(tbs[3], f"{what} issuer"),
            subject_common_name=_common_name(tbs[5], f"{what} subject"),
            not_before=decode_time(validity[0], f"{what} notBefore"),
            not_after=decode_time(validity[1], f"{what} notAfter"),
            subject_public_key_info=tbs[6].encoded,
            extensions=extensions,
            critical_extensions=critical,
        )
    except (der.DerError, UnicodeDecodeError, ValueError) as error:
        raise CertificateChainError(f"{what} is malformed: {error}") from None


def load_certificate(data: bytes, name: str) -> AmdCertificate:
    """Parse a certificate given as DER or as one PEM block."""
    if data.lstrip().startswith(b"-----BEGIN"):
        blocks = split_pem(data, name)
        if len(blocks) != 1:
            raise CertificateChainError(
                f"{name}: expected one PEM certificate, found {len(blocks)}"
            )
        return parse_certificate(blocks[0], name)
    return parse_certificate(data, name)


def split_pem(data: bytes, what: str) -> list[bytes]:
    """The DER bytes of each ``CERTIFICATE`` block in a PEM file, in order."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    blocks: list[bytes] = []
    rest = data
    while begin in rest:
        start = rest.index(begin) + len(begin)
        if end not in rest[start:]:
            raise CertificateChainError(f"{what}: PEM block without an END line")
        stop = rest.index(end, start)
        try:
            blocks.append(base64.b64decode(b"".join(rest[start:stop].split()), validate=True))
        except binascii.Error as error:
            raise CertificateChainError(f"{what}: PEM block is not valid base64: {error}") from None
        rest = rest[stop + len(end) :]
    if not blocks:
        raise CertificateChainError(f"{what}: no PEM certificate found")
    return blocks


def load_ask_ark_pem(data: bytes, what: str) -> tuple[AmdCertificate, AmdCertificate]:
    """Parse AMD's ``cert_chain`` format: the ASK (or ASVK) first, then the ARK."""
    blocks = split_pem(data, what)
    if len(blocks) != 2:
        raise CertificateChainError(
            f"{what}: expected two certificates (ASK then ARK), found {len(blocks)}"
        )
    return parse_certificate(blocks[0], "ASK"), parse_certificate(blocks[1], "ARK")


def check_pss_algorithm(outer: bytes, signed: bytes, what: str) -> None:
    """The signature algorithm must be RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt.

    ``outer`` is the algorithm next to the signature, ``signed`` the copy inside the signed
    bytes; RFC 5280 requires them to be identical.
    """
    if outer != signed:
        raise CertificateChainError(
            f"{what}: the signed and the outer algorithm identifiers differ"
        )
    try:
        fields = der.children(der.parse_single(outer, what), what)
        if len(fields) != 2 or der.decode_oid(fields[0], what) != OID_RSASSA_PSS:
            raise der.DerError("not RSASSA-PSS with explicit parameters")
        listed = der.children(der.expect(fields[1], der.TAG_SEQUENCE, what), what)
        parameters = {p.tag: p for p in listed}
        if len(parameters) != len(listed) or [p.tag for p in listed] != sorted(parameters):
            raise der.DerError("RSASSA-PSS parameters repeated or out of order")
        if set(parameters) - {0xA0, 0xA1, 0xA2, 0xA3}:
            raise der.DerError("unexpected RSASSA-PSS parameter")
        _expect_hash(parameters.get(0xA0), OID_SHA384, what)
        mask = der.children(
            der.expect(_explicit(parameters.get(0xA1), what), der.TAG_SEQUENCE, what), what
        )
        if len(mask) != 2 or der.decode_oid(mask[0], what) != OID_MGF1:
            raise der.DerError("mask generation is not MGF1")
        _expect_algorithm(mask[1], OID_SHA384, what)
        salt = der.decode_integer(_explicit(parameters.get(0xA2), what), what)
        if salt != PSS_SALT_LENGTH:
            raise der.DerError(f"salt length {salt}, expected {PSS_SALT_LENGTH}")
        if 0xA3 in parameters and der.decode_integer(_explicit(parameters[0xA3], what), what) != 1:
            raise der.DerError("trailer field is not 1")
    except der.DerError as error:
        raise CertificateChainError(f"{what}: {error}") from None


def _explicit(element: der.Element | None, what: str) -> der.Element:
    if element is None:
        raise der.DerError("a required RSASSA-PSS parameter is missing (defaults are SHA-1)")
    inner = der.children(element, what)
    if len(inner) != 1:
        raise der.DerError("malformed explicit parameter")
    return inner[0]


def _expect_hash(element: der.Element | None, oid: str, what: str) -> None:
    _expect_algorithm(_explicit(element, what), oid, what)


def _expect_algorithm(element: der.Element, oid: str, what: str) -> None:
    fields = der.children(der.expect(element, der.TAG_SEQUENCE, what), what)
    if not fields or der.decode_oid(fields[0], what) != oid:
        raise der.DerError(f"hash algorithm is not {oid} (SHA-384)")
    if len(fields) == 2 and fields[1].encoded != b"\x05\x00":
        raise der.DerError("hash algorithm parameters must be absent or NULL")
    if len(fields) > 2:
        raise der.DerError("malformed hash algorithm identifier")


def _rsa_key(certificate: AmdCertificate) -> rsa.RSAPublicKey:
    try:
        key = load_der_public_key(certificate.subject_public_key_info)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateChainError(
            f"{certificate.name} public key is malformed: {error}"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateChainError(f"{certificate.name} public key is not an RSA key")
    return key


def verify_signed_by(child: AmdCertificate, parent: AmdCertificate) -> None:
    """Check that ``parent``'s key signed ``child`` (names, algorithm and signature)."""
    if child.issuer != parent.subject:
        raise CertificateChainError(
            f"{child.name} was issued by {child.issuer_common_name!r}, "
            f"not by the {parent.name} {parent.subject_common_name!r}"
        )
    if not parent.is_certificate_authority():
        raise CertificateChainError(f"{parent.name} is not a certificate authority")
    check_pss_algorithm(
        child.signature_algorithm,
        child.tbs_signature_algorithm,
        f"{child.name} certificate signature algorithm",
    )
    verify_pss_signature(parent, child.signature, child.tbs, f"{child.name} signature")


def verify_pss_signature(
    signer: AmdCertificate, signature: bytes, signed: bytes, what: str
) -> None:
    """Check an RSASSA-PSS/SHA-384 signature of ``signer``'s key over ``signed``."""
    try:
        _rsa_key(signer).verify(
            signature,
            signed,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=PSS_SALT_LENGTH),
            hashes.SHA384(),
        )
    except InvalidSignature:
        raise CertificateChainError(
            f"{what} does not verify with the {signer.name} public key"
        ) from None


@dataclass(frozen=True)
class VerifiedChain:
    """What a verified chain establishes about the key that signs reports."""

    product: Product
    signing_key: SigningKey
    leaf_public_key: ec.EllipticCurvePublicKey
    leaf_tcb: TcbVersion
    hardware_id: bytes | None  # the VCEK's chip ID; VLEKs have none
    leaf_serial_number: int


def _spl(leaf: AmdCertificate, oid: str, label: str) -> int:
    value = leaf.extensions.get(oid)
    if value is None:
        raise CertificateChainError(f"{leaf.name} lacks the {label} TCB extension ({oid})")
    try:
        number = der.decode_integer(der.parse_single(value, label), label)
    except der.DerError as error:
        raise CertificateChainError(f"{leaf.name} {label} extension: {error}") from None
    if not 0 <= number <= 0xFF:
        raise CertificateChainError(f"{leaf.name} {label} extension value {number} is not 0..255")
    return number


def leaf_tcb(leaf: AmdCertificate, product: Product) -> TcbVersion:
    """The TCB a VCEK/VLEK was issued for, from AMD's extensions."""
    return TcbVersion(
        bootloader=_spl(leaf, OID_BOOTLOADER_SPL, "bootloader"),
        tee=_spl(leaf, OID_TEE_SPL, "TEE"),
        snp=_spl(leaf, OID_SNP_SPL, "SNP"),
        microcode=_spl(leaf, OID_MICROCODE_SPL, "microcode"),
        fmc=_spl(leaf, OID_FMC_SPL, "FMC") if product is Product.TURIN else None,
    )


def leaf_hardware_id(leaf: AmdCertificate) -> bytes:
    value = leaf.extensions.get(OID_HARDWARE_ID)
    if value is None:
        raise CertificateChainError(f"{leaf.name} lacks the hardware ID extension")
    # KDS has issued both forms: the 64 raw bytes, and an OCTET STRING around them.
    if len(value) == HARDWARE_ID_SIZE:
        return value
    try:
        inner = der.expect(der.parse_single(value, "hwID"), der.TAG_OCTET_STRING, "hwID")
    except der.DerError as error:
        raise CertificateChainError(f"{leaf.name} hardware ID extension: {error}") from None
    if len(inner.content) != HARDWARE_ID_SIZE:
        raise CertificateChainError(f"{leaf.name} hardware ID is not {HARDWARE_ID_SIZE} bytes")
    return inner.content


def product_name(leaf: AmdCertificate) -> str:
    """The product name AMD wrote into a VCEK/VLEK, e.g. ``Milan-B0``."""
    value = leaf.extensions.get(OID_PRODUCT_NAME)
    if value is None:
        raise CertificateChainError(f"{leaf.name} lacks the product name extension")
    try:
        element = der.expect(der.parse_single(value, "productName"), der.TAG_IA5_STRING, "name")
        return element.content.decode("ascii", errors="strict")
    except (der.DerError, UnicodeDecodeError) as error:
        raise CertificateChainError(f"{leaf.name} product name extension: {error}") from None


def _check_validity(certificate: AmdCertificate, now: datetime) -> None:
    if not certificate.not_before <= now <= certificate.not_after:
        raise CertificateChainError(
            f"{certificate.name} is valid from {certificate.not_before:%Y-%m-%d %H:%M} to "
            f"{certificate.not_after:%Y-%m-%d %H:%M} UTC, not at {now:%Y-%m-%d %H:%M} UTC"
        )


def _check_critical_extensions(certificate: AmdCertificate) -> None:
    unknown = certificate.critical_extensions - UNDERSTOOD_CRITICAL_EXTENSIONS
    if unknown:
        raise CertificateChainError(
            f"{certificate.name} has critical extensions this verifier does not enforce: "
            f"{', '.join(sorted(unknown))}"
        )


def product_of_root(ark: AmdCertificate, roots: Mapping[Product, bytes]) -> Product:
    """The product whose pinned root key the ARK carries."""
    digest = ark.public_key_sha256
    for product, pinned in roots.items():
        if digest == pinned:
            return product
    raise CertificateChainError(
        f"ARK {ark.subject_common_name!r} (public key SHA-256 {digest.hex()}) is not the pinned "
        f"AMD root key of any product ({', '.join(p.value for p in roots)})"
    )


def verify_chain(
    ark: AmdCertificate,
    intermediate: AmdCertificate,
    leaf: AmdCertificate,
    now: datetime,
    roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
) -> VerifiedChain:
    """Verify ARK -> ASK (or ASVK) -> VCEK (or VLEK) and say what the leaf key is.

    Signatures are checked over the exact ``tbsCertificate`` bytes with the parent's public
    key; nothing depends on how a library interprets the serial number.
    """
    product = product_of_root(ark, roots)
    for certificate in (ark, intermediate, leaf):
        _check_validity(certificate, now)
        _check_critical_extensions(certificate)
    verify_signed_by(ark, ark)
    verify_signed_by(intermediate, ark)
    verify_signed_by(leaf, intermediate)

    if leaf.subject_common_name == "SEV-VCEK":
        signing_key, intermediate_name = SigningKey.VCEK, f"SEV-{product.value}"
    elif leaf.subject_common_name == "SEV-VLEK":
        signing_key, intermediate_name = SigningKey.VLEK, f"SEV-VLEK-{product.value}"
    else:
        raise CertificateChainError(
            f"leaf certificate {leaf.subject_common_name!r} is neither a VCEK nor a VLEK"
        )
    if intermediate.subject_common_name != intermediate_name:
        raise CertificateChainError(
            f"the {signing_key.name} was issued by {intermediate.subject_common_name!r}; "
            f"for {product.value} it must be {intermediate_name!r}"
        )
    leaf_product = product_name(leaf)
    if leaf_product.split("-")[0] != product.value:
        raise CertificateChainError(
            f"{leaf.name} product name {leaf_product!r} does not match the {product.value} root"
        )
    try:
        key = load_der_public_key(leaf.subject_public_key_info)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateChainError(f"{leaf.name} public key is malformed: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CertificateChainError(f"{leaf.name} public key is not an ECDSA P-384 key")
    return VerifiedChain(
        product=product,
        signing_key=signing_key,
        leaf_public_key=key,
        leaf_tcb=leaf_tcb(leaf, product),
        hardware_id=leaf_hardware_id(leaf) if signing_key is SigningKey.VCEK else None,
        leaf_serial_number=leaf.serial_number,
    )
