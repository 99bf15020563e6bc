"""The manifest's JSON schema: strict reading, canonical writing, errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from contrast.manifest import (
    Manifest,
    ManifestError,
    PolicyEntry,
    ReferenceValues,
    SimulatedReferenceValue,
    key_digest,
    policy_hash,
    public_key_hex,
)

POLICY = policy_hash(b"package agent_policy\ndefault CreateContainerRequest := false\n")


@pytest.fixture(scope="module")
def seedshare_owner_hex() -> str:
    return public_key_hex(rsa.generate_private_key(65537, 3072).public_key())


@pytest.fixture(scope="module")
def valid(seedshare_owner_hex: str) -> dict[str, Any]:
    simulation = public_key_hex(ed25519.Ed25519PrivateKey.generate().public_key())
    owner = key_digest(ec.generate_private_key(ec.SECP384R1()).public_key())
    return {
        "Policies": {
            POLICY: {"SANs": ["db", "*"], "WorkloadSecretID": "db", "Role": ""},
        },
        "ReferenceValues": {
            "simulated": [{"SimulationPublicKey": simulation}],
            "snp": [
                {
                    "ProductName": "Milan",
                    "TrustedMeasurement": "ab" * 48,
                    "MinimumTCB": {
                        "BootloaderVersion": 3,
                        "TEEVersion": 0,
                        "SNPVersion": 8,
                        "MicrocodeVersion": 115,
                    },
                    "GuestPolicy": {"SMT": True, "MigrateMA": False},
                }
            ],
        },
        "SeedshareOwnerPubKeys": [seedshare_owner_hex],
        "WorkloadOwnerKeyDigests": [owner],
    }


def _with(doc: dict[str, Any], path: list[str | int], value: object) -> bytes:
    copy: Any = json.loads(json.dumps(doc))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(copy).encode()


def _without(doc: dict[str, Any], path: list[str]) -> bytes:
    copy: Any = json.loads(json.dumps(doc))
    target = copy
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return json.dumps(copy).encode()


def test_policy_hash_is_lowercase_hex_sha256() -> None:
    assert policy_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_valid_manifest_round_trips_through_canonical_json(valid: dict[str, Any]) -> None:
    manifest = Manifest.from_json(json.dumps(valid).encode())
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.policies[POLICY] == PolicyEntry(("db", "*"), "db", "")


def test_canonical_json_does_not_depend_on_input_key_order(valid: dict[str, Any]) -> None:
    reordered = dict(reversed(list(valid.items())))
    a = Manifest.from_json(json.dumps(valid).encode()).to_json()
    b = Manifest.from_json(json.dumps(reordered, indent=7).encode()).to_json()
    assert a == b


def test_missing_platform_means_no_entries(valid: dict[str, Any]) -> None:
    manifest = Manifest.from_json(_without(valid, ["ReferenceValues", "snp"]))
    assert manifest.reference_values.snp == ()
    assert manifest.reference_values.platforms() == ("simulated",)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["Policies"], [], "Policies"),
        (["Policies", "ABC"], {}, "Policies.ABC"),
        (["Policies", POLICY, "SANs"], "db", f"Policies.{POLICY}.SANs"),
        (["Policies", POLICY, "SANs"], [""], f"Policies.{POLICY}.SANs[0]"),
        (["Policies", POLICY, "WorkloadSecretID"], "", f"Policies.{POLICY}.WorkloadSecretID"),
        (["Policies", POLICY, "Role"], "admin", f"Policies.{POLICY}.Role"),
        (["Policies", POLICY, "Extra"], 1, f"Policies.{POLICY}.Extra"),
        (["ReferenceValues", "tdx"], [], "ReferenceValues.tdx"),
        (
            ["ReferenceValues", "simulated", 0, "SimulationPublicKey"],
            "zz",
            "ReferenceValues.simulated[0].SimulationPublicKey",
        ),
        (
            ["ReferenceValues", "snp", 0, "TrustedMeasurement"],
            "ab" * 32,
            "ReferenceValues.snp[0].TrustedMeasurement",
        ),
        (
            ["ReferenceValues", "snp", 0, "MinimumTCB", "SNPVersion"],
            256,
            "ReferenceValues.snp[0].MinimumTCB.SNPVersion",
        ),
        (
            ["ReferenceValues", "snp", 0, "GuestPolicy", "SMT"],
            "yes",
            "ReferenceValues.snp[0].GuestPolicy.SMT",
        ),
        (
            ["ReferenceValues", "snp", 0, "ProductName"],
            "Naples",
            "ReferenceValues.snp[0].ProductName",
        ),
        (["SeedshareOwnerPubKeys", 0], "00ff", "SeedshareOwnerPubKeys[0]"),
        (["WorkloadOwnerKeyDigests", 0], "AB" * 32, "WorkloadOwnerKeyDigests[0]"),
        (["Unknown"], 1, "Unknown"),
    ],
)
def test_invalid_field_is_refused_naming_the_field(
    valid: dict[str, Any], path: list[str | int], value: object, field: str
) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(_with(valid, path, value))
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_top_level_field_is_named(valid: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="WorkloadOwnerKeyDigests: is missing"):
        Manifest.from_json(_without(valid, ["WorkloadOwnerKeyDigests"]))


def test_malformed_json_reports_line_and_column() -> None:
    with pytest.raises(ManifestError, match="line 1 column"):
        Manifest.from_json(b'{"Policies": ')


def test_seedshare_owner_key_below_3072_bits_is_refused(valid: dict[str, Any]) -> None:
    small = public_key_hex(rsa.generate_private_key(65537, 2048).public_key())
    with pytest.raises(ManifestError, match="2048 bits"):
        Manifest.from_json(_with(valid, ["SeedshareOwnerPubKeys", 0], small))


def test_seedshare_owner_key_must_be_rsa(valid: dict[str, Any]) -> None:
    ec_key = public_key_hex(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(ManifestError, match="RSA"):
        Manifest.from_json(_with(valid, ["SeedshareOwnerPubKeys", 0], ec_key))


def test_duplicate_owner_digest_is_refused(valid: dict[str, Any]) -> None:
    digest = valid["WorkloadOwnerKeyDigests"][0]
    with pytest.raises(ManifestError, match=r"WorkloadOwnerKeyDigests\[1\]"):
        Manifest.from_json(_with(valid, ["WorkloadOwnerKeyDigests"], [digest, digest]))


def test_with_owners_adds_missing_keys_once(seedshare_owner_hex: str) -> None:
    manifest = Manifest().with_owners([seedshare_owner_hex], ["aa" * 32])
    again = manifest.with_owners([seedshare_owner_hex], ["aa" * 32])
    assert again == manifest
    assert manifest.seedshare_owner_pub_keys == (seedshare_owner_hex,)


def test_manifest_without_seedshare_owner_is_not_settable() -> None:
    manifest = Manifest(
        reference_values=ReferenceValues(simulated=(SimulatedReferenceValue("00"),))
    )
    with pytest.raises(ManifestError, match="SeedshareOwnerPubKeys"):
        manifest.check_settable()


def test_manifest_without_reference_values_is_not_settable(seedshare_owner_hex: str) -> None:
    with pytest.raises(ManifestError, match="ReferenceValues"):
        Manifest(seedshare_owner_pub_keys=(seedshare_owner_hex,)).check_settable()
