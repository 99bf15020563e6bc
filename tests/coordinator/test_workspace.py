"""The workspace: owner keys generated once with mode 0600 and never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from contrast.manifest import Manifest, key_digest, public_key_hex
from contrast.workspace import SeedShare, Workspace, WorkspaceError


def test_owner_keys_are_generated_with_mode_0600(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure_seedshare_owner_key()
    workspace.ensure_workload_owner_key()
    for path in (workspace.seedshare_owner_key_path, workspace.workload_owner_key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_key_is_loaded_not_overwritten(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    first = workspace.ensure_workload_owner_key()
    before = workspace.workload_owner_key_path.read_bytes()
    second = workspace.ensure_workload_owner_key()
    assert workspace.workload_owner_key_path.read_bytes() == before
    assert key_digest(first.public_key()) == key_digest(second.public_key())


def test_malformed_key_file_is_an_error_and_left_alone(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.seedshare_owner_key_path.write_bytes(b"not a key")
    with pytest.raises(WorkspaceError, match=r"seedshare-owner\.pem is not"):
        workspace.ensure_seedshare_owner_key()
    assert workspace.seedshare_owner_key_path.read_bytes() == b"not a key"


def test_key_of_wrong_type_is_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure_simulation_key()
    workspace.workload_owner_key_path.write_bytes(workspace.simulation_key_path.read_bytes())
    with pytest.raises(WorkspaceError, match="expected an ECDSA private key"):
        workspace.load_workload_owner_key()


def test_with_owner_keys_lists_the_workspace_keys(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    manifest = workspace.with_owner_keys(Manifest())
    seedshare = workspace.load_seedshare_owner_key()
    owner = workspace.load_workload_owner_key()
    assert manifest.seedshare_owner_pub_keys == (public_key_hex(seedshare.public_key()),)
    assert manifest.workload_owner_key_digests == (key_digest(owner.public_key()),)


def test_simulated_reference_values_name_the_workspace_simulation_key(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    values = workspace.reference_values("simulated")
    key = workspace.ensure_simulation_key()
    assert values.simulated[0].simulation_public_key == public_key_hex(key.public_key())


def test_snp_reference_values_need_a_measurement(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="--snp-measurement"):
        Workspace(tmp_path).reference_values("snp")


def test_missing_manifest_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="contrast manifest init"):
        Workspace(tmp_path).read_manifest()


def test_invalid_manifest_error_names_file_and_field(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.manifest_path.write_text('{"Policies": {}}')
    with pytest.raises(WorkspaceError, match=r"manifest.json: manifest field ReferenceValues"):
        workspace.read_manifest()


def test_seed_shares_round_trip_with_mode_0600(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    shares = [SeedShare("00aa", b"\x01\x02")]
    workspace.write_seed_shares(shares)
    assert workspace.read_seed_shares() == shares
    assert stat.S_IMODE(workspace.seed_shares_path.stat().st_mode) == 0o600
