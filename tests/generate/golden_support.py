"""Shared by the golden tests and ``python -m tests.generate.update_golden``.

A golden case is a directory under ``golden/`` with ``input.yaml``, the ``expected.yaml``
that ``generate`` must turn it into, and ``warnings.txt`` (one warning a line). An error
case is ``errors/NAME.yaml`` with ``errors/NAME.error``, the exact message.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.manifest import (
    ReferenceValues,
    SimulatedReferenceValue,
    public_key_hex,
    reference_values_json,
)
from genpolicy.generate import Options, StreamResult, index_claims, parse_stream, transform_stream
from genpolicy.kuberesource import CoordinatorConnection

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
ERRORS = HERE / "errors"
INITIALIZER_IMAGE = "ghcr.io/contrast-securepv/initializer@sha256:" + "ab" * 32
# The golden files' workspace has this fixed simulation key, so that the reference values
# injected into every Initializer (and so every policy hash) are reproducible.
SIMULATION_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x5E] * 32))
REFERENCE_VALUES_JSON = reference_values_json(
    ReferenceValues(
        simulated=(SimulatedReferenceValue(public_key_hex(SIMULATION_KEY.public_key())),)
    )
)
OPTIONS = Options(CoordinatorConnection(REFERENCE_VALUES_JSON), INITIALIZER_IMAGE)


def write_simulation_key(workspace: Path) -> None:
    """Give a workspace the golden files' simulation key, as `generate` would create one."""
    path = workspace / "simulation-key.pem"
    path.write_bytes(
        SIMULATION_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def golden_cases() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def error_cases() -> list[Path]:
    return sorted(ERRORS.glob("*.yaml"))


def generate_text(source: str, text: str) -> StreamResult:
    stream = parse_stream(source, text)
    return transform_stream(stream, OPTIONS, index_claims([stream]))
