"""SnpValidator: evidence (report || certificate table) in, host data out."""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.attestation.snp.certchain import load_ask_ark_pem
from contrast.attestation.snp.evidence import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    GUID_VLEK,
    EvidenceFormatError,
    build_certificate_table,
    decode_evidence,
    encode_evidence,
    parse_certificate_table,
)
from contrast.attestation.snp.kds import KdsClient
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import Product, TcbVersion, parse_report
from contrast.attestation.snp.validator import SnpValidator, select_certificates
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
)
from tests.snp.kds_server import KdsStandIn, kds_stand_in

REFERENCE = SnpReferenceValues(
    trusted_measurements=frozenset({MEASUREMENT}),
    minimum_tcb=TCB,
    allowed_host_data=frozenset({HOST_DATA}),
)


def _evidence(hierarchy: Hierarchy, fields: ReportFields | None = None, **table: bytes) -> bytes:
    report = build_report(fields or ReportFields(), hierarchy.vcek_key)
    certificates = table or {"vcek": hierarchy.vcek, "ask": hierarchy.ask, "ark": hierarchy.ark}
    guids = {"vcek": GUID_VCEK, "vlek": GUID_VLEK, "ask": GUID_ASK, "ark": GUID_ARK}
    return encode_evidence(
        report, build_certificate_table({guids[name]: der for name, der in certificates.items()})
    )


def _validator(hierarchy: Hierarchy, kds: KdsClient | None = None) -> SnpValidator:
    return SnpValidator(REFERENCE, kds, roots=hierarchy.roots, clock=lambda: NOW)


@pytest.fixture
def kds(tmp_path: Path) -> Iterator[KdsStandIn]:
    with kds_stand_in(tmp_path) as stand_in:
        yield stand_in


def test_certificate_table_round_trips() -> None:
    certificates = {GUID_VCEK: b"vcek", GUID_ASK: b"ask", GUID_ARK: b"ark"}

    assert parse_certificate_table(build_certificate_table(certificates)) == certificates


def test_all_zero_certificate_buffer_holds_no_certificates() -> None:
    assert parse_certificate_table(bytes(4096)) == {}


def test_certificate_table_without_terminator_is_refused() -> None:
    table = build_certificate_table({GUID_VCEK: b"x"})

    with pytest.raises(EvidenceFormatError, match="truncated"):
        parse_certificate_table(table[:24])


def test_certificate_table_entry_pointing_outside_is_refused() -> None:
    entry = GUID_VCEK.bytes + struct.pack("<II", 48, 1000)

    with pytest.raises(EvidenceFormatError, match="points outside the table"):
        parse_certificate_table(entry + bytes(24) + b"short")


def test_certificate_table_naming_a_guid_twice_is_refused() -> None:
    entry = GUID_VCEK.bytes + struct.pack("<II", 72, 1)

    with pytest.raises(EvidenceFormatError, match="twice"):
        parse_certificate_table(entry + entry + bytes(24) + b"x")


def test_evidence_shorter_than_a_report_is_refused() -> None:
    with pytest.raises(EvidenceFormatError, match="less than one 1184-byte report"):
        decode_evidence(bytes(100))


def test_validator_accepts_evidence_carrying_its_certificates(milan: Hierarchy) -> None:
    assert _validator(milan).validate(_evidence(milan), REPORT_DATA) == HOST_DATA


def test_validator_refuses_report_data_that_does_not_bind_nonce_and_key(
    milan: Hierarchy,
) -> None:
    with pytest.raises(SnpVerificationError) as refused:
        _validator(milan).validate(_evidence(milan), bytes(64))

    assert refused.value.check == "report-data"


def test_validator_refuses_a_debuggable_guest(milan: Hierarchy) -> None:
    evidence = _evidence(milan, ReportFields(policy=(1 << 17) | (1 << 19)))

    with pytest.raises(SnpVerificationError, match="debug-disabled"):
        _validator(milan).validate(evidence, REPORT_DATA)


def test_validator_refuses_extended_evidence_as_a_malformed_table(milan: Hierarchy) -> None:
    evidence = build_report(ReportFields(), milan.vcek_key) + b"\x01"

    with pytest.raises(SnpVerificationError) as refused:
        _validator(milan).validate(evidence, REPORT_DATA)

    assert refused.value.check == "report-format"


def test_validator_refuses_truncated_evidence(milan: Hierarchy) -> None:
    with pytest.raises(SnpVerificationError, match="report-format"):
        _validator(milan).validate(_evidence(milan)[:1000], REPORT_DATA)


