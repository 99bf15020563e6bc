"""The JSON form of SNP reference values: documented fields only, each checked."""

from __future__ import annotations

import json

import pytest

from contrast.attestation.snp.referencevalues import (
    ReferenceValuesError,
    reference_values_from_json,
)
from contrast.attestation.snp.report import Product, TcbVersion

MEASUREMENT = "ab" * 48
MINIMUM = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def test_minimal_document_takes_the_documented_defaults() -> None:
    values = reference_values_from_json(
        json.dumps({"trusted_measurements": [MEASUREMENT], "minimum_tcb": MINIMUM})
    )

    assert values.trusted_measurements == frozenset({bytes.fromhex(MEASUREMENT)})
    assert values.minimum_tcb == TcbVersion(3, 0, 8, 115)
    assert values.products == frozenset(Product)
    assert values.allow_smt is True
    assert values.allow_migration_agent is False
    assert values.allowed_host_data is None


def test_full_document_is_read() -> None:
    values = reference_values_from_json(
        json.dumps(
            {
                "products": ["Turin"],
                "trusted_measurements": [MEASUREMENT],
                "minimum_tcb": {**MINIMUM, "fmc": 1},
                "allow_smt": False,
                "allow_migration_agent": True,
                "host_data": ["cd" * 32],
            }
        )
    )

    assert values.products == frozenset({Product.TURIN})
    assert values.minimum_tcb.fmc == 1
    assert (values.allow_smt, values.allow_migration_agent) == (False, True)
    assert values.allowed_host_data == frozenset({b"\xcd" * 32})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"minimum_tcb": MINIMUM}, "trusted_measurements: missing"),
        ({"trusted_measurements": [MEASUREMENT]}, "minimum_tcb: missing"),
        ({"trusted_measurements": [], "minimum_tcb": MINIMUM}, "at least one measurement"),
        ({"trusted_measurements": ["ab"], "minimum_tcb": MINIMUM}, "has 1 bytes"),
        ({"trusted_measurements": ["xyz"], "minimum_tcb": MINIMUM}, "hex string"),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": {**MINIMUM, "snp": 256}},
            "minimum_tcb.snp: expected an integer 0..255",
        ),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": {**MINIMUM, "ucode": 1}},
            "unknown field",
        ),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": MINIMUM, "products": ["Rome"]},
            "products: expected a list of Milan, Genoa, Turin",
        ),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": MINIMUM, "allow_smt": "yes"},
            "allow_smt: expected true or false",
        ),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": MINIMUM, "host_data": ["00"]},
            "host_data: 00 has 1 bytes",
        ),
        (
            {"trusted_measurements": [MEASUREMENT], "minimum_tcb": MINIMUM, "allow_debug": True},
            "unknown field",
        ),
    ],
)
def test_malformed_documents_name_the_field(document: dict[str, object], message: str) -> None:
    with pytest.raises(ReferenceValuesError, match=message):
        reference_values_from_json(json.dumps(document))


def test_non_json_is_refused() -> None:
    with pytest.raises(ReferenceValuesError, match="not valid JSON"):
        reference_values_from_json("{")
