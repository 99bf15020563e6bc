"""SEV-SNP behind the project's attestation interface (``contrast.attestation.base``).

Evidence: ``Evidence(platform="snp", report=<1184-byte report>, endorsements=<the host's
GHCB certificate table, possibly empty>)`` — exactly the kernel's ``outblob`` and
``auxblob``.

Reference values: the manifest's ``ReferenceValues.snp`` is a list of entries, each naming
a product, a trusted measurement, a minimum TCB and the guest-policy bits allowed. The
evidence is accepted if its report is genuine (chain, signature, chip, TCB, report data:
independent of the entries) and at least one entry accepts it. Host data is not checked
here: the Coordinator looks the returned host data up in the manifest's policies.

Certificates the evidence lacks come from AMD's KDS through a cache directory, if
``CONTRAST_SNP_KDS_CACHE`` names one; ``CONTRAST_SNP_KDS_OFFLINE=1`` then reads only that
cache. Without a cache directory the evidence must carry the VCEK, ASK and ARK.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from contrast.attestation.base import (
    AttestationError,
    Evidence,
    Issuer,
    Validator,
    VerifiedEvidence,
)
from contrast.attestation.snp.certchain import AMD_ROOT_KEYS
from contrast.attestation.snp.evidence import EvidenceFormatError, decode_evidence
from contrast.attestation.snp.issuer import SEV_GUEST_DEVICE, SnpIssuer, SnpIssuerError
from contrast.attestation.snp.kds import KdsClient
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import (
    REPORT_SIZE,
    Product,
    ReportFormatError,
    TcbVersion,
    parse_report,
)
from contrast.attestation.snp.validator import Clock, fetch_crl, select_certificates, utc_now
from contrast.attestation.snp.verify import (
    ChainCache,
    SnpVerificationError,
    check_reference_values,
    evaluate_report,
)
from contrast.manifest import PLATFORM_SNP, ReferenceValues, SnpReferenceValue

KDS_CACHE_ENV = "CONTRAST_SNP_KDS_CACHE"
KDS_OFFLINE_ENV = "CONTRAST_SNP_KDS_OFFLINE"
# The presence of this device means "this machine is an SEV-SNP guest" (the sev-guest
# driver also provides configfs-tsm, whose directory alone does not say which TEE it is).
SNP_GUEST_DEVICES = (SEV_GUEST_DEVICE,)


def reference_values_from_manifest(entry: SnpReferenceValue) -> SnpReferenceValues:
    """One manifest ``ReferenceValues.snp`` entry as this package's reference values."""
    return SnpReferenceValues(
        trusted_measurements=frozenset({bytes.fromhex(entry.trusted_measurement)}),
        minimum_tcb=TcbVersion(
            bootloader=entry.minimum_tcb.bootloader,
            tee=entry.minimum_tcb.tee,
            snp=entry.minimum_tcb.snp,
            microcode=entry.minimum_tcb.microcode,
        ),
        products=frozenset({Product(entry.product_name)}),
        allow_smt=entry.guest_policy.smt,
        allow_migration_agent=entry.guest_policy.migrate_ma,
    )


def kds_from_environment(environ: Mapping[str, str] | None = None) -> KdsClient | None:
    env = os.environ if environ is None else environ
    cache = env.get(KDS_CACHE_ENV, "")
    if not cache:
        return None
    return KdsClient(Path(cache), offline=env.get(KDS_OFFLINE_ENV, "") == "1")


class SnpPlatformValidator:
    """The ``Validator`` for platform ``snp``."""

    platform = PLATFORM_SNP

    def __init__(
        self,
        entries: Sequence[SnpReferenceValue],
        kds: KdsClient | None = None,
        *,
        roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
        clock: Clock = utc_now,
        check_revocation: bool = False,
    ) -> None:
        if check_revocation and kds is None:
            raise ValueError("checking revocation needs a KDS client to take the CRL from")
        if not entries:
            raise ValueError("an SNP validator needs at least one ReferenceValues.snp entry")
        self.entries = [(entry, reference_values_from_manifest(entry)) for entry in entries]
        self.kds = kds
        self.roots = roots
        self.clock = clock
        self.chain_cache = ChainCache()
        self.check_revocation = check_revocation

    def validate(self, evidence: Evidence, expected_report_data: bytes) -> VerifiedEvidence:
        if evidence.platform != PLATFORM_SNP:
            raise AttestationError("platform", f"evidence is from {evidence.platform!r}, not snp")
        try:
            decoded = decode_evidence(evidence.report + evidence.endorsements)
            report = parse_report(evidence.report)
        except (EvidenceFormatError, ReportFormatError) as error:
            raise AttestationError("report-format", str(error)) from None
        products = {product for _, values in self.entries for product in values.products}
        try:
            certificates = select_certificates(report, decoded.certificates, self.kds, products)
        except SnpVerificationError as error:
            raise AttestationError(error.check, error.detail) from None
        now = self.clock()
        crl = None
        if self.check_revocation:
            assert self.kds is not None  # the constructor requires it for revocation checks
            try:
                crl = fetch_crl(self.kds, certificates, report.signing_key, now, self.roots)
            except SnpVerificationError as error:
                raise AttestationError(error.check, error.detail) from None
        evaluation = evaluate_report(
            evidence.report,
            certificates,
            now,
            expected_report_data=expected_report_data,
            roots=self.roots,
            chain_cache=self.chain_cache,
            crl=crl,
        )
        failure = evaluation.first_failure()
        if failure is not None:
            raise AttestationError(failure.name, failure.detail)
        assert evaluation.chain is not None  # a passed evaluation has verified the chain
        refusals = []
        for entry, values in self.entries:
            checks = check_reference_values(report, evaluation.chain.product, values)
            failed = next((check for check in checks if not check.passed), None)
            if failed is None:
                return VerifiedEvidence(PLATFORM_SNP, report.host_data, report.measurement)
            refusals.append(
                f"entry {entry.product_name}/{entry.trusted_measurement[:16]}...: "
                f"{failed.name}: {failed.detail}"
            )
        raise AttestationError(
            "reference-values", "no ReferenceValues.snp entry accepts it; " + "; ".join(refusals)
        )


class SnpPlatformIssuer:
    """The ``Issuer`` for platform ``snp``, inside a real SEV-SNP guest."""

    platform = PLATFORM_SNP

    def __init__(self, issue_raw: Callable[[bytes], bytes] | None = None) -> None:
        # ``issue_raw`` returns report || certificate table; SnpIssuer().issue by default.
        self._issue_raw = issue_raw or SnpIssuer().issue

    def issue(self, report_data: bytes) -> Evidence:
        try:
            evidence = self._issue_raw(report_data)
            decode_evidence(evidence)  # refuse a malformed host table here, not at the verifier
        except (SnpIssuerError, EvidenceFormatError) as error:
            raise AttestationError("issuer", str(error)) from None
        # The host's certificate table travels byte for byte as the endorsements.
        return Evidence(PLATFORM_SNP, evidence[:REPORT_SIZE], evidence[REPORT_SIZE:])


def snp_validator_factory(reference_values: ReferenceValues) -> Validator:
    """For ``platforms.VALIDATOR_FACTORIES[PLATFORM_SNP]``: the manifest's SNP validator."""
    return SnpPlatformValidator(reference_values.snp, kds_from_environment())


def snp_issuer_factory() -> Issuer:
    """For ``platforms.HARDWARE_ISSUERS[PLATFORM_SNP] = (SNP_GUEST_DEVICES, ...)``."""
    return SnpPlatformIssuer()
