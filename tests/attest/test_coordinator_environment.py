"""Where the Coordinator is and what it must prove: ``coordinator_from_environment``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.client import CoordinatorAddress
from contrast.manifest import (
    ReferenceValues,
    SimulatedReferenceValue,
    public_key_hex,
    reference_values_json,
)
from contrast.protocol import RemoteError
from initializer.attest import coordinator_from_environment, failure_reason
from initializer.errors import UsageError

SIMULATED = reference_values_json(
    ReferenceValues(
        simulated=(
            SimulatedReferenceValue(
                public_key_hex(ed25519.Ed25519PrivateKey.generate().public_key())
            ),
        )
    )
)


def environment(**values: str) -> dict[str, str]:
    return {"COORDINATOR_HOST": "coordinator", "COORDINATOR_REFERENCE_VALUES": SIMULATED, **values}


def test_host_without_port_uses_the_coordinators_default_port() -> None:
    target = coordinator_from_environment(environment())
    assert target.address == CoordinatorAddress("coordinator", 1313)


def test_host_with_port() -> None:
    target = coordinator_from_environment(environment(COORDINATOR_HOST="10.0.0.5:7777"))
    assert target.address == CoordinatorAddress("10.0.0.5", 7777)


def test_reference_values_give_a_validator() -> None:
    assert len(coordinator_from_environment(environment()).verifier.validators) == 1


@pytest.mark.parametrize("value", ["", "   "])
def test_missing_host_names_the_variable(value: str) -> None:
    with pytest.raises(UsageError, match="COORDINATOR_HOST is not set"):
        coordinator_from_environment(environment(COORDINATOR_HOST=value))


def test_bad_port_names_the_variable() -> None:
    with pytest.raises(UsageError, match="COORDINATOR_HOST: 'coordinator:99999' has an invalid"):
        coordinator_from_environment(environment(COORDINATOR_HOST="coordinator:99999"))


def test_missing_reference_values_says_why_they_are_needed() -> None:
    with pytest.raises(UsageError, match="must verify the Coordinator"):
        coordinator_from_environment(environment(COORDINATOR_REFERENCE_VALUES=""))


def test_reference_values_that_are_not_json_name_the_variable() -> None:
    with pytest.raises(UsageError, match=r"COORDINATOR_REFERENCE_VALUES: .*not valid JSON"):
        coordinator_from_environment(environment(COORDINATOR_REFERENCE_VALUES="{simulated"))


def test_reference_values_with_a_bad_field_name_it() -> None:
    bad = '{"simulated": [{"SimulationPublicKey": "zz"}], "snp": []}'
    with pytest.raises(UsageError, match="SimulationPublicKey"):
        coordinator_from_environment(environment(COORDINATOR_REFERENCE_VALUES=bad))


def test_reference_values_naming_no_platform_are_refused() -> None:
    with pytest.raises(UsageError, match="names no platform"):
        coordinator_from_environment(
            environment(COORDINATOR_REFERENCE_VALUES='{"simulated": [], "snp": []}')
        )


def test_a_refusal_is_logged_with_its_code() -> None:
    reason = failure_reason(RemoteError("recovery-required", "run contrast recover"))
    assert reason == "refused (recovery-required): run contrast recover"
