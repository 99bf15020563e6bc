"""``contrast verify-snp-report``, run as the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.snp.hierarchy import TESTDATA

CONTRAST = Path(sys.executable).parent / "contrast"
REAL_MEASUREMENT = (
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
    "6bdf8a9ece31a5a608eb0cf2e4872b01"
)


def _run(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONTRAST), "verify-snp-report", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _real(chain: str = "ask_ark_milan.pem") -> list[str | Path]:
    return [
        "--report",
        TESTDATA / "attestation.bin",
        "--vcek",
        TESTDATA / "vcek.der",
        "--chain",
        TESTDATA / chain,
    ]


def _reference_file(tmp_path: Path, **document: object) -> Path:
    path = tmp_path / "reference-values.json"
    path.write_text(json.dumps(document))
    return path


def test_real_report_verifies_and_its_fields_are_printed() -> None:
    result = _run(*_real())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "product:        Milan" in result.stdout
    assert f"measurement:    {REAL_MEASUREMENT}" in result.stdout
    assert "host data:      " + "0" * 64 in result.stdout
    assert "reported tcb:   bootloader=2 tee=0 snp=5 microcode=68" in result.stdout
    assert "debug=allowed" in result.stdout
    assert "PASS  report-signature" in result.stdout
    assert "verdict: the report verifies" in result.stdout


def test_real_report_is_refused_with_the_genoa_chain() -> None:
    result = _run(*_real("ask_ark_genoa.pem"))

    assert result.returncode == 1
    assert "FAIL  certificate-chain" in result.stdout
    assert "verdict: REFUSED (certificate-chain)" in result.stdout


def test_reference_values_are_checked_and_debug_is_refused(tmp_path: Path) -> None:
    reference = _reference_file(
        tmp_path,
        products=["Milan"],
        trusted_measurements=[REAL_MEASUREMENT],
        minimum_tcb={"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68},
        host_data=["00" * 32],
    )

    result = _run(*_real(), "--reference-values", reference)

    assert result.returncode == 1
    for passed in ("product", "measurement", "smt", "migration-agent", "minimum-tcb", "host-data"):
        assert f"PASS  {passed} " in result.stdout
    assert "FAIL  debug-disabled" in result.stdout
    assert "verdict: REFUSED (debug-disabled)" in result.stdout


def test_reference_values_report_every_failed_check(tmp_path: Path) -> None:
    reference = _reference_file(
        tmp_path,
        trusted_measurements=["00" * 48],
        minimum_tcb={"bootloader": 2, "tee": 0, "snp": 6, "microcode": 68},
    )

    result = _run(*_real(), "--reference-values", reference)

    assert result.returncode == 1
    assert "FAIL  measurement" in result.stdout
    assert "FAIL  minimum-tcb        below minimum: current snp 5 < 6" in result.stdout


def test_expected_report_data_is_compared() -> None:
    matching = "0102030405" + "00" * 59

    assert _run(*_real(), "--expected-report-data", matching).returncode == 0
    refused = _run(*_real(), "--expected-report-data", "00" * 64)
    assert refused.returncode == 1
    assert "FAIL  report-data" in refused.stdout


def test_malformed_reference_values_are_a_usage_error_naming_the_field(tmp_path: Path) -> None:
    reference = _reference_file(
        tmp_path, trusted_measurements=[REAL_MEASUREMENT], minimum_tcb={"bootloader": 2}
    )

    result = _run(*_real(), "--reference-values", reference)

    assert result.returncode == 2
    assert "minimum_tcb.tee: missing" in result.stderr


def test_missing_report_file_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(
        "--report",
        tmp_path / "absent.bin",
        "--vcek",
        TESTDATA / "vcek.der",
        "--chain",
        TESTDATA / "ask_ark_milan.pem",
    )

    assert result.returncode == 2
    assert "cannot read the report" in result.stderr


def test_truncated_report_is_refused_as_malformed(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes((TESTDATA / "attestation.bin").read_bytes()[:-16])

    result = _run(
        "--report",
        truncated,
        "--vcek",
        TESTDATA / "vcek.der",
        "--chain",
        TESTDATA / "ask_ark_milan.pem",
    )

    assert result.returncode == 1
    assert "FAIL  report-format      attestation report has 1168 bytes" in result.stdout
