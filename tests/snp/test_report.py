"""Parsing the attestation report: the real report's fields, and every malformed shape."""

from __future__ import annotations

import struct

import pytest

from contrast.attestation.snp.report import (
    REPORT_SIZE,
    Product,
    ReportFormatError,
    SigningKey,
    TcbVersion,
    decode_tcb,
    encode_tcb,
    parse_report,
    product_from_cpuid,
)


def _with(report: bytes, offset: int, value: bytes) -> bytes:
    return report[:offset] + value + report[offset + len(value) :]


def test_real_report_fields_are_parsed(real_report: bytes) -> None:
    report = parse_report(real_report)

    assert report.version == 2
    assert report.measurement.hex().startswith("b07af9620f3b839b")
    assert report.host_data == bytes(32)
    assert report.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert report.policy.raw == 0xB0000
    assert report.policy.debug_allowed
    assert report.policy.smt_allowed
    assert not report.policy.migration_agent_allowed
    assert report.signing_key is SigningKey.VCEK
    assert report.vmpl == 0
    assert report.chip_id.hex().startswith("3ac3fe21e13fb099")
    assert decode_tcb(report.reported_tcb, Product.MILAN) == TcbVersion(2, 0, 5, 68)
    assert report.current_version == (1, 49, 3)
    assert report.cpuid_family is None  # version 2 reports carry no CPUID
    assert report.signed_bytes == real_report[:0x2A0]


def test_truncated_report_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="1183 bytes"):
        parse_report(real_report[:-1])


def test_extended_report_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="1185 bytes"):
        parse_report(real_report + b"\0")


def test_empty_input_is_refused() -> None:
    with pytest.raises(ReportFormatError, match="0 bytes"):
        parse_report(b"")


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFFFFFF])
def test_unsupported_versions_are_refused(real_report: bytes, version: int) -> None:
    with pytest.raises(ReportFormatError, match=f"version {version} is not supported"):
        parse_report(_with(real_report, 0, struct.pack("<I", version)))


def test_unknown_signature_algorithm_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="signature algorithm 2"):
        parse_report(_with(real_report, 0x34, struct.pack("<I", 2)))


def test_policy_without_its_must_be_one_bit_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="bit 17"):
        parse_report(_with(real_report, 0x08, struct.pack("<Q", 0x90000)))


def test_policy_with_undefined_bits_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="reserved bits above bit 25"):
        parse_report(_with(real_report, 0x08, struct.pack("<Q", 0xB0000 | 1 << 40)))


def test_vmpl_out_of_range_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="VMPL 4"):
        parse_report(_with(real_report, 0x30, struct.pack("<I", 4)))


def test_reserved_signing_key_value_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="signing key 2"):
        parse_report(_with(real_report, 0x48, struct.pack("<I", 2 << 2)))


def test_signature_component_wider_than_48_bytes_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="R does not fit"):
        parse_report(_with(real_report, 0x2A0 + 48, b"\x01"))


def test_nonzero_signature_padding_is_refused(real_report: bytes) -> None:
    with pytest.raises(ReportFormatError, match="reserved bytes after R and S"):
        parse_report(_with(real_report, REPORT_SIZE - 1, b"\x01"))


def test_version_3_report_carries_cpuid(real_report: bytes) -> None:
    report = parse_report(
        _with(_with(real_report, 0, struct.pack("<I", 3)), 0x188, bytes([0x19, 0x11, 0x01]))
    )

    assert (report.cpuid_family, report.cpuid_model, report.cpuid_stepping) == (0x19, 0x11, 1)
    assert report.product_from_cpuid is Product.GENOA


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        (0x19, 0x01, Product.MILAN),
        (0x19, 0x11, Product.GENOA),
        (0x19, 0xA0, Product.GENOA),
        (0x1A, 0x02, Product.TURIN),
        (0x17, 0x31, None),
    ],
)
def test_cpuid_names_the_product(family: int, model: int, product: Product | None) -> None:
    assert product_from_cpuid(family, model) is product


def test_milan_tcb_layout() -> None:
    raw = int.from_bytes(bytes([3, 1, 0, 0, 0, 0, 8, 115]), "little")

    assert decode_tcb(raw, Product.MILAN) == TcbVersion(3, 1, 8, 115)


def test_turin_tcb_layout_has_fmc_first() -> None:
    raw = int.from_bytes(bytes([2, 3, 1, 8, 0, 0, 0, 115]), "little")

    assert decode_tcb(raw, Product.TURIN) == TcbVersion(3, 1, 8, 115, fmc=2)


@pytest.mark.parametrize("product", list(Product))
def test_tcb_encoding_inverts_decoding(product: Product) -> None:
    tcb = TcbVersion(3, 1, 8, 115, fmc=2 if product is Product.TURIN else None)

    assert decode_tcb(encode_tcb(tcb, product), product) == tcb


def test_version_5_report_carries_mitigation_vectors(real_report: bytes) -> None:
    data = _with(real_report, 0, struct.pack("<I", 5))
    data = _with(data, 0x1F8, struct.pack("<QQ", 0x3, 0x7))

    report = parse_report(data)

    assert (report.launch_mitigation_vector, report.current_mitigation_vector) == (3, 7)
    assert parse_report(real_report).launch_mitigation_vector is None
