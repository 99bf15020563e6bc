"""Deciding whether an SNP attestation report is genuine and acceptable.

:func:`evaluate_report` is pure: report bytes, the three certificates, the time, optional
reference values and expected report data in; a list of named checks with their verdicts
out. :func:`verify_report` raises on the first failed check. :class:`SnpValidator` adds
where the certificates come from (the evidence's certificate table or the key
distribution service cache) and a cache of already verified chains.

Checks, in order (names as they appear in errors and in ``contrast verify-snp-report``):

- ``report-format``: 1184 bytes, version 2..5, ECDSA P-384, no reserved policy/key bits,
  the unsigned padding around R and S zero.
- ``certificate-chain``: ARK pinned for a product, ARK -> ASK -> VCEK/VLEK (RSASSA-PSS),
  validity, product name.
- ``report-signature``: ECDSA P-384/SHA-384 over bytes 0x000..0x29F with the leaf key.
- ``signing-key``: the report names the kind of key (VCEK/VLEK) the chain ends in.
- ``chip-id``: a VCEK's hardware ID is the report's chip ID.
- ``reported-tcb``: the VCEK/VLEK was issued for exactly the report's REPORTED_TCB.
- ``cpuid-product``: for reports that carry CPUID (version 3+), it names the same product.
- ``revocation`` (when a CRL is given): the ARK's current CRL does not revoke the ASK.
With reference values:
- ``product``, ``measurement``, ``debug-disabled``, ``smt``, ``migration-agent``,
  ``minimum-tcb`` (current, committed and reported TCB), ``host-data`` (if the reference
  values list host data).
With expected report data:
- ``report-data``: the report binds the verifier's nonce and the channel's public key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from contrast.attestation.snp.certchain import (
    AMD_ROOT_KEYS,
    AmdCertificate,
    CertificateChainError,
    VerifiedChain,
    parse_certificate,
    verify_chain,
)
from contrast.attestation.snp.crl import check_revocation
from contrast.attestation.snp.referencevalues import SnpReferenceValues, describe_products
from contrast.attestation.snp.report import (
    AttestationReport,
    Product,
    ReportFormatError,
    SigningKey,
    TcbVersion,
    decode_tcb,
    encode_tcb,
    parse_report,
)

REPORT_DATA_SIZE = 64


class SnpVerificationError(Exception):
    """A report was refused; ``check`` names the failed check, ``detail`` the values seen."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"SNP attestation refused: {check}: {detail}")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class CertificateSet:
    """The DER certificates that vouch for a report: root (ARK), intermediate (ASK/ASVK), leaf."""

    root: bytes
    intermediate: bytes
    leaf: bytes


