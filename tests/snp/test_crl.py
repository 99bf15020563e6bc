"""Revocation through the ARK's CRL, with CRLs the test ARK signs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from contrast.attestation.snp.certchain import CertificateChainError, parse_certificate
from contrast.attestation.snp.crl import check_revocation, parse_crl
from contrast.attestation.snp.evidence import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    build_certificate_table,
    encode_evidence,
)
from contrast.attestation.snp.kds import KdsClient
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import Product, SigningKey
from contrast.attestation.snp.validator import SnpValidator
from contrast.attestation.snp.verify import SnpVerificationError, evaluate_report
from tests.snp.hierarchy import (
    HOST_DATA,
    MEASUREMENT,
    NOW,
    REPORT_DATA,
    TCB,
    Hierarchy,
    ReportFields,
    build_report,
    make_crl,
    make_hierarchy,
)
from tests.snp.kds_server import KdsStandIn, kds_stand_in


def _ask_serial(hierarchy: Hierarchy) -> int:
    return parse_certificate(hierarchy.ask, "ASK").serial_number


def _check(hierarchy: Hierarchy, crl: bytes) -> str:
    return check_revocation(crl, hierarchy.ark, hierarchy.ask, NOW)


@pytest.fixture
def kds(tmp_path: Path) -> Iterator[KdsStandIn]:
    with kds_stand_in(tmp_path) as stand_in:
        yield stand_in


def test_crl_that_does_not_name_the_ask_passes(milan: Hierarchy) -> None:
    detail = _check(milan, make_crl(milan, revoked=(12345,)))

    assert "not among the 1 revoked" in detail


def test_revoked_ask_is_refused(milan: Hierarchy) -> None:
    with pytest.raises(CertificateChainError, match="is revoked by AMD"):
        _check(milan, make_crl(milan, revoked=(_ask_serial(milan),)))


def test_crl_signed_by_another_key_is_refused(milan: Hierarchy) -> None:
    make_hierarchy(key_label="impostor")  # creates the impostor's ARK key

    with pytest.raises(CertificateChainError, match="CRL signature does not verify"):
        _check(milan, make_crl(milan, signer_label="impostor"))


def test_expired_crl_is_refused(milan: Hierarchy) -> None:
    with pytest.raises(CertificateChainError, match="the CRL expired"):
        _check(milan, make_crl(milan, next_update=NOW - timedelta(hours=1)))


def test_crl_of_another_issuer_is_refused(milan: Hierarchy) -> None:
    genoa = make_hierarchy(Product.GENOA, key_label="genoa")

    with pytest.raises(CertificateChainError, match="not issued by the ARK"):
        _check(milan, make_crl(genoa))


def test_every_single_bit_flip_in_a_crl_is_refused(milan: Hierarchy) -> None:
    crl = make_crl(milan, revoked=(_ask_serial(milan),))
    unrevoked = make_crl(milan, revoked=(7,))
    accepted = []
    for original in (crl, unrevoked):
        for bit in range(len(original) * 8):
            flipped = bytearray(original)
            flipped[bit // 8] ^= 1 << (bit % 8)
            try:
                _check(milan, bytes(flipped))
            except CertificateChainError:
                continue
            accepted.append(bit)

    assert accepted == []


def test_crl_is_read_strictly(milan: Hierarchy) -> None:
    crl = parse_crl(make_crl(milan, revoked=(1, 2, 3)))

    assert crl.revoked_serials == frozenset({1, 2, 3})
    assert crl.next_update == NOW + timedelta(days=30)


def test_evaluation_records_the_revocation_check(milan: Hierarchy) -> None:
    report = build_report(ReportFields(), milan.vcek_key)
    revoked = make_crl(milan, revoked=(_ask_serial(milan),))

    evaluation = evaluate_report(report, milan.certificates, NOW, roots=milan.roots, crl=revoked)

    failure = evaluation.first_failure()
    assert failure is not None and failure.name == "revocation"


def test_validator_takes_the_crl_from_kds_and_refuses_a_revoked_ask(
    milan: Hierarchy, kds: KdsStandIn, tmp_path: Path
) -> None:
    kds.serve("/vcek/v1/Milan/crl", (200, make_crl(milan, revoked=(_ask_serial(milan),))))
    client = KdsClient(
        tmp_path / "cache", base_url=kds.base_url, transport=kds.transport, roots=milan.roots
    )
    validator = SnpValidator(
        SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB),
        client,
        roots=milan.roots,
        clock=lambda: NOW,
        check_revocation=True,
    )
    table = build_certificate_table(
        {GUID_VCEK: milan.vcek, GUID_ASK: milan.ask, GUID_ARK: milan.ark}
    )
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), table)

    with pytest.raises(SnpVerificationError) as refused:
        validator.validate(evidence, REPORT_DATA)

    assert refused.value.check == "revocation"


def test_stale_cached_crl_is_refreshed_online(
    milan: Hierarchy, kds: KdsStandIn, tmp_path: Path
) -> None:
    client = KdsClient(
        tmp_path / "cache", base_url=kds.base_url, transport=kds.transport, roots=milan.roots
    )
    path = client.crl_path(Product.MILAN, SigningKey.VCEK)
    path.parent.mkdir(parents=True)
    path.write_bytes(make_crl(milan, next_update=NOW - timedelta(days=1)))
    fresh = make_crl(milan, revoked=(99,))
    kds.serve("/vcek/v1/Milan/crl", (200, fresh))

    assert client.crl(Product.MILAN, NOW) == fresh
    assert path.read_bytes() == fresh


def test_offline_validator_with_a_current_cached_crl_accepts(
    milan: Hierarchy, tmp_path: Path
) -> None:
    client = KdsClient(tmp_path / "cache", offline=True, roots=milan.roots)
    path = client.crl_path(Product.MILAN, SigningKey.VCEK)
    path.parent.mkdir(parents=True)
    path.write_bytes(make_crl(milan, revoked=(99,)))
    validator = SnpValidator(
        SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB),
        client,
        roots=milan.roots,
        clock=lambda: NOW,
        check_revocation=True,
    )
    table = build_certificate_table(
        {GUID_VCEK: milan.vcek, GUID_ASK: milan.ask, GUID_ARK: milan.ark}
    )
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), table)

    assert validator.validate(evidence, REPORT_DATA) == HOST_DATA


def test_revocation_checking_without_kds_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="needs a KDS client"):
        SnpValidator(
            SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB),
            check_revocation=True,
        )
