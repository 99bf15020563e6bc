"""The issuer: request layout for /dev/sev-guest, and configfs-tsm from files laid out here.

This machine has no SNP hardware, so the ioctl itself and configfs's behaviour of creating
attribute files on mkdir cannot run here; everything around them is tested.
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest

from contrast.attestation.snp.evidence import GUID_ARK, GUID_ASK, GUID_VCEK, build_certificate_table
from contrast.attestation.snp.issuer import (
    SNP_GET_EXT_REPORT,
    SnpIssuer,
    SnpIssuerError,
    SnpUnavailable,
    _ExtendedReportRequest,
    _GuestRequest,
    _ReportRequest,
    build_extended_report_request,
    parse_report_response,
    read_report_from_entry,
)
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.validator import SnpValidator
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


def _entry(tmp_path: Path, report: bytes, table: bytes | None, provider: str = "sev_guest") -> Path:
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "provider").write_text(provider + "\n")
    (entry / "generation").write_text("1\n")
    (entry / "inblob").write_bytes(b"")
    (entry / "outblob").write_bytes(report)
    if table is not None:
        (entry / "auxblob").write_bytes(table)
    return entry


def test_ioctl_structures_match_the_kernel_abi() -> None:
    assert ctypes.sizeof(_ReportRequest) == 96
    assert ctypes.sizeof(_ExtendedReportRequest) == 112
    assert ctypes.sizeof(_GuestRequest) == 32
    assert SNP_GET_EXT_REPORT == 0xC0205302


def test_extended_report_request_carries_report_data_vmpl_and_buffer() -> None:
    request = build_extended_report_request(REPORT_DATA, 2, 0x7F0000001000, 8192)
    raw = bytes(request)

    assert raw[:64] == REPORT_DATA
    assert struct.unpack_from("<I", raw, 64)[0] == 2
    assert raw[68:96] == bytes(28)
    assert struct.unpack_from("<QI", raw, 96) == (0x7F0000001000, 8192)


def test_report_data_must_be_64_bytes() -> None:
    with pytest.raises(ValueError, match="exactly 64"):
        build_extended_report_request(b"short", 0, 0, 0)


def test_report_response_yields_the_report(real_report: bytes) -> None:
    response = struct.pack("<II", 0, 1184) + bytes(24) + real_report + bytes(4000 - 32 - 1184)

    assert parse_report_response(response) == real_report


def test_report_response_with_firmware_error_is_refused() -> None:
    with pytest.raises(SnpIssuerError, match="status 0x16"):
        parse_report_response(struct.pack("<II", 0x16, 0) + bytes(3992))


def test_configfs_entry_yields_report_and_certificate_table(
    tmp_path: Path, real_report: bytes
) -> None:
    table = build_certificate_table({GUID_VCEK: b"vcek"})
    entry = _entry(tmp_path, real_report, table)

    evidence = read_report_from_entry(entry, REPORT_DATA)

    assert evidence == real_report + table
    assert (entry / "inblob").read_bytes() == REPORT_DATA


def test_configfs_entry_without_auxblob_yields_the_bare_report(
    tmp_path: Path, real_report: bytes
) -> None:
    assert read_report_from_entry(_entry(tmp_path, real_report, None), REPORT_DATA) == real_report


def test_configfs_of_another_tee_is_not_snp(tmp_path: Path, real_report: bytes) -> None:
    with pytest.raises(SnpUnavailable, match="'tdx_guest'"):
        read_report_from_entry(_entry(tmp_path, real_report, None, "tdx_guest"), REPORT_DATA)


def test_configfs_entry_with_a_short_outblob_is_refused(tmp_path: Path, real_report: bytes) -> None:
    with pytest.raises(SnpIssuerError, match="has 100 bytes"):
        read_report_from_entry(_entry(tmp_path, real_report[:100], None), REPORT_DATA)


def test_machine_without_snp_interfaces_says_so(tmp_path: Path) -> None:
    issuer = SnpIssuer(configfs_root=tmp_path / "tsm" / "report", device=tmp_path / "sev-guest")

    with pytest.raises(SnpUnavailable) as unavailable:
        issuer.issue(REPORT_DATA)

    assert str(tmp_path / "tsm" / "report") in str(unavailable.value)
    assert str(tmp_path / "sev-guest") in str(unavailable.value)
    assert "not an SEV-SNP guest" in str(unavailable.value)


def test_failed_configfs_request_removes_its_entry(tmp_path: Path) -> None:
    root = tmp_path / "report"
    root.mkdir()

    with pytest.raises(SnpIssuerError, match="provider"):
        SnpIssuer(configfs_root=root).issue(REPORT_DATA)

    assert list(root.iterdir()) == []


def test_issued_evidence_is_accepted_by_the_validator(tmp_path: Path, milan: Hierarchy) -> None:
    report = build_report(ReportFields(), milan.vcek_key)
    table = build_certificate_table(
        {GUID_VCEK: milan.vcek, GUID_ASK: milan.ask, GUID_ARK: milan.ark}
    )
    evidence = read_report_from_entry(_entry(tmp_path, report, table), REPORT_DATA)
    validator = SnpValidator(
        SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB),
        roots=milan.roots,
        clock=lambda: NOW,
    )

    assert validator.validate(evidence, REPORT_DATA) == HOST_DATA


def test_configfs_request_at_a_chosen_vmpl_writes_privlevel(
    tmp_path: Path, real_report: bytes
) -> None:
    entry = _entry(tmp_path, real_report, None)
    (entry / "privlevel").write_bytes(b"")

    read_report_from_entry(entry, REPORT_DATA, vmpl=2)

    assert (entry / "privlevel").read_bytes() == b"2"
