"""``contrast verify-snp-report``: verify one SNP report from files and explain the verdict.

For people debugging attestation: it prints the fields that matter and every check with
its verdict, and exits 0 only if the report verifies (and, with ``--reference-values``,
passes them). Exit status 1 means refused, 2 means the input could not be read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from contrast.attestation.snp.certchain import CertificateChainError, load_ask_ark_pem, split_pem
from contrast.attestation.snp.referencevalues import (
    ReferenceValuesError,
    SnpReferenceValues,
    reference_values_from_json,
)
from contrast.attestation.snp.report import decode_tcb
from contrast.attestation.snp.verify import CertificateSet, Evaluation, evaluate_report

EXIT_REFUSED = 1


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise click.UsageError(f"cannot read the {what} {path}: {error.strerror}") from None


def _load_leaf(data: bytes) -> bytes:
    if data.lstrip().startswith(b"-----BEGIN"):
        blocks = split_pem(data, "--vcek")
        if len(blocks) != 1:
            raise CertificateChainError(f"--vcek: expected one certificate, found {len(blocks)}")
        return blocks[0]
    return data


def _fields(evaluation: Evaluation) -> list[tuple[str, str]]:
    report = evaluation.report
    if report is None:
        return []
    chain = evaluation.chain
    product = chain.product if chain else None
    rows = [
        ("version", str(report.version)),
        ("product", product.value if product else "unknown (certificate chain not verified)"),
        ("measurement", report.measurement.hex()),
        ("host data", report.host_data.hex()),
        ("report data", report.report_data.hex()),
        ("guest policy", report.policy.describe()),
        ("vmpl", str(report.vmpl)),
        ("signing key", report.signing_key.name),
        ("chip id", report.chip_id.hex()),
    ]
    for label, raw in (
        ("reported tcb", report.reported_tcb),
        ("current tcb", report.current_tcb),
        ("committed tcb", report.committed_tcb),
        ("launch tcb", report.launch_tcb),
    ):
        shown = decode_tcb(raw, product).describe() + " " if product else ""
        rows.append((label, f"{shown}(raw {raw:#018x})"))
    major, minor, build = report.current_version
    rows.append(("firmware", f"{major}.{minor} build {build}"))
    return rows


@click.command("verify-snp-report")
@click.option(
    "--report",
    "report_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The 1184-byte SNP attestation report (binary).",
)
@click.option(
    "--vcek",
    "vcek_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The VCEK (or VLEK) certificate that signed it, DER or PEM.",
)
@click.option(
    "--chain",
    "chain_path",
    required=True,
    type=click.Path(path_type=Path),
    help="AMD's ASK then ARK, PEM (as KDS serves cert_chain).",
)
@click.option(
    "--reference-values",
    "reference_path",
    type=click.Path(path_type=Path),
    help="JSON reference values to check the report against (see docs/snp.md).",
)
@click.option(
    "--crl",
    "crl_path",
    type=click.Path(path_type=Path),
    help="AMD's CRL for the product (DER, as KDS serves it); checks the ASK is not revoked.",
)
@click.option(
    "--expected-report-data", "expected_hex", help="Hex of the 64 bytes the report data must equal."
)
def verify_snp_report(
    report_path: Path,
    vcek_path: Path,
    chain_path: Path,
    reference_path: Path | None,
    crl_path: Path | None,
    expected_hex: str | None,
) -> None:
    """Verify an SNP attestation report against AMD's certificate chain."""
    report = _read(report_path, "report")
    reference: SnpReferenceValues | None = None
    if reference_path is not None:
        try:
            reference = reference_values_from_json(_read(reference_path, "reference values"))
        except ReferenceValuesError as error:
            raise click.UsageError(f"reference values {reference_path}: {error}") from None
    expected: bytes | None = None
    if expected_hex is not None:
        try:
            expected = bytes.fromhex(expected_hex)
        except ValueError:
            raise click.UsageError("--expected-report-data must be hex") from None
    try:
        leaf = _load_leaf(_read(vcek_path, "VCEK"))
        ask, ark = load_ask_ark_pem(_read(chain_path, "certificate chain"), str(chain_path))
    except CertificateChainError as error:
        raise click.UsageError(str(error)) from None

    evaluation = evaluate_report(
        report,
        CertificateSet(root=ark.der, intermediate=ask.der, leaf=leaf),
        datetime.now(UTC),
        reference,
        expected,
        crl=_read(crl_path, "CRL") if crl_path is not None else None,
    )
    for label, value in _fields(evaluation):
        click.echo(f"{label + ':':<15} {value}")
    click.echo("")
    for check in evaluation.checks:
        click.echo(f"{'PASS' if check.passed else 'FAIL'}  {check.name:<18} {check.detail}")
    click.echo("")
    if evaluation.passed:
        suffix = " and passes the reference values" if reference else ""
        click.echo(f"verdict: the report verifies{suffix}")
        return
    failure = evaluation.first_failure()
    assert failure is not None
    click.echo(f"verdict: REFUSED ({failure.name})")
    raise SystemExit(EXIT_REFUSED)
