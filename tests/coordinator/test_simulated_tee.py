"""The simulated TEE: accepted only for a named key, bound report data, intact signature."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.attestation import platforms
from contrast.attestation.base import (
    AttestationError,
    Evidence,
    report_data_for,
    validate_evidence,
)
from contrast.attestation.platforms import issuer_from_environment
from contrast.attestation.simulated import (
    REPORT_BYTES,
    SIGNED_BYTES,
    SimulatedIssuer,
    SimulatedValidator,
)
from contrast.manifest import SimulatedReferenceValue, public_key_hex
from contrast.workspace import Workspace

KEY = ed25519.Ed25519PrivateKey.generate()
HOST_DATA = bytes(range(32))
NONCE = os.urandom(32)
SPKI = b"public key the channel ends in"
REPORT_DATA = report_data_for(NONCE, SPKI)


def validator(key: ed25519.Ed25519PrivateKey = KEY) -> SimulatedValidator:
    return SimulatedValidator([SimulatedReferenceValue(public_key_hex(key.public_key()))])


def evidence() -> Evidence:
    return SimulatedIssuer(KEY, HOST_DATA).issue(REPORT_DATA)


def test_valid_evidence_yields_host_data(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        verified = validator().validate(evidence(), REPORT_DATA)
    assert verified.host_data == HOST_DATA
    assert verified.policy_hash == HOST_DATA.hex()
    assert "insecure-simulated-attestation-accepted" in caplog.text


def test_evidence_survives_serialisation() -> None:
    restored = Evidence.from_bytes(evidence().to_bytes())
    assert validator().validate(restored, REPORT_DATA).host_data == HOST_DATA


def test_key_not_named_by_reference_values_is_refused() -> None:
    with pytest.raises(AttestationError) as info:
        validator(ed25519.Ed25519PrivateKey.generate()).validate(evidence(), REPORT_DATA)
    assert info.value.check == "simulation-key"


def test_evidence_for_another_nonce_is_refused() -> None:
    with pytest.raises(AttestationError) as info:
        validator().validate(evidence(), report_data_for(os.urandom(32), SPKI))
    assert info.value.check == "report-data"


def test_evidence_for_another_key_is_refused() -> None:
    with pytest.raises(AttestationError) as info:
        validator().validate(evidence(), report_data_for(NONCE, b"another key"))
    assert info.value.check == "report-data"


def test_every_bit_flip_in_the_report_is_refused() -> None:
    original = evidence()
    for bit in range(REPORT_BYTES * 8):
        report = bytearray(original.report)
        report[bit // 8] ^= 1 << (bit % 8)
        tampered = Evidence(original.platform, bytes(report), original.endorsements)
        with pytest.raises(AttestationError):
            validator().validate(tampered, REPORT_DATA)


@pytest.mark.parametrize("length", [0, SIGNED_BYTES, REPORT_BYTES - 1, REPORT_BYTES + 1])
def test_report_of_wrong_length_is_refused(length: int) -> None:
    original = evidence()
    report = (original.report * 2)[:length]
    with pytest.raises(AttestationError) as info:
        validator().validate(Evidence("simulated", report, original.endorsements), REPORT_DATA)
    assert info.value.check == "format"


def test_unknown_platform_is_refused() -> None:
    original = evidence()
    foreign = Evidence("tdx", original.report, original.endorsements)
    with pytest.raises(AttestationError) as info:
        validate_evidence(foreign, REPORT_DATA, [validator()])
    assert info.value.check == "platform"


@pytest.mark.parametrize("data", [b"", b"[]", b'{"Platform": 1}', b"\xff"])
def test_malformed_evidence_is_refused(data: bytes) -> None:
    with pytest.raises(AttestationError) as info:
        Evidence.from_bytes(data)
    assert info.value.check == "format"


def test_environment_selects_the_simulated_issuer(tmp_path: Path) -> None:
    key_path = Workspace(tmp_path).simulation_key_path
    Workspace(tmp_path).ensure_simulation_key()
    issuer = issuer_from_environment(
        {
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(key_path),
            "CONTRAST_SIMULATED_HOST_DATA": HOST_DATA.hex(),
        }
    )
    assert issuer.platform == "simulated"
    key = Workspace(tmp_path).ensure_simulation_key()
    verified = validator(key).validate(issuer.issue(REPORT_DATA), REPORT_DATA)
    assert verified.host_data == HOST_DATA


def test_simulated_issuer_needs_a_key_path() -> None:
    with pytest.raises(AttestationError, match="CONTRAST_SIMULATION_KEY"):
        issuer_from_environment({"CONTRAST_TEE": "simulated"})


def test_malformed_host_data_is_refused(tmp_path: Path) -> None:
    Workspace(tmp_path).ensure_simulation_key()
    env = {
        "CONTRAST_TEE": "simulated",
        "CONTRAST_SIMULATION_KEY": str(Workspace(tmp_path).simulation_key_path),
        "CONTRAST_SIMULATED_HOST_DATA": "abc",
    }
    with pytest.raises(AttestationError, match="CONTRAST_SIMULATED_HOST_DATA"):
        issuer_from_environment(env)


def test_unknown_tee_name_is_refused() -> None:
    with pytest.raises(AttestationError, match="not supported"):
        issuer_from_environment({"CONTRAST_TEE": "sgx"})


def test_without_tee_or_simulation_the_issuer_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platforms, "_KNOWN_TEE_DEVICES", (tmp_path / "sev-guest",))
    with pytest.raises(AttestationError, match="CONTRAST_TEE=simulated"):
        issuer_from_environment({})


def test_tee_device_without_an_issuer_in_this_build_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    monkeypatch.setattr(platforms, "_KNOWN_TEE_DEVICES", (device,))
    with pytest.raises(AttestationError, match="has no issuer for it"):
        issuer_from_environment({})


def test_registered_hardware_issuer_is_used_where_its_device_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = tmp_path / "tsm-report"
    device.mkdir()
    hardware = SimulatedIssuer(KEY, HOST_DATA)
    monkeypatch.setitem(platforms.HARDWARE_ISSUERS, "test-tee", ((device,), lambda: hardware))
    assert issuer_from_environment({}) is hardware
