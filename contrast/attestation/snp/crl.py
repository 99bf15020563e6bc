"""Revocation: AMD's certificate revocation list, signed by the ARK, names revoked ASKs.

KDS serves one CRL per product and key kind (``/vcek/v1/<Product>/crl``). Its issuer is
the ARK, so it speaks about the certificates the ARK issued: the ASK (or ASVK). Serial
numbers are only unique per issuer, so the VCEK (issued by the ASK) is not looked up in it.

The CRL is read with the same strict DER reader as the certificates. A CRL past its
``nextUpdate`` is refused rather than trusted: a stale list could miss a revocation. A CRL
with critical extensions (a delta CRL, an indirect CRL, a partitioned CRL) is refused,
because reading it as a complete list would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contrast.attestation.snp import der
from contrast.attestation.snp.certchain import (
    AmdCertificate,
    CertificateChainError,
    check_pss_algorithm,
    decode_time,
    parse_certificate,
    verify_pss_signature,
)

TIME_TAGS = (der.TAG_UTC_TIME, der.TAG_GENERALIZED_TIME)


@dataclass(frozen=True)
class AmdCrl:
    tbs: bytes
    tbs_signature_algorithm: bytes
    signature_algorithm: bytes
    signature: bytes
    issuer: bytes
    this_update: datetime
    next_update: datetime | None
    revoked_serials: frozenset[int]


def _critical_extension_oids(element: der.Element, what: str) -> list[str]:
    critical = []
    for extension in der.children(der.expect(element, der.TAG_SEQUENCE, what), what):
        fields = der.children(der.expect(extension, der.TAG_SEQUENCE, what), what)
        if len(fields) == 3 and fields[1].tag == der.TAG_BOOLEAN and fields[1].content == b"\xff":
            critical.append(der.decode_oid(fields[0], what))
    return critical


def parse_crl(data: bytes) -> AmdCrl:
    what = "certificate revocation list"
    try:
        outer = der.children(der.expect(der.parse_single(data, what), der.TAG_SEQUENCE, what), what)
        if len(outer) != 3:
            raise der.DerError("expected tbsCertList, algorithm and signature")
        tbs_element, algorithm, signature = outer
        fields = der.children(der.expect(tbs_element, der.TAG_SEQUENCE, what), what)
        if fields and fields[0].tag == der.TAG_INTEGER:
            if der.decode_integer(fields[0], f"{what} version") != 1:
                raise der.DerError("only version 2 CRLs are accepted")
            fields = fields[1:]
        if len(fields) < 3:
            raise der.DerError("truncated tbsCertList")
        tbs_algorithm, issuer, this_update, *rest = fields
        next_update = None
        if rest and rest[0].tag in TIME_TAGS:
            next_update = decode_time(rest[0], f"{what} nextUpdate")
            rest = rest[1:]
        revoked: set[int] = set()
        if rest and rest[0].tag == der.TAG_SEQUENCE:
            for entry in der.children(rest[0], what):
                entry_fields = der.children(der.expect(entry, der.TAG_SEQUENCE, what), what)
                if len(entry_fields) not in (2, 3):
                    raise der.DerError("malformed revoked certificate entry")
                if len(entry_fields) == 3 and _critical_extension_oids(entry_fields[2], what):
                    raise der.DerError("an entry has critical extensions (indirect CRL?)")
                revoked.add(der.decode_integer(entry_fields[0], f"{what} serial"))
            rest = rest[1:]
        if rest and rest[0].tag == 0xA0:
            wrapped = der.children(rest[0], what)
            if len(wrapped) != 1:
                raise der.DerError("malformed CRL extensions")
            critical = _critical_extension_oids(wrapped[0], what)
            if critical:
                raise der.DerError(f"critical CRL extensions {', '.join(critical)} (delta CRL?)")
            rest = rest[1:]
        if rest:
            raise der.DerError("unexpected fields after the CRL extensions")
        return AmdCrl(
            tbs=tbs_element.encoded,
            tbs_signature_algorithm=der.expect(tbs_algorithm, der.TAG_SEQUENCE, what).encoded,
            signature_algorithm=der.expect(algorithm, der.TAG_SEQUENCE, what).encoded,
            signature=der.decode_bit_string(signature, f"{what} signature"),
            issuer=der.expect(issuer, der.TAG_SEQUENCE, what).encoded,
            this_update=decode_time(this_update, f"{what} thisUpdate"),
            next_update=next_update,
            revoked_serials=frozenset(revoked),
        )
    except (der.DerError, UnicodeDecodeError, ValueError) as error:
        raise CertificateChainError(f"{what} is malformed: {error}") from None


def check_not_revoked(
    crl: AmdCrl, ark: AmdCertificate, intermediate: AmdCertificate, now: datetime
) -> None:
    """Raise CertificateChainError unless ``crl`` is the ARK's current CRL and spares the ASK."""
    if crl.issuer != ark.subject:
        raise CertificateChainError("the CRL was not issued by the ARK")
    check_pss_algorithm(
        crl.signature_algorithm, crl.tbs_signature_algorithm, "CRL signature algorithm"
    )
    verify_pss_signature(ark, crl.signature, crl.tbs, "CRL signature")
    if now < crl.this_update:
        raise CertificateChainError(f"the CRL is dated in the future ({crl.this_update:%Y-%m-%d})")
    if crl.next_update is not None and now > crl.next_update:
        raise CertificateChainError(
            f"the CRL expired on {crl.next_update:%Y-%m-%d %H:%M} UTC; fetch the current one "
            "from KDS"
        )
    if intermediate.serial_number in crl.revoked_serials:
        raise CertificateChainError(
            f"the {intermediate.name} {intermediate.subject_common_name!r} "
            f"(serial {intermediate.serial_number:#x}) is revoked by AMD"
        )


def check_revocation(crl: bytes, root: bytes, intermediate: bytes, now: datetime) -> str:
    """Check the DER CRL against the DER ARK and ASK; return a description of what passed."""
    parsed = parse_crl(crl)
    ark = parse_certificate(root, "ARK")
    ask = parse_certificate(intermediate, "ASK")
    check_not_revoked(parsed, ark, ask, now)
    return (
        f"ASK serial {ask.serial_number:#x} not among the {len(parsed.revoked_serials)} "
        f"revoked by the ARK's CRL of {parsed.this_update:%Y-%m-%d}"
    )