def test_validator_without_certificates_or_kds_says_so(milan: Hierarchy) -> None:
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), b"")

    with pytest.raises(SnpVerificationError) as refused:
        _validator(milan).validate(evidence, REPORT_DATA)

    assert refused.value.check == "certificates"
    assert "no key distribution service cache" in refused.value.detail


def test_validator_fetches_missing_certificates_from_kds_and_then_works_offline(
    milan: Hierarchy, kds: KdsStandIn, tmp_path: Path
) -> None:
    chain_pem = b"".join(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
        for der in (milan.ask, milan.ark)
    )
    kds.serve(
        f"/vcek/v1/Milan/{bytes(range(64)).hex()}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115",
        (200, milan.vcek),
    )
    kds.serve("/vcek/v1/Milan/cert_chain", (200, chain_pem))
    cache = tmp_path / "kds-cache"
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), b"")
    online = KdsClient(cache, base_url=kds.base_url, transport=kds.transport, roots=milan.roots)

    assert _validator(milan, online).validate(evidence, REPORT_DATA) == HOST_DATA
    offline = KdsClient(cache, offline=True, roots=milan.roots)
    assert _validator(milan, offline).validate(evidence, REPORT_DATA) == HOST_DATA
    assert len(kds.requests) == 2


def test_validator_offline_without_cached_vcek_names_what_is_missing(
    milan: Hierarchy, tmp_path: Path
) -> None:
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), b"")
    offline = KdsClient(tmp_path / "empty-cache", offline=True, roots=milan.roots)

    with pytest.raises(SnpVerificationError) as refused:
        _validator(milan, offline).validate(evidence, REPORT_DATA)

    assert refused.value.check == "certificates"
    assert "VCEK for Milan chip 0001020304050607" in refused.value.detail
    assert "offline mode" in refused.value.detail


def test_real_report_verifies_with_certificates_from_a_local_kds(
    kds: KdsStandIn,
    tmp_path: Path,
    real_report: bytes,
    real_vcek: bytes,
    milan_chain_pem: bytes,
) -> None:
    report = parse_report(real_report)
    kds.serve(
        f"/vcek/v1/Milan/{report.chip_id.hex()}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68",
        (200, real_vcek),
    )
    kds.serve("/vcek/v1/Milan/cert_chain", (200, milan_chain_pem))
    client = KdsClient(tmp_path / "cache", base_url=kds.base_url, transport=kds.transport)
    # A version 2 report names no product, so the reference values' products are tried.
    milan_only = SnpReferenceValues(
        trusted_measurements=frozenset({report.measurement}),
        minimum_tcb=TcbVersion(2, 0, 5, 68),
        products=frozenset({Product.MILAN}),
    )

    certificates = select_certificates(report, {}, client, milan_only.products)

    assert certificates.leaf == real_vcek
    assert evaluate_report(real_report, certificates, NOW).passed


def test_real_evidence_with_its_certificate_table_fails_only_on_its_debug_policy(
    real_report: bytes, real_vcek: bytes, milan_chain_pem: bytes
) -> None:
    ask, ark = load_ask_ark_pem(milan_chain_pem, "milan")
    table = build_certificate_table({GUID_VCEK: real_vcek, GUID_ASK: ask.der, GUID_ARK: ark.der})
    report = parse_report(real_report)
    validator = SnpValidator(
        SnpReferenceValues(
            trusted_measurements=frozenset({report.measurement}),
            minimum_tcb=TcbVersion(2, 0, 5, 68),
        ),
        clock=lambda: NOW,
    )

    with pytest.raises(SnpVerificationError) as refused:
        validator.validate(encode_evidence(real_report, table), report.report_data)

    assert refused.value.check == "debug-disabled"


def test_unknown_certificate_table_entries_are_ignored(milan: Hierarchy) -> None:
    table = build_certificate_table(
        {
            GUID_VCEK: milan.vcek,
            GUID_ASK: milan.ask,
            GUID_ARK: milan.ark,
            uuid.UUID(int=1): b"unrelated",
        }
    )
    evidence = encode_evidence(build_report(ReportFields(), milan.vcek_key), table)

    assert _validator(milan).validate(evidence, REPORT_DATA) == HOST_DATA


def test_refusal_is_logged_with_the_failed_check(
    milan: Hierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SnpVerificationError):
        _validator(milan).validate(
            _evidence(milan, ReportFields(measurement=bytes(48))), REPORT_DATA
        )

    refusals = [r for r in caplog.records if r.getMessage() == "snp-refused"]
    assert [r.fields["check"] for r in refusals] == ["measurement"]  # type: ignore[attr-defined]
