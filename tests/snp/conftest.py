from __future__ import annotations

import pytest

from tests.snp.hierarchy import TESTDATA, Hierarchy, make_hierarchy


@pytest.fixture(scope="session")
def milan() -> Hierarchy:
    return make_hierarchy()


@pytest.fixture(scope="session")
def real_report() -> bytes:
    return (TESTDATA / "attestation.bin").read_bytes()


@pytest.fixture(scope="session")
def real_vcek() -> bytes:
    return (TESTDATA / "vcek.der").read_bytes()


@pytest.fixture(scope="session")
def milan_chain_pem() -> bytes:
    return (TESTDATA / "ask_ark_milan.pem").read_bytes()


@pytest.fixture(scope="session")
def genoa_chain_pem() -> bytes:
    return (TESTDATA / "ask_ark_genoa.pem").read_bytes()
