"""AMD's certificate chain: real Milan/Genoa chains, the zero-serial VCEK, pinned roots."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.attestation.snp.certchain import (
    AMD_ROOT_KEYS,
    AmdCertificate,
    CertificateChainError,
    VerifiedChain,
    load_ask_ark_pem,
    parse_certificate,
    split_pem,
    verify_chain,
)
from contrast.attestation.snp.report import Product, SigningKey, TcbVersion
from tests.snp.hierarchy import NOW, TCB, Hierarchy, make_hierarchy


def _parsed(hierarchy: Hierarchy) -> tuple[AmdCertificate, AmdCertificate, AmdCertificate]:
    return (
        parse_certificate(hierarchy.ark, "ARK"),
        parse_certificate(hierarchy.ask, "ASK"),
        parse_certificate(hierarchy.vcek, "VCEK"),
    )


def _verify_real(vcek: bytes, chain_pem: bytes) -> VerifiedChain:
    ask, ark = load_ask_ark_pem(chain_pem, "chain")
    return verify_chain(ark, ask, parse_certificate(vcek, "VCEK"), NOW)


def test_real_vcek_chains_to_the_pinned_milan_root(
    real_vcek: bytes, milan_chain_pem: bytes
) -> None:
    chain = _verify_real(real_vcek, milan_chain_pem)

    assert chain.product is Product.MILAN
    assert chain.signing_key is SigningKey.VCEK
    assert chain.leaf_tcb == TcbVersion(2, 0, 5, 68)


def test_real_vcek_is_refused_under_the_genoa_chain(
    real_vcek: bytes, genoa_chain_pem: bytes
) -> None:
    with pytest.raises(CertificateChainError, match="SEV-Genoa"):
        _verify_real(real_vcek, genoa_chain_pem)


def test_real_vcek_signature_does_not_verify_with_the_genoa_ask(
    real_vcek: bytes, genoa_chain_pem: bytes
) -> None:
    from contrast.attestation.snp.certchain import verify_signed_by

    genoa_ask, _ = load_ask_ark_pem(genoa_chain_pem, "genoa")
    vcek = parse_certificate(real_vcek, "VCEK")
    # Give the Genoa ASK the Milan ASK's name, so only the signature can tell them apart.
    impostor = dataclasses.replace(genoa_ask, subject=vcek.issuer)

    with pytest.raises(CertificateChainError, match="does not verify with the ASK"):
        verify_signed_by(vcek, impostor)


def test_zero_serial_vcek_is_read_without_any_warning(real_vcek: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        certificate = parse_certificate(real_vcek, "VCEK")

    assert certificate.serial_number == 0


def test_cryptography_itself_only_warns_about_the_zero_serial(real_vcek: bytes) -> None:
    # Documents why certchain.py does not use cryptography.x509 for the chain: this warning
    # announces that a future release will refuse the real VCEK.
    with pytest.warns(Warning, match="serial number"):
        x509.load_der_x509_certificate(real_vcek)


@pytest.mark.parametrize("product", ["milan", "genoa"])
def test_pinned_roots_are_the_arks_in_the_testdata(
    product: str, request: pytest.FixtureRequest
) -> None:
    _, ark = load_ask_ark_pem(request.getfixturevalue(f"{product}_chain_pem"), product)

    assert ark.public_key_sha256 == AMD_ROOT_KEYS[Product(product.capitalize())]


def test_pinned_roots_are_distinct() -> None:
    assert len(set(AMD_ROOT_KEYS.values())) == len(AMD_ROOT_KEYS) == 3


def test_pem_and_der_parse_to_the_same_certificate(milan_chain_pem: bytes) -> None:
    der_ask = split_pem(milan_chain_pem, "chain")[0]
    pem_ask = x509.load_der_x509_certificate(der_ask).public_bytes(serialization.Encoding.PEM)

    from contrast.attestation.snp.certchain import load_certificate

    assert load_certificate(pem_ask, "ASK").der == der_ask


def test_chain_of_an_unpinned_root_is_refused(milan: Hierarchy) -> None:
    ark, ask, vcek = _parsed(milan)

    with pytest.raises(CertificateChainError, match="not the pinned AMD root key"):
        verify_chain(ark, ask, vcek, NOW)


def test_test_hierarchy_verifies_under_its_own_pin(milan: Hierarchy) -> None:
    ark, ask, vcek = _parsed(milan)

    chain = verify_chain(ark, ask, vcek, NOW, milan.roots)

    assert chain.leaf_tcb == TCB
    assert chain.leaf_serial_number > 0


def test_root_pinned_for_another_product_decides_the_product(milan: Hierarchy) -> None:
    """A Milan-named chain whose ARK is pinned as Genoa's is refused: the pin decides."""
    ark, ask, vcek = _parsed(milan)
    roots = {Product.GENOA: ark.public_key_sha256}

    with pytest.raises(CertificateChainError, match="must be 'SEV-Genoa'"):
        verify_chain(ark, ask, vcek, NOW, roots)


def test_vcek_with_another_products_name_is_refused() -> None:
    hierarchy = make_hierarchy(product_name="Genoa-B1", key_label="misnamed")
    ark, ask, vcek = _parsed(hierarchy)

    with pytest.raises(CertificateChainError, match="product name 'Genoa-B1'"):
        verify_chain(ark, ask, vcek, NOW, hierarchy.roots)


def test_expired_vcek_is_refused() -> None:
    hierarchy = make_hierarchy(vcek_not_after=NOW - timedelta(days=1), key_label="expired")
    ark, ask, vcek = _parsed(hierarchy)

    with pytest.raises(CertificateChainError, match="VCEK is valid from"):
        verify_chain(ark, ask, vcek, NOW, hierarchy.roots)


def test_ask_and_vcek_swapped_are_refused(milan: Hierarchy) -> None:
    ark = parse_certificate(milan.ark, "ARK")

    with pytest.raises(CertificateChainError):
        verify_chain(
            ark,
            parse_certificate(milan.vcek, "ASK"),
            parse_certificate(milan.ask, "VCEK"),
            NOW,
            milan.roots,
        )


def test_garbage_is_a_malformed_certificate() -> None:
    with pytest.raises(CertificateChainError, match="VCEK certificate is malformed"):
        parse_certificate(hashlib.sha512(b"x").digest(), "VCEK")


def test_chain_file_needs_exactly_two_certificates(milan_chain_pem: bytes) -> None:
    first_block = milan_chain_pem[: milan_chain_pem.index(b"-----END CERTIFICATE-----") + 25]

    with pytest.raises(CertificateChainError, match="found 1"):
        load_ask_ark_pem(first_block, "chain.pem")


def test_malformed_basic_constraints_of_an_issuer_is_a_chain_error(milan: Hierarchy) -> None:
    from contrast.attestation.snp.certchain import OID_BASIC_CONSTRAINTS, verify_signed_by

    ask = parse_certificate(milan.ask, "ASK")
    broken = dataclasses.replace(ask, extensions={OID_BASIC_CONSTRAINTS: b"\x30\x05\x01"})

    with pytest.raises(CertificateChainError, match="basicConstraints"):
        verify_signed_by(parse_certificate(milan.vcek, "VCEK"), broken)
