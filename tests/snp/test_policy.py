"""Policy decisions, on reports signed by a test ARK/ASK/VCEK so every field can vary."""

from __future__ import annotations

import pytest

from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import Product, TcbVersion
from contrast.attestation.snp.verify import SnpVerificationError, verify_report
from tests.snp.hierarchy import (
    HOST_DATA,
    MEASUREMENT,
    NOW,
    POLICY_NO_DEBUG,
    REPORT_DATA,
    TCB,
    Hierarchy,
    ReportFields,
    build_report,
    make_hierarchy,
)

REFERENCE = SnpReferenceValues(
    trusted_measurements=frozenset({MEASUREMENT}),
    minimum_tcb=TCB,
    allowed_host_data=frozenset({HOST_DATA}),
)


def _verify(
    hierarchy: Hierarchy,
    fields: ReportFields,
    reference: SnpReferenceValues = REFERENCE,
    expected_report_data: bytes = REPORT_DATA,
) -> bytes:
    report = build_report(fields, hierarchy.vcek_key)
    verified = verify_report(
        report, hierarchy.certificates, NOW, reference, expected_report_data, hierarchy.roots
    )
    return verified.host_data


def _refusal(hierarchy: Hierarchy, fields: ReportFields, **kwargs: object) -> SnpVerificationError:
    with pytest.raises(SnpVerificationError) as refused:
        _verify(hierarchy, fields, **kwargs)  # type: ignore[arg-type]
    return refused.value


def test_report_matching_the_reference_values_is_accepted_and_yields_host_data(
    milan: Hierarchy,
) -> None:
    assert _verify(milan, ReportFields()) == HOST_DATA


def test_measurement_mismatch_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(measurement=bytes(48)))

    assert refusal.check == "measurement"
    assert "0" * 96 + " is not trusted" in refusal.detail


@pytest.mark.parametrize("component", ["bootloader", "tee", "snp", "microcode"])
def test_tcb_below_minimum_is_refused(milan: Hierarchy, component: str) -> None:
    minimum = TcbVersion(**{**TCB.__dict__, component: getattr(TCB, component) + 1})
    reference = SnpReferenceValues(
        trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=minimum
    )

    refusal = _refusal(milan, ReportFields(), reference=reference)

    assert refusal.check == "minimum-tcb"
    assert f"reported {component} {getattr(TCB, component)} < {getattr(minimum, component)}" in (
        refusal.detail
    )


def test_committed_tcb_below_minimum_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(committed_tcb=TcbVersion(3, 0, 7, 115)))

    assert refusal.check == "minimum-tcb"
    assert "committed snp 7 < 8" in refusal.detail


def test_debug_allowed_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(policy=POLICY_NO_DEBUG | 1 << 19))

    assert refusal.check == "debug-disabled"
    assert "allows debugging" in refusal.detail


def test_host_data_not_in_the_manifest_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(host_data=b"\x11" * 32))

    assert refusal.check == "host-data"
    assert "11" * 32 + " is not in the manifest" in refusal.detail


def test_host_data_is_returned_unchecked_when_reference_values_list_none(
    milan: Hierarchy,
) -> None:
    reference = SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB)

    assert _verify(milan, ReportFields(host_data=b"\x22" * 32), reference) == b"\x22" * 32


def test_smt_is_refused_when_reference_values_deny_it(milan: Hierarchy) -> None:
    reference = SnpReferenceValues(
        trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB, allow_smt=False
    )

    assert _refusal(milan, ReportFields(), reference=reference).check == "smt"
    assert _verify(milan, ReportFields(policy=1 << 17), reference) == HOST_DATA


def test_migration_agent_is_refused_unless_allowed(milan: Hierarchy) -> None:
    fields = ReportFields(policy=POLICY_NO_DEBUG | 1 << 18)
    allowing = SnpReferenceValues(
        trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB, allow_migration_agent=True
    )

    assert _refusal(milan, fields).check == "migration-agent"
    assert _verify(milan, fields, allowing) == HOST_DATA


