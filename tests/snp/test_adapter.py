"""SNP behind the attestation interface, with the manifest's ReferenceValues.snp entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrast.attestation import platforms
from contrast.attestation.base import AttestationError, Evidence, report_data_for, validate_evidence
from contrast.attestation.snp.adapter import (
    SNP_GUEST_DEVICES,
    SnpPlatformIssuer,
    SnpPlatformValidator,
    kds_from_environment,
    reference_values_from_manifest,
    snp_issuer_factory,
    snp_validator_factory,
)
from contrast.attestation.snp.certchain import load_ask_ark_pem
from contrast.attestation.snp.evidence import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    build_certificate_table,
)
from contrast.attestation.snp.issuer import SnpIssuer, read_report_from_entry
from contrast.attestation.snp.report import Product, TcbVersion
from contrast.manifest import ReferenceValues, SnpGuestPolicy, SnpReferenceValue, SnpTcb
from tests.snp.hierarchy import (
    HOST_DATA,
    MEASUREMENT,
    NOW,
    TCB,
    Hierarchy,
    ReportFields,
    build_report,
)

NONCE = bytes(range(32))
CHANNEL_KEY = b"DER SubjectPublicKeyInfo of the channel key"
REPORT_DATA = report_data_for(NONCE, CHANNEL_KEY)


def _entry(
    measurement: bytes = MEASUREMENT, product: str = "Milan", smt: bool = True
) -> SnpReferenceValue:
    return SnpReferenceValue(
        product_name=product,
        trusted_measurement=measurement.hex(),
        minimum_tcb=SnpTcb(bootloader=3, tee=0, snp=8, microcode=115),
        guest_policy=SnpGuestPolicy(smt=smt, migrate_ma=False),
    )


def _evidence(hierarchy: Hierarchy, fields: ReportFields | None = None) -> Evidence:
    report = build_report(fields or ReportFields(report_data=REPORT_DATA), hierarchy.vcek_key)
    table = build_certificate_table(
        {GUID_VCEK: hierarchy.vcek, GUID_ASK: hierarchy.ask, GUID_ARK: hierarchy.ark}
    )
    return Evidence("snp", report, table)


def _validator(hierarchy: Hierarchy, *entries: SnpReferenceValue) -> SnpPlatformValidator:
    return SnpPlatformValidator(entries or (_entry(),), roots=hierarchy.roots, clock=lambda: NOW)


def test_manifest_entry_maps_onto_the_snp_checks() -> None:
    values = reference_values_from_manifest(_entry(smt=False))

    assert values.trusted_measurements == frozenset({MEASUREMENT})
    assert values.minimum_tcb == TCB
    assert values.products == frozenset({Product.MILAN})
    assert (values.allow_smt, values.allow_migration_agent) == (False, False)


def test_accepted_evidence_yields_host_data_and_measurement(milan: Hierarchy) -> None:
    verified = _validator(milan).validate(_evidence(milan), REPORT_DATA)

    assert (verified.platform, verified.host_data, verified.measurement) == (
        "snp",
        HOST_DATA,
        MEASUREMENT,
    )


def test_any_matching_entry_accepts(milan: Hierarchy) -> None:
    validator = _validator(milan, _entry(measurement=bytes(48)), _entry())

    assert validator.validate(_evidence(milan), REPORT_DATA).host_data == HOST_DATA


def test_no_matching_entry_is_refused_with_each_entrys_reason(milan: Hierarchy) -> None:
    validator = _validator(milan, _entry(measurement=bytes(48)), _entry(smt=False))

    with pytest.raises(AttestationError) as refused:
        validator.validate(_evidence(milan), REPORT_DATA)

    assert refused.value.check == "reference-values"
    assert "measurement" in str(refused.value) and "smt" in str(refused.value)


def test_evidence_for_another_nonce_is_refused(milan: Hierarchy) -> None:
    with pytest.raises(AttestationError) as refused:
        _validator(milan).validate(_evidence(milan), report_data_for(bytes(32), CHANNEL_KEY))

    assert refused.value.check == "report-data"


def test_debuggable_guest_is_refused(milan: Hierarchy) -> None:
    fields = ReportFields(report_data=REPORT_DATA, policy=(1 << 17) | (1 << 19))

    with pytest.raises(AttestationError, match="debug-disabled"):
        _validator(milan).validate(_evidence(milan, fields), REPORT_DATA)


def test_evidence_of_another_platform_is_refused(milan: Hierarchy) -> None:
    evidence = _evidence(milan)

    with pytest.raises(AttestationError) as refused:
        _validator(milan).validate(Evidence("simulated", evidence.report), REPORT_DATA)

    assert refused.value.check == "platform"


def test_truncated_report_is_refused(milan: Hierarchy) -> None:
    evidence = _evidence(milan)

    with pytest.raises(AttestationError) as refused:
        _validator(milan).validate(
            Evidence("snp", evidence.report[:-1], evidence.endorsements), REPORT_DATA
        )

    assert refused.value.check == "report-format"


def test_real_evidence_is_refused_only_for_its_debug_policy(
    real_report: bytes, real_vcek: bytes, milan_chain_pem: bytes
) -> None:
    ask, ark = load_ask_ark_pem(milan_chain_pem, "milan")
    table = build_certificate_table({GUID_VCEK: real_vcek, GUID_ASK: ask.der, GUID_ARK: ark.der})
    entry = SnpReferenceValue(
        product_name="Milan",
        trusted_measurement=real_report[0x90:0xC0].hex(),
        minimum_tcb=SnpTcb(bootloader=2, tee=0, snp=5, microcode=68),
        guest_policy=SnpGuestPolicy(smt=True, migrate_ma=False),
    )
    validator = SnpPlatformValidator([entry], clock=lambda: NOW)

    with pytest.raises(AttestationError) as refused:
        validator.validate(Evidence("snp", real_report, table), real_report[0x50:0x90])

    assert refused.value.check == "reference-values"
    assert "debug-disabled" in str(refused.value)


def test_platform_issuer_splits_report_and_host_table(
    tmp_path: Path, milan: Hierarchy, real_report: bytes
) -> None:
    table = build_certificate_table({GUID_VCEK: milan.vcek})
    entry = tmp_path / "entry"
    entry.mkdir()
    for name, content in {
        "provider": b"sev_guest\n",
        "generation": b"1\n",
        "inblob": b"",
        "outblob": real_report,
        "auxblob": table,
    }.items():
        (entry / name).write_bytes(content)

    evidence = SnpPlatformIssuer(lambda data: read_report_from_entry(entry, data)).issue(
        REPORT_DATA
    )

    assert evidence == Evidence("snp", real_report, table)


def test_platform_issuer_without_snp_hardware_is_an_issuer_error(tmp_path: Path) -> None:
    issuer = SnpIssuer(configfs_root=tmp_path / "none", device=tmp_path / "sev-guest")

    with pytest.raises(AttestationError) as refused:
        SnpPlatformIssuer(issuer.issue).issue(REPORT_DATA)

    assert refused.value.check == "issuer"


def test_kds_comes_from_the_environment(tmp_path: Path) -> None:
    assert kds_from_environment({}) is None
    online = kds_from_environment({"CONTRAST_SNP_KDS_CACHE": str(tmp_path)})
    offline = kds_from_environment(
        {"CONTRAST_SNP_KDS_CACHE": str(tmp_path), "CONTRAST_SNP_KDS_OFFLINE": "1"}
    )

    assert online is not None and not online.offline and online.cache_dir == tmp_path
    assert offline is not None and offline.offline


def test_turin_entry_compares_no_fmc_because_the_manifest_has_none() -> None:
    values = reference_values_from_manifest(_entry(product="Turin"))

    assert values.minimum_tcb == TcbVersion(3, 0, 8, 115, fmc=None)


def test_validator_factory_builds_the_manifests_snp_validator(
    milan: Hierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTRAST_SNP_KDS_CACHE", raising=False)

    validator = snp_validator_factory(ReferenceValues(snp=(_entry(),)))

    assert validator.platform == "snp"
    assert isinstance(validator, SnpPlatformValidator)
    assert validator.kds is None
    assert [entry for entry, _ in validator.entries] == [_entry()]


def test_issuer_factory_builds_the_snp_issuer() -> None:
    assert snp_issuer_factory().platform == "snp"


def test_registered_snp_factories_route_snp_evidence_and_pick_the_snp_issuer(
    milan: Hierarchy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two registration lines docs/snp.md gives for platforms.py, applied for this test."""
    monkeypatch.delenv("CONTRAST_SNP_KDS_CACHE", raising=False)
    monkeypatch.setitem(
        platforms.VALIDATOR_FACTORIES,
        "snp",
        lambda rv: SnpPlatformValidator(rv.snp, roots=milan.roots, clock=lambda: NOW),
    )
    device = tmp_path / "sev-guest"
    device.touch()
    monkeypatch.setitem(platforms.HARDWARE_ISSUERS, "snp", ((device,), snp_issuer_factory))

    validators = platforms.validators_for(ReferenceValues(snp=(_entry(),)))
    verified = validate_evidence(_evidence(milan), REPORT_DATA, validators)
    issuer = platforms.issuer_from_environment({})

    assert verified.host_data == HOST_DATA
    assert isinstance(issuer, SnpPlatformIssuer)


def test_snp_is_registered_for_every_process_that_validates_or_issues() -> None:
    assert platforms.VALIDATOR_FACTORIES["snp"] is snp_validator_factory
    assert platforms.HARDWARE_ISSUERS["snp"] == (SNP_GUEST_DEVICES, snp_issuer_factory)
