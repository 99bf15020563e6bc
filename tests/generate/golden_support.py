"""Shared by the golden tests and ``python -m tests.generate.update_golden``.

A golden case is a directory under ``golden/`` with ``input.yaml``, the ``expected.yaml``
that ``generate`` must turn it into, and ``warnings.txt`` (one warning a line). An error
case is ``errors/NAME.yaml`` with ``errors/NAME.error``, the exact message.
"""

from __future__ import annotations

from pathlib import Path

from genpolicy.generate import Options, StreamResult, index_claims, parse_stream, transform_stream

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
ERRORS = HERE / "errors"
INITIALIZER_IMAGE = "ghcr.io/contrast-securepv/initializer@sha256:" + "ab" * 32
OPTIONS = Options(initializer_image=INITIALIZER_IMAGE)


def golden_cases() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def error_cases() -> list[Path]:
    return sorted(ERRORS.glob("*.yaml"))


def generate_text(source: str, text: str) -> StreamResult:
    stream = parse_stream(source, text)
    return transform_stream(stream, OPTIONS, index_claims([stream]))