def test_report_data_not_binding_the_nonce_and_key_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(report_data=bytes(64)))

    assert refusal.check == "report-data"


def test_report_for_another_nonce_is_refused(milan: Hierarchy) -> None:
    import hashlib

    replayed = hashlib.sha512(b"public key" + b"an older nonce").digest()

    refusal = _refusal(milan, ReportFields(report_data=replayed))

    assert refusal.check == "report-data"


def test_wrong_product_is_refused() -> None:
    genoa = make_hierarchy(Product.GENOA, key_label="genoa")
    milan_only = SnpReferenceValues(
        trusted_measurements=frozenset({MEASUREMENT}),
        minimum_tcb=TCB,
        products=frozenset({Product.MILAN}),
    )

    refusal = _refusal(genoa, ReportFields(product=Product.GENOA), reference=milan_only)

    assert refusal.check == "product"
    assert "Genoa; allowed: Milan" in refusal.detail


def test_cpuid_naming_another_product_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(cpuid=(0x19, 0x11, 0x01)))

    assert refusal.check == "cpuid-product"
    assert "names Genoa, certificates say Milan" in refusal.detail


def test_reported_tcb_differing_from_the_vceks_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(reported_tcb=TcbVersion(3, 0, 9, 115)))

    assert refusal.check == "reported-tcb"
    assert "snp=9" in refusal.detail and "snp=8" in refusal.detail


def test_report_of_another_chip_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(chip_id=b"\xee" * 64))

    assert refusal.check == "chip-id"


def test_report_claiming_a_vlek_under_a_vcek_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(signing_key=1))

    assert refusal.check == "signing-key"


def test_report_with_masked_chip_key_is_refused(milan: Hierarchy) -> None:
    refusal = _refusal(milan, ReportFields(mask_chip_key=True))

    assert refusal.check == "signing-key"


def test_report_signed_by_another_key_is_refused(milan: Hierarchy) -> None:
    other = make_hierarchy(key_label="other")
    report = build_report(ReportFields(), other.vcek_key)

    with pytest.raises(SnpVerificationError) as refused:
        verify_report(report, milan.certificates, NOW, REFERENCE, REPORT_DATA, milan.roots)

    assert refused.value.check == "report-signature"


def test_vlek_signed_report_is_accepted() -> None:
    vlek = make_hierarchy(leaf_name="SEV-VLEK", key_label="vlek")

    assert _verify(vlek, ReportFields(signing_key=1)) == HOST_DATA


def test_turin_report_uses_the_turin_tcb_layout() -> None:
    turin_tcb = TcbVersion(bootloader=1, tee=1, snp=3, microcode=72, fmc=2)
    turin = make_hierarchy(Product.TURIN, tcb=turin_tcb, key_label="turin")
    reference = SnpReferenceValues(
        trusted_measurements=frozenset({MEASUREMENT}),
        minimum_tcb=TcbVersion(bootloader=1, tee=1, snp=3, microcode=72, fmc=3),
    )

    fields = ReportFields(product=Product.TURIN, reported_tcb=turin_tcb)
    refusal = _refusal(turin, fields, reference=reference)

    assert refusal.check == "minimum-tcb"
    assert "reported fmc 2 < 3" in refusal.detail


def test_unpinned_test_root_is_refused_under_amds_roots(milan: Hierarchy) -> None:
    report = build_report(ReportFields(), milan.vcek_key)

    with pytest.raises(SnpVerificationError) as refused:
        verify_report(report, milan.certificates, NOW, REFERENCE, REPORT_DATA)

    assert refused.value.check == "certificate-chain"
    assert "not the pinned AMD root key" in refused.value.detail


def test_version_2_reports_are_accepted(milan: Hierarchy) -> None:
    assert _verify(milan, ReportFields(version=2)) == HOST_DATA
