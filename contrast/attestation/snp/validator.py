"""The SNP validator a verifier holds: evidence and expected report data in, host data out.

Certificates come from the evidence's certificate table when the host supplied one, and
otherwise from the key distribution service (through its cache, or only the cache in
offline mode). Either way they pass the same chain verification against the pinned roots.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

from contrast.attestation.snp.certchain import (
    AMD_ROOT_KEYS,
    CertificateChainError,
    parse_certificate,
    product_name,
    product_of_root,
)
from contrast.attestation.snp.evidence import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    GUID_VLEK,
    EvidenceFormatError,
    decode_evidence,
)
from contrast.attestation.snp.kds import KdsClient, KdsError
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import (
    AttestationReport,
    Product,
    ReportFormatError,
    SigningKey,
    decode_tcb,
    parse_report,
)
from contrast.attestation.snp.verify import (
    CertificateSet,
    ChainCache,
    SnpVerificationError,
    verify_report,
)
from contrast.log import event

log = logging.getLogger("contrast.attestation.snp")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _candidate_products(
    report: AttestationReport, leaf: bytes | None, allowed: Collection[Product]
) -> list[Product]:
    """Which product's certificates to look for. Only a hint: the chain check decides."""
    if leaf is not None:
        try:
            name = product_name(parse_certificate(leaf, "VCEK/VLEK")).split("-")[0]
        except CertificateChainError:
            name = ""
        by_name = {product.value: product for product in Product}
        if name in by_name:
            return [by_name[name]]
    if report.product_from_cpuid is not None:
        return [report.product_from_cpuid]
    return [product for product in Product if product in allowed]


def select_certificates(
    report: AttestationReport,
    certificates: Mapping[uuid.UUID, bytes],
    kds: KdsClient | None,
    products: Collection[Product],
) -> CertificateSet:
    """The root, intermediate and leaf that should vouch for ``report``.

    ``products`` are the ones to ask KDS for when neither the leaf certificate nor the
    report's CPUID names one (version 2 reports); the chain check decides in the end.
    """
    leaf = certificates.get(GUID_VLEK if report.signing_key is SigningKey.VLEK else GUID_VCEK)
    intermediate, root = certificates.get(GUID_ASK), certificates.get(GUID_ARK)
    if leaf is not None and intermediate is not None and root is not None:
        return CertificateSet(root=root, intermediate=intermediate, leaf=leaf)
    if kds is None:
        raise SnpVerificationError(
            "certificates",
            "the evidence does not carry the VCEK, ASK and ARK, and no key distribution "
            "service cache is configured to supply them",
        )
    if leaf is None and report.signing_key is not SigningKey.VCEK:
        raise SnpVerificationError(
            "certificates",
            f"the report is signed with a {report.signing_key.name}, which only the host "
            "can supply (KDS serves VCEKs); the evidence carries none",
        )
    failures: list[str] = []
    for product in _candidate_products(report, leaf, products):
        try:
            if leaf is None:
                found_leaf = kds.vcek(
                    product, report.chip_id, decode_tcb(report.reported_tcb, product)
                )
            else:
                found_leaf = leaf
            intermediate, root = kds.cert_chain(product, report.signing_key)
        except KdsError as error:
            failures.append(str(error))
            continue
        return CertificateSet(root=root, intermediate=intermediate, leaf=found_leaf)
    raise SnpVerificationError("certificates", "; ".join(failures) or "no candidate product")


def fetch_crl(
    kds: KdsClient,
    certificates: CertificateSet,
    signing_key: SigningKey,
    now: datetime,
    roots: Mapping[Product, bytes],
) -> bytes:
    """The CRL of the product whose pinned root ``certificates`` carry."""
    try:
        product = product_of_root(parse_certificate(certificates.root, "ARK"), roots)
    except CertificateChainError as error:
        raise SnpVerificationError("certificate-chain", str(error)) from None
    try:
        return kds.crl(product, now, signing_key)
    except KdsError as error:
        raise SnpVerificationError("revocation", str(error)) from None


class SnpValidator:
    """Validates SNP evidence against one set of reference values."""

    def __init__(
        self,
        reference_values: SnpReferenceValues,
        kds: KdsClient | None = None,
        *,
        roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
        clock: Clock = utc_now,
        chain_cache: ChainCache | None = None,
        check_revocation: bool = False,
    ) -> None:
        if check_revocation and kds is None:
            raise ValueError("checking revocation needs a KDS client to take the CRL from")
        self.check_revocation = check_revocation
        self.reference_values = reference_values
        self.kds = kds
        self.roots = roots
        self.clock = clock
        self.chain_cache = chain_cache if chain_cache is not None else ChainCache()

    def validate(self, evidence: bytes, expected_report_data: bytes) -> bytes:
        """Verify ``evidence`` and return its host data; raise SnpVerificationError if refused.

        ``expected_report_data`` is the 64 bytes the verifier computed from its nonce and the
        channel's public key; the report must carry exactly these.
        """
        try:
            verified = self._verify(evidence, expected_report_data)
        except SnpVerificationError as error:
            event(log, "snp-refused", logging.WARNING, check=error.check, detail=error.detail)
            raise
        event(
            log,
            "snp-verified",
            measurement=verified.measurement.hex(),
            host_data=verified.host_data.hex(),
        )
        return verified.host_data

    def _verify(self, evidence: bytes, expected_report_data: bytes) -> AttestationReport:
        try:
            decoded = decode_evidence(evidence)
            report = parse_report(decoded.report)
        except (EvidenceFormatError, ReportFormatError) as error:
            raise SnpVerificationError("report-format", str(error)) from None
        certificates = select_certificates(
            report, decoded.certificates, self.kds, self.reference_values.products
        )
        now = self.clock()
        crl = None
        if self.check_revocation:
            assert self.kds is not None  # the constructor requires it for revocation checks
            crl = fetch_crl(self.kds, certificates, report.signing_key, now, self.roots)
        return verify_report(
            decoded.report,
            certificates,
            now,
            self.reference_values,
            expected_report_data,
            self.roots,
            self.chain_cache,
            crl,
        )