@dataclass
class Evaluation:
    """The verdict of every check that could run, plus what was parsed along the way."""

    checks: list[CheckResult] = field(default_factory=list)
    report: AttestationReport | None = None
    chain: VerifiedChain | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def first_failure(self) -> CheckResult | None:
        return next((check for check in self.checks if not check.passed), None)

    def record(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(CheckResult(name, passed, detail))


def tcb_shortfalls(actual: TcbVersion, minimum: TcbVersion) -> list[str]:
    """The components of ``actual`` below ``minimum`` ("snp 7 < 8"); empty if none."""
    pairs = [
        ("bootloader", actual.bootloader, minimum.bootloader),
        ("tee", actual.tee, minimum.tee),
        ("snp", actual.snp, minimum.snp),
        ("microcode", actual.microcode, minimum.microcode),
    ]
    if actual.fmc is not None and minimum.fmc is not None:
        pairs.append(("fmc", actual.fmc, minimum.fmc))
    return [f"{name} {have} < {need}" for name, have, need in pairs if have < need]


def verify_report_signature(report: AttestationReport, key: ec.EllipticCurvePublicKey) -> bool:
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


class ChainCache:
    """Verified chains by the exact certificate bytes, so a warm validation skips RSA work.

    Only successful verifications are stored, and the validity period is re-checked on
    every hit, so a hit decides exactly what a fresh verification would.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, tuple[VerifiedChain, datetime, datetime]] = OrderedDict()

    @staticmethod
    def _key(certificates: CertificateSet, roots: Mapping[Product, bytes]) -> bytes:
        digest = hashlib.sha256()
        for part in (certificates.root, certificates.intermediate, certificates.leaf):
            digest.update(len(part).to_bytes(4, "big") + part)
        for product, pin in sorted(roots.items(), key=lambda item: item[0].value):
            digest.update(product.value.encode() + pin)
        return digest.digest()

    def verify(
        self, certificates: CertificateSet, now: datetime, roots: Mapping[Product, bytes]
    ) -> VerifiedChain:
        key = self._key(certificates, roots)
        cached = self._entries.get(key)
        if cached is not None and cached[1] <= now <= cached[2]:
            self._entries.move_to_end(key)
            return cached[0]
        parsed = _parse_set(certificates)
        chain = verify_chain(*parsed, now=now, roots=roots)
        not_before = max(certificate.not_before for certificate in parsed)
        not_after = min(certificate.not_after for certificate in parsed)
        self._entries[key] = (chain, not_before, not_after)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return chain


def _parse_set(
    certificates: CertificateSet,
) -> tuple[AmdCertificate, AmdCertificate, AmdCertificate]:
    return (
        parse_certificate(certificates.root, "ARK"),
        parse_certificate(certificates.intermediate, "ASK"),
        parse_certificate(certificates.leaf, "VCEK/VLEK"),
    )


def _check_binding(evaluation: Evaluation, report: AttestationReport, chain: VerifiedChain) -> None:
    evaluation.record(
        "report-signature",
        verify_report_signature(report, chain.leaf_public_key),
        f"ECDSA P-384/SHA-384 with the {chain.signing_key.name} of a {chain.product.value} chip",
    )
    evaluation.record(
        "signing-key",
        report.signing_key is chain.signing_key
        and not (report.chip_key_masked and chain.signing_key is SigningKey.VCEK),
        f"report names {report.signing_key.name}"
        + (" with a masked chip key" if report.chip_key_masked else "")
        + f", chain ends in a {chain.signing_key.name}",
    )
    if chain.hardware_id is not None:
        same_chip = hmac.compare_digest(chain.hardware_id, report.chip_id)
        evaluation.record(
            "chip-id",
            same_chip,
            f"{report.chip_id.hex()[:16]}... in report and VCEK"
            if same_chip
            else f"report {report.chip_id.hex()}, VCEK {chain.hardware_id.hex()}",
        )
    reported = decode_tcb(report.reported_tcb, chain.product)
    evaluation.record(
        "reported-tcb",
        encode_tcb(chain.leaf_tcb, chain.product) == report.reported_tcb,
        f"report {reported.describe()} (raw {report.reported_tcb:#018x}), "
        f"{chain.signing_key.name} {chain.leaf_tcb.describe()}",
    )
    if report.version >= 3:
        named = report.product_from_cpuid
        evaluation.record(
            "cpuid-product",
            named is chain.product,
            f"CPUID family {report.cpuid_family:#x} model {report.cpuid_model:#x} names "
            f"{named.value if named else 'no known product'}, "
            f"certificates say {chain.product.value}",
        )


def _check_reference_values(
    evaluation: Evaluation,
    report: AttestationReport,
    product: Product,
    reference: SnpReferenceValues,
) -> None:
    evaluation.record(
        "product",
        product in reference.products,
        f"{product.value}; allowed: {describe_products(reference.products)}",
    )
    evaluation.record(
        "measurement",
        report.measurement in reference.trusted_measurements,
        f"{report.measurement.hex()}"
        + ("" if report.measurement in reference.trusted_measurements else " is not trusted"),
    )
    policy = report.policy
    evaluation.record(
        "debug-disabled",
        not policy.debug_allowed,
        f"guest policy {policy.raw:#x} {'allows' if policy.debug_allowed else 'denies'} debugging",
    )
    evaluation.record(
        "smt",
        reference.allow_smt or not policy.smt_allowed,
        f"guest policy {'allows' if policy.smt_allowed else 'denies'} SMT; reference values "
        f"{'allow' if reference.allow_smt else 'deny'} it",
    )
    evaluation.record(
        "migration-agent",
        reference.allow_migration_agent or not policy.migration_agent_allowed,
        f"guest policy {'allows' if policy.migration_agent_allowed else 'denies'} a migration "
        f"agent; reference values {'allow' if reference.allow_migration_agent else 'deny'} it",
    )
    shortfalls: list[str] = []
    seen: list[str] = []
    for label, raw in (
        ("current", report.current_tcb),
        ("committed", report.committed_tcb),
        ("reported", report.reported_tcb),
    ):
        tcb = decode_tcb(raw, product)
        seen.append(f"{label}: {tcb.describe()}")
        shortfalls += [f"{label} {gap}" for gap in tcb_shortfalls(tcb, reference.minimum_tcb)]
    evaluation.record(
        "minimum-tcb",
        not shortfalls,
        ("below minimum: " + ", ".join(shortfalls) + "; " if shortfalls else "")
        + "; ".join(seen)
        + f"; minimum {reference.minimum_tcb.describe()}",
    )
    if reference.allowed_host_data is not None:
        known = report.host_data in reference.allowed_host_data
        evaluation.record(
            "host-data",
            known,
            f"{report.host_data.hex()}" + ("" if known else " is not in the manifest"),
        )


def check_reference_values(
    report: AttestationReport, product: Product, reference: SnpReferenceValues
) -> list[CheckResult]:
    """The reference-value checks alone, for a report whose genuineness is established."""
    evaluation = Evaluation()
    _check_reference_values(evaluation, report, product, reference)
    return evaluation.checks


def evaluate_report(
    report_bytes: bytes,
    certificates: CertificateSet,
    now: datetime,
    reference_values: SnpReferenceValues | None = None,
    expected_report_data: bytes | None = None,
    roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
    chain_cache: ChainCache | None = None,
    crl: bytes | None = None,
) -> Evaluation:
    """Run every check that can run and record each verdict; never raises on bad input."""
    evaluation = Evaluation()
    try:
        report = parse_report(report_bytes)
    except ReportFormatError as error:
        evaluation.record("report-format", False, str(error))
        return evaluation
    evaluation.report = report
    evaluation.record("report-format", True, f"version {report.version}, {len(report_bytes)} bytes")
    cache = chain_cache if chain_cache is not None else ChainCache(capacity=1)
    chain: VerifiedChain | None = None
    try:
        chain = cache.verify(certificates, now, roots)
    except CertificateChainError as error:
        evaluation.record("certificate-chain", False, str(error))
    else:
        evaluation.chain = chain
        evaluation.record(
            "certificate-chain",
            True,
            f"ARK-{chain.product.value} (pinned) -> ASK -> {chain.signing_key.name}",
        )
        _check_binding(evaluation, report, chain)
        if crl is not None:
            try:
                detail = check_revocation(crl, certificates.root, certificates.intermediate, now)
            except CertificateChainError as error:
                evaluation.record("revocation", False, str(error))
            else:
                evaluation.record("revocation", True, detail)
    if reference_values is not None:
        # Without a verified chain the product is unknown; TCB components are then read in
        # the layout of the report's CPUID product or Milan's, and the verdict fails anyway.
        product = chain.product if chain else (report.product_from_cpuid or Product.MILAN)
        _check_reference_values(evaluation, report, product, reference_values)
    if expected_report_data is not None:
        evaluation.record(
            "report-data",
            len(expected_report_data) == REPORT_DATA_SIZE
            and hmac.compare_digest(report.report_data, expected_report_data),
            f"report {report.report_data.hex()}, expected {expected_report_data.hex()}",
        )
    return evaluation


def verify_report(
    report_bytes: bytes,
    certificates: CertificateSet,
    now: datetime,
    reference_values: SnpReferenceValues,
    expected_report_data: bytes,
    roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
    chain_cache: ChainCache | None = None,
    crl: bytes | None = None,
) -> AttestationReport:
    """The verified report, or :class:`SnpVerificationError` naming the first failed check."""
    evaluation = evaluate_report(
        report_bytes,
        certificates,
        now,
        reference_values,
        expected_report_data,
        roots,
        chain_cache,
        crl,
    )
    failure = evaluation.first_failure()
    if failure is not None:
        raise SnpVerificationError(failure.name, failure.detail)
    assert evaluation.report is not None  # a passed evaluation has parsed the report
    return evaluation.report
