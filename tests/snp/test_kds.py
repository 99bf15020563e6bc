"""Fetching VCEKs and chains from a KDS stand-in over real HTTPS on 127.0.0.1, with a cache."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.attestation.snp.kds import (
    CertificateUnavailable,
    KdsClient,
    KdsError,
    KdsTransientError,
    cert_chain_url,
    urllib_transport,
    vcek_url,
)
from contrast.attestation.snp.report import Product, SigningKey, TcbVersion, parse_report
from tests.snp.kds_server import KdsStandIn, kds_stand_in

REAL_TCB = TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)


@pytest.fixture
def kds(tmp_path: Path) -> Iterator[KdsStandIn]:
    with kds_stand_in(tmp_path) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def chip_id(real_report: bytes) -> bytes:
    return parse_report(real_report).chip_id


def _client(kds: KdsStandIn, cache: Path, **kwargs: object) -> KdsClient:
    return KdsClient(
        cache,
        base_url=kds.base_url,
        transport=kds.transport,
        **kwargs,  # type: ignore[arg-type]
    )


def _vcek_path(chip_id: bytes) -> str:
    return f"/vcek/v1/Milan/{chip_id.hex()}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"


def test_milan_vcek_url_names_the_full_chip_id_and_tcb(chip_id: bytes) -> None:
    assert vcek_url("https://kdsintf.amd.com", Product.MILAN, chip_id, REAL_TCB) == (
        "https://kdsintf.amd.com" + _vcek_path(chip_id)
    )


def test_turin_vcek_url_uses_eight_bytes_of_chip_id_and_the_fmc_level() -> None:
    tcb = TcbVersion(bootloader=1, tee=2, snp=3, microcode=4, fmc=5)

    url = vcek_url("https://kds", Product.TURIN, bytes(range(64)), tcb)

    assert url == (
        "https://kds/vcek/v1/Turin/0001020304050607?fmcSPL=5&blSPL=1&teeSPL=2&snpSPL=3&ucodeSPL=4"
    )


def test_cert_chain_urls_for_vcek_and_vlek() -> None:
    assert cert_chain_url("https://kds", Product.GENOA, SigningKey.VCEK) == (
        "https://kds/vcek/v1/Genoa/cert_chain"
    )
    assert cert_chain_url("https://kds", Product.GENOA, SigningKey.VLEK) == (
        "https://kds/vlek/v1/Genoa/cert_chain"
    )


def test_vcek_is_fetched_once_then_served_from_the_cache(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes, real_vcek: bytes
) -> None:
    kds.serve(_vcek_path(chip_id), (200, real_vcek))
    client = _client(kds, tmp_path / "cache")

    assert client.vcek(Product.MILAN, chip_id, REAL_TCB) == real_vcek
    assert client.vcek(Product.MILAN, chip_id, REAL_TCB) == real_vcek
    assert kds.requests == [_vcek_path(chip_id)]
    assert client.vcek_path(Product.MILAN, chip_id, REAL_TCB).read_bytes() == real_vcek


def test_cert_chain_is_fetched_and_cached(
    kds: KdsStandIn, tmp_path: Path, milan_chain_pem: bytes
) -> None:
    kds.serve("/vcek/v1/Milan/cert_chain", (200, milan_chain_pem))
    client = _client(kds, tmp_path / "cache")

    ask, ark = client.cert_chain(Product.MILAN)
    again = _client(kds, tmp_path / "cache", offline=True).cert_chain(Product.MILAN)

    assert (ask, ark) == again
    assert kds.requests == ["/vcek/v1/Milan/cert_chain"]


def test_chain_of_another_product_is_refused_and_not_cached(
    kds: KdsStandIn, tmp_path: Path, genoa_chain_pem: bytes
) -> None:
    kds.serve("/vcek/v1/Milan/cert_chain", (200, genoa_chain_pem))
    client = _client(kds, tmp_path / "cache")

    with pytest.raises(KdsError, match=r"not the pinned AMD root key of any product \(Milan\)"):
        client.cert_chain(Product.MILAN)
    assert not client.cert_chain_path(Product.MILAN, SigningKey.VCEK).exists()


def test_offline_mode_reads_only_the_cache(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes, real_vcek: bytes
) -> None:
    online = _client(kds, tmp_path / "cache")
    kds.serve(_vcek_path(chip_id), (200, real_vcek))
    online.vcek(Product.MILAN, chip_id, REAL_TCB)
    kds.requests.clear()

    offline = _client(kds, tmp_path / "cache", offline=True)

    assert offline.vcek(Product.MILAN, chip_id, REAL_TCB) == real_vcek
    assert kds.requests == []


def test_offline_mode_without_the_certificate_says_where_it_looked(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes
) -> None:
    offline = _client(kds, tmp_path / "cache", offline=True)

    with pytest.raises(CertificateUnavailable) as missing:
        offline.vcek(Product.MILAN, chip_id, REAL_TCB)

    message = str(missing.value)
    assert "not in the cache" in message and "offline mode" in message
    assert str(offline.vcek_path(Product.MILAN, chip_id, REAL_TCB)) in message
    assert kds.requests == []


def test_unknown_chip_is_reported_as_unavailable(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes
) -> None:
    with pytest.raises(CertificateUnavailable, match="HTTP 404"):
        _client(kds, tmp_path / "cache").vcek(Product.MILAN, chip_id, REAL_TCB)


def test_rate_limiting_is_retried(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes, real_vcek: bytes
) -> None:
    kds.serve(_vcek_path(chip_id), (429, b""), (503, b""), (200, real_vcek))

    assert _client(kds, tmp_path / "cache").vcek(Product.MILAN, chip_id, REAL_TCB) == real_vcek
    assert len(kds.requests) == 3


def test_persistent_failure_gives_up_after_the_attempts(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes
) -> None:
    kds.serve(_vcek_path(chip_id), (503, b""))

    with pytest.raises(KdsTransientError, match="HTTP 503"):
        _client(kds, tmp_path / "cache", attempts=2).vcek(Product.MILAN, chip_id, REAL_TCB)
    assert len(kds.requests) == 2


def test_response_that_is_not_a_certificate_is_refused_and_not_cached(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes
) -> None:
    kds.serve(_vcek_path(chip_id), (200, b"<html>maintenance</html>"))
    client = _client(kds, tmp_path / "cache")

    with pytest.raises(KdsError, match="not the VCEK"):
        client.vcek(Product.MILAN, chip_id, REAL_TCB)
    assert not client.vcek_path(Product.MILAN, chip_id, REAL_TCB).exists()


def test_corrupt_cache_entry_is_reported_with_its_path(
    kds: KdsStandIn, tmp_path: Path, chip_id: bytes
) -> None:
    client = _client(kds, tmp_path / "cache", offline=True)
    path = client.vcek_path(Product.MILAN, chip_id, REAL_TCB)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")

    with pytest.raises(KdsError, match="delete the file"):
        client.vcek(Product.MILAN, chip_id, REAL_TCB)
    assert path.read_bytes() == b"garbage"


def test_unreachable_kds_is_a_transient_error(tmp_path: Path, chip_id: bytes) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = KdsClient(
        tmp_path / "cache",
        base_url=f"https://127.0.0.1:{closed_port}",
        transport=urllib_transport,
        attempts=1,
    )

    with pytest.raises(KdsTransientError, match="cannot reach"):
        client.vcek(Product.MILAN, chip_id, REAL_TCB)
