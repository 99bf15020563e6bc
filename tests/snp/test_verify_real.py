"""The real report from a Milan guest, verified end to end against AMD's real chain."""

from __future__ import annotations

import pytest

from contrast.attestation.snp.certchain import load_ask_ark_pem
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import REPORT_SIZE, SIGNED_SIZE, TcbVersion
from contrast.attestation.snp.verify import (
    CertificateSet,
    ChainCache,
    Evaluation,
    SnpVerificationError,
    evaluate_report,
    verify_report,
)
from tests.snp.hierarchy import NOW

REAL_MEASUREMENT = bytes.fromhex(
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
    "6bdf8a9ece31a5a608eb0cf2e4872b01"
)


@pytest.fixture(scope="module")
def milan_certificates(real_vcek: bytes, milan_chain_pem: bytes) -> CertificateSet:
    ask, ark = load_ask_ark_pem(milan_chain_pem, "milan")
    return CertificateSet(root=ark.der, intermediate=ask.der, leaf=real_vcek)


def _first_failure(evaluation: Evaluation) -> str | None:
    failure = evaluation.first_failure()
    return failure.name if failure else None


def _names(evaluation: Evaluation) -> dict[str, bool]:
    return {check.name: check.passed for check in evaluation.checks}


def test_real_report_verifies_against_the_real_milan_chain(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    evaluation = evaluate_report(real_report, milan_certificates, NOW)

    assert evaluation.passed
    assert _names(evaluation) == {
        "report-format": True,
        "certificate-chain": True,
        "report-signature": True,
        "signing-key": True,
        "chip-id": True,
        "reported-tcb": True,
    }


def test_real_report_fails_against_the_genoa_chain(
    real_report: bytes, real_vcek: bytes, genoa_chain_pem: bytes
) -> None:
    ask, ark = load_ask_ark_pem(genoa_chain_pem, "genoa")

    evaluation = evaluate_report(real_report, CertificateSet(ark.der, ask.der, real_vcek), NOW)

    assert not evaluation.passed
    assert _first_failure(evaluation) == "certificate-chain"


def test_real_report_data_check_binds_exactly_the_expected_bytes(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    expected = bytes([1, 2, 3, 4, 5]) + bytes(59)

    assert evaluate_report(real_report, milan_certificates, NOW, None, expected).passed
    wrong = evaluate_report(real_report, milan_certificates, NOW, None, bytes(64))
    assert _first_failure(wrong) == "report-data"


def test_real_report_is_refused_because_its_policy_allows_debugging(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    """The public test report comes from a guest launched with debugging allowed."""
    reference = SnpReferenceValues(
        trusted_measurements=frozenset({REAL_MEASUREMENT}),
        minimum_tcb=TcbVersion(2, 0, 5, 68),
        allowed_host_data=frozenset({bytes(32)}),
    )

    with pytest.raises(SnpVerificationError) as refused:
        verify_report(
            real_report, milan_certificates, NOW, reference, bytes([1, 2, 3, 4, 5]) + bytes(59)
        )

    assert refused.value.check == "debug-disabled"
    assert "0xb0000 allows debugging" in str(refused.value)


def test_every_single_bit_flip_in_the_signed_part_is_refused(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    cache = ChainCache()
    accepted = []
    for bit in range(SIGNED_SIZE * 8):
        flipped = bytearray(real_report)
        flipped[bit // 8] ^= 1 << (bit % 8)
        if evaluate_report(bytes(flipped), milan_certificates, NOW, chain_cache=cache).passed:
            accepted.append(bit)

    assert accepted == []


def test_every_single_bit_flip_in_the_signature_is_refused(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    cache = ChainCache()
    accepted = []
    for bit in range(SIGNED_SIZE * 8, REPORT_SIZE * 8):
        flipped = bytearray(real_report)
        flipped[bit // 8] ^= 1 << (bit % 8)
        if evaluate_report(bytes(flipped), milan_certificates, NOW, chain_cache=cache).passed:
            accepted.append(bit)

    assert accepted == []


def test_every_single_bit_flip_in_the_vcek_fails_the_whole_verification(
    real_report: bytes, real_vcek: bytes, milan_certificates: CertificateSet
) -> None:
    accepted = []
    for bit in range(len(real_vcek) * 8):
        flipped = bytearray(real_vcek)
        flipped[bit // 8] ^= 1 << (bit % 8)
        certificates = CertificateSet(
            milan_certificates.root, milan_certificates.intermediate, bytes(flipped)
        )
        if evaluate_report(real_report, certificates, NOW).passed:
            accepted.append(bit)

    assert accepted == []


@pytest.mark.parametrize("length", [0, 1, SIGNED_SIZE, REPORT_SIZE - 1])
def test_truncated_real_report_is_refused(
    real_report: bytes, milan_certificates: CertificateSet, length: int
) -> None:
    evaluation = evaluate_report(real_report[:length], milan_certificates, NOW)

    assert [(c.name, c.passed) for c in evaluation.checks] == [("report-format", False)]


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 4096, b"trailing"])
def test_extended_real_report_is_refused(
    real_report: bytes, milan_certificates: CertificateSet, extra: bytes
) -> None:
    evaluation = evaluate_report(real_report + extra, milan_certificates, NOW)

    assert [(c.name, c.passed) for c in evaluation.checks] == [("report-format", False)]


def test_chain_cache_does_not_outlive_the_vcek_validity(
    real_report: bytes, milan_certificates: CertificateSet
) -> None:
    from datetime import UTC, datetime

    cache = ChainCache()
    assert evaluate_report(real_report, milan_certificates, NOW, chain_cache=cache).passed

    later = evaluate_report(
        real_report, milan_certificates, datetime(2030, 1, 1, tzinfo=UTC), chain_cache=cache
    )

    assert _first_failure(later) == "certificate-chain"
