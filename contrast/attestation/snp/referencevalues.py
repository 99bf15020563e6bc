"""What an SNP guest must look like to be trusted, and its JSON form.

JSON (the file ``contrast verify-snp-report --reference-values`` reads)::

    {
      "products": ["Milan", "Genoa"],          # optional; default: Milan, Genoa, Turin
      "trusted_measurements": ["<96 hex>"],    # required; launch measurements (48 bytes)
      "minimum_tcb": {                         # required; each component is 0..255
        "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115,
        "fmc": 0                               # optional; compared on Turin only
      },
      "allow_smt": true,                       # optional; default true
      "allow_migration_agent": false,          # optional; default false
      "host_data": ["<64 hex>"]                # optional; omitted: not checked here
    }

Debug is never allowed: a guest whose policy permits debugging lets the host read and
change its memory, so no reference value can turn that check off.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from contrast.attestation.snp.report import Product, TcbVersion

MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode")
KNOWN_KEYS = frozenset(
    {
        "products",
        "trusted_measurements",
        "minimum_tcb",
        "allow_smt",
        "allow_migration_agent",
        "host_data",
    }
)


class ReferenceValuesError(ValueError):
    """The reference values are malformed; the message names the field."""


@dataclass(frozen=True)
class SnpReferenceValues:
    trusted_measurements: frozenset[bytes]
    minimum_tcb: TcbVersion
    products: frozenset[Product] = field(default_factory=lambda: frozenset(Product))
    allow_smt: bool = True
    allow_migration_agent: bool = False
    # The host data (policy hashes) the manifest knows; None leaves that lookup to the caller.
    allowed_host_data: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.trusted_measurements:
            raise ReferenceValuesError("trusted_measurements: at least one measurement is needed")
        for measurement in self.trusted_measurements:
            if len(measurement) != MEASUREMENT_SIZE:
                raise ReferenceValuesError(
                    f"trusted_measurements: {measurement.hex()} has {len(measurement)} bytes, "
                    f"a measurement has {MEASUREMENT_SIZE}"
                )
        if not self.products:
            raise ReferenceValuesError("products: at least one product is needed")
        for host_data in self.allowed_host_data or ():
            if len(host_data) != HOST_DATA_SIZE:
                raise ReferenceValuesError(
                    f"host_data: {host_data.hex()} has {len(host_data)} bytes, "
                    f"host data has {HOST_DATA_SIZE}"
                )


def _hex_list(value: Any, key: str) -> frozenset[bytes]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ReferenceValuesError(f"{key}: expected a list of hex strings")
    try:
        return frozenset(bytes.fromhex(item) for item in value)
    except ValueError:
        raise ReferenceValuesError(f"{key}: every entry must be a hex string") from None


def _tcb(value: Any) -> TcbVersion:
    if not isinstance(value, dict):
        raise ReferenceValuesError("minimum_tcb: expected an object")
    unknown = set(value) - {*TCB_COMPONENTS, "fmc"}
    if unknown:
        raise ReferenceValuesError(f"minimum_tcb: unknown field(s) {', '.join(sorted(unknown))}")
    numbers: dict[str, int] = {}
    for name in (*TCB_COMPONENTS, "fmc"):
        if name not in value:
            if name == "fmc":
                continue
            raise ReferenceValuesError(f"minimum_tcb.{name}: missing")
        number = value[name]
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= 255:
            raise ReferenceValuesError(f"minimum_tcb.{name}: expected an integer 0..255")
        numbers[name] = number
    return TcbVersion(**numbers)


def _products(value: Any) -> frozenset[Product]:
    names = {product.value: product for product in Product}
    if not isinstance(value, list) or not all(item in names for item in value):
        raise ReferenceValuesError(f"products: expected a list of {', '.join(names)}")
    return frozenset(names[item] for item in value)


def _flag(document: dict[str, Any], key: str, default: bool) -> bool:
    value = document.get(key, default)
    if not isinstance(value, bool):
        raise ReferenceValuesError(f"{key}: expected true or false")
    return value


def reference_values_from_json(text: str | bytes) -> SnpReferenceValues:
    """Parse the JSON form above; unknown keys are errors, so typos are not ignored."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReferenceValuesError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ReferenceValuesError("expected a JSON object")
    unknown = set(document) - KNOWN_KEYS
    if unknown:
        raise ReferenceValuesError(
            f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}"
        )
    for required in ("trusted_measurements", "minimum_tcb"):
        if required not in document:
            raise ReferenceValuesError(f"{required}: missing")
    return SnpReferenceValues(
        trusted_measurements=_hex_list(document["trusted_measurements"], "trusted_measurements"),
        minimum_tcb=_tcb(document["minimum_tcb"]),
        products=_products(document["products"]) if "products" in document else frozenset(Product),
        allow_smt=_flag(document, "allow_smt", True),
        allow_migration_agent=_flag(document, "allow_migration_agent", False),
        allowed_host_data=(
            _hex_list(document["host_data"], "host_data") if "host_data" in document else None
        ),
    )


def describe_products(products: Iterable[Product]) -> str:
    return ", ".join(sorted(product.value for product in products))
