"""Cost of one full SNP validation. Run: ``python -m tests.snp.bench_validate``.

Target (issue 4): under 3 ms per validation with a warm certificate cache.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from contrast.attestation.snp.certchain import load_ask_ark_pem
from contrast.attestation.snp.evidence import (
    GUID_ARK,
    GUID_ASK,
    GUID_VCEK,
    build_certificate_table,
    encode_evidence,
)
from contrast.attestation.snp.kds import KdsClient
from contrast.attestation.snp.referencevalues import SnpReferenceValues
from contrast.attestation.snp.report import Product, SigningKey, TcbVersion
from contrast.attestation.snp.validator import SnpValidator
from contrast.attestation.snp.verify import CertificateSet, ChainCache, evaluate_report
from tests.snp.hierarchy import (
    CHIP_ID,
    MEASUREMENT,
    NOW,
    REPORT_DATA,
    TCB,
    ReportFields,
    build_report,
    make_hierarchy,
    real_files,
)

RUNS = 2000
TARGET_MS = 3.0


def _measure(name: str, action: Callable[[], object], runs: int = RUNS) -> float:
    action()  # warm up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    print(
        f"{name:<62} median {statistics.median(samples):6.3f} ms   "
        f"p99 {samples[int(len(samples) * 0.99)]:6.3f} ms   ({runs} runs)"
    )
    return statistics.median(samples)


def main() -> None:
    hierarchy = make_hierarchy()
    reference = SnpReferenceValues(trusted_measurements=frozenset({MEASUREMENT}), minimum_tcb=TCB)
    report = build_report(ReportFields(), hierarchy.vcek_key)
    table = build_certificate_table(
        {GUID_VCEK: hierarchy.vcek, GUID_ASK: hierarchy.ask, GUID_ARK: hierarchy.ark}
    )
    validator = SnpValidator(reference, roots=hierarchy.roots, clock=lambda: NOW)
    evidence = encode_evidence(report, table)
    assert validator.validate(evidence, REPORT_DATA)
    warm = _measure(
        "SnpValidator.validate, certificates in evidence, warm",
        lambda: validator.validate(evidence, REPORT_DATA),
    )

    with tempfile.TemporaryDirectory() as directory:
        cache = Path(directory)
        kds = KdsClient(cache, offline=True, roots=hierarchy.roots)
        kds.vcek_path(Product.MILAN, CHIP_ID, TCB).parent.mkdir(parents=True)
        kds.vcek_path(Product.MILAN, CHIP_ID, TCB).write_bytes(hierarchy.vcek)
        kds.cert_chain_path(Product.MILAN, SigningKey.VCEK).parent.mkdir(parents=True)
        kds.cert_chain_path(Product.MILAN, SigningKey.VCEK).write_bytes(
            _pem(hierarchy.ask) + _pem(hierarchy.ark)
        )
        offline = SnpValidator(reference, kds, roots=hierarchy.roots, clock=lambda: NOW)
        bare = encode_evidence(report, b"")
        assert offline.validate(bare, REPORT_DATA)
        _measure(
            "SnpValidator.validate, certificates from warm KDS disk cache",
            lambda: offline.validate(bare, REPORT_DATA),
        )

    real_report, real_vcek, milan_pem = real_files()
    ask, ark = load_ask_ark_pem(milan_pem, "milan")
    certificates = CertificateSet(ark.der, ask.der, real_vcek)
    real_reference = SnpReferenceValues(
        trusted_measurements=frozenset({real_report[0x90:0xC0]}),
        minimum_tcb=TcbVersion(2, 0, 5, 68),
    )
    chain_cache = ChainCache()
    real_warm = _measure(
        "real AMD report + reference values, warm chain cache",
        lambda: evaluate_report(
            real_report, certificates, NOW, real_reference, None, chain_cache=chain_cache
        ),
    )
    _measure(
        "real AMD report + reference values, cold (chain verified anew)",
        lambda: evaluate_report(real_report, certificates, NOW, real_reference),
        runs=500,
    )
    worst = max(warm, real_warm)
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(f"target: one full validation with a warm cache under {TARGET_MS} ms: {verdict}")


def _pem(der: bytes) -> bytes:
    return (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    )


if __name__ == "__main__":
    main()
