"""Client plumbing: Coordinator addresses and the brief retry while unreachable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrast.client import CoordinatorAddress, CoordinatorVerifier
from contrast.manifest import Manifest, ManifestError
from contrast.protocol import DEFAULT_PORT
from contrast.retry import GaveUp, retry_briefly
from contrast.workspace import Workspace


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("coordinator", "coordinator", DEFAULT_PORT),
        ("10.0.0.1:7777", "10.0.0.1", 7777),
        ("[::1]:1313", "::1", 1313),
        ("[::1]", "::1", DEFAULT_PORT),
    ],
)
def test_address_parses_host_and_optional_port(text: str, host: str, port: int) -> None:
    assert CoordinatorAddress.parse(text) == CoordinatorAddress(host, port)


@pytest.mark.parametrize("text", ["", ":1313", "host:0", "host:99999", "host:http"])
def test_malformed_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        CoordinatorAddress.parse(text)


def test_retry_briefly_gives_up_after_the_attempts() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(GaveUp) as info:
        retry_briefly(refused, retryable=lambda e: isinstance(e, OSError), attempts=3)
    assert len(calls) == 3
    assert isinstance(info.value.last, ConnectionRefusedError)


def test_retry_briefly_does_not_retry_other_errors() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        retry_briefly(broken, retryable=lambda e: isinstance(e, OSError), attempts=3)
    assert len(calls) == 1


def test_retry_briefly_returns_once_it_succeeds() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionRefusedError("refused")
        return "ok"

    assert retry_briefly(flaky, retryable=lambda e: isinstance(e, OSError)) == "ok"


def test_verifier_from_reference_values_json(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    values = workspace.reference_values("simulated")
    document = Manifest(reference_values=values).to_dict()["ReferenceValues"]
    verifier = CoordinatorVerifier.from_reference_values_json(json.dumps(document).encode())
    assert [v.platform for v in verifier.validators] == ["simulated"]


def test_malformed_reference_values_json_names_the_field() -> None:
    with pytest.raises(ManifestError, match=r"ReferenceValues\.tdx"):
        CoordinatorVerifier.from_reference_values_json(b'{"tdx": []}')
