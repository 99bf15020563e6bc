"""The real Coordinator process and the real CLI on 127.0.0.1, as a user and a workload see them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.attestation.base import Evidence, report_data_for
from contrast.client import CoordinatorVerifier, exchange, open_attested
from contrast.manifest import Manifest, PolicyEntry, policy_hash, public_key_der
from contrast.meshapi.client import (
    Credentials,
    generate_workload_key,
    request_workload_credentials,
    workload_credentials_request,
)
from contrast.protocol import RemoteError, recv_frame, send_frame
from contrast.seedshare import SecretSeed, decrypt_seed_share, find_seed_share
from contrast.userapi import get_history, get_status, recover, set_manifest
from contrast.workspace import Workspace
from tests.coordinator.conftest import BIN, CoordinatorProcess, run_contrast, workload_issuer
from tests.coordinator.helpers import policy_text, snapshot


def contrast_set(coordinator: CoordinatorProcess, workspace: Workspace) -> None:
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    assert result.returncode == 0, result.stderr


def attest(coordinator: CoordinatorProcess, workspace: Workspace, name: str = "db") -> Credentials:
    return request_workload_credentials(
        coordinator.coordinator_address,
        workload_issuer(workspace, name),
        CoordinatorVerifier.from_manifest(workspace.read_manifest()),
    )


def expect_refusal(code: str, coordinator: CoordinatorProcess, workspace: Workspace) -> None:
    with pytest.raises(RemoteError) as info:
        attest(coordinator, workspace)
    assert info.value.code == code


def seed_of(workspace: Workspace) -> SecretSeed:
    key = workspace.load_seedshare_owner_key()
    return decrypt_seed_share(find_seed_share(workspace.read_seed_shares(), key), key)


# First set -------------------------------------------------------------------------------


def test_first_set_stores_seed_share_and_ca_certificates(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    assert len(workspace.read_seed_shares()) == 1
    assert (workspace.directory / "coordinator-root-ca.pem").exists()
    assert oct(workspace.seed_shares_path.stat().st_mode & 0o777) == "0o600"
    status = run_contrast(
        "status", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert (status.returncode, status.stdout.split()[0]) == (0, "ready")


def test_seed_never_appears_in_output_or_logs(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    seed = seed_of(workspace)
    visible = result.stdout + result.stderr + coordinator.log_path.read_text()
    assert seed.seed.hex() not in visible
    assert seed.salt.hex() not in visible


def test_manifest_without_owner_keys_gets_the_workspace_keys(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    bare = replace(
        workspace.read_manifest(), seedshare_owner_pub_keys=(), workload_owner_key_digests=()
    )
    workspace.write_manifest(bare)
    contrast_set(coordinator, workspace)
    completed = workspace.read_manifest()
    assert len(completed.seedshare_owner_pub_keys) == 1
    assert len(completed.workload_owner_key_digests) == 1
    seed_of(workspace)  # the share is encrypted to the workspace's key


# Workloads -----------------------------------------------------------------------------


def test_workload_gets_certificate_chain_and_secret(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    credentials = attest(coordinator, workspace)
    leaf, mesh = x509.load_pem_x509_certificates(credentials.cert_chain_pem.encode())
    root = x509.load_pem_x509_certificate(credentials.root_ca_pem.encode())
    assert public_key_der(leaf.public_key()) == public_key_der(credentials.key.public_key())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["db", "*"]
    leaf.verify_directly_issued_by(mesh)
    mesh.verify_directly_issued_by(root)
    assert credentials.workload_secret_id == "db-secret"


def test_offline_derivation_matches_the_workload_secret(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    credentials = attest(coordinator, workspace)
    result = run_contrast(
        "derive-workload-secret",
        "--workload-secret-id",
        "db-secret",
        "--workspace-dir",
        workspace.directory,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == credentials.workload_secret.hex()


def test_workload_with_unknown_policy_hash_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    with pytest.raises(RemoteError) as info:
        attest(coordinator, workspace, name="not-in-the-manifest")
    assert info.value.code == "unknown-policy"


def test_replayed_workload_evidence_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    key = generate_workload_key()
    captured: dict[str, str] = {}

    def record(nonce: bytes) -> dict[str, str]:
        captured.update(workload_credentials_request(nonce, workload_issuer(workspace, "db"), key))
        return captured

    exchange(coordinator.coordinator_address, verifier, record)
    with pytest.raises(RemoteError) as info:
        exchange(coordinator.coordinator_address, verifier, lambda _nonce: captured)
    assert info.value.code == "attestation-failed"
    assert "report-data" in info.value.message


def test_evidence_bound_to_another_key_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    attested, substituted = generate_workload_key(), generate_workload_key()

    def swap_key(nonce: bytes) -> dict[str, str]:
        request = workload_credentials_request(nonce, workload_issuer(workspace, "db"), attested)
        return {**request, "PublicKey": public_key_der(substituted.public_key()).hex()}

    with pytest.raises(RemoteError) as info:
        exchange(coordinator.coordinator_address, verifier, swap_key)
    assert info.value.code == "attestation-failed"


def test_evidence_from_unknown_platform_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    key = generate_workload_key()

    def foreign(nonce: bytes) -> dict[str, str]:
        der = public_key_der(key.public_key())
        real = workload_issuer(workspace, "db").issue(report_data_for(nonce, der))
        evidence = Evidence("tdx", real.report, real.endorsements)
        return {
            "Method": "WorkloadCredentials",
            "PublicKey": der.hex(),
            "Evidence": evidence.to_bytes().hex(),
        }

    with pytest.raises(RemoteError) as info:
        exchange(coordinator.coordinator_address, verifier, foreign)
    assert info.value.code == "attestation-failed"
    assert "platform" in info.value.message


def test_uninitialized_coordinator_serves_no_workload(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    expect_refusal("uninitialized", coordinator, workspace)


# Updates -------------------------------------------------------------------------------


def with_extra_workload(manifest: Manifest, name: str) -> Manifest:
    policies = dict(manifest.policies)
    policies[policy_hash(policy_text(name))] = PolicyEntry((name,), f"{name}-secret")
    return replace(manifest, policies=policies)


def test_update_by_workload_owner_is_accepted(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    workspace.write_manifest(with_extra_workload(workspace.read_manifest(), "cache"))
    contrast_set(coordinator, workspace)
    result = run_contrast(
        "verify", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert result.returncode == 0, result.stderr
    assert "2 in its history" in result.stdout
    assert attest(coordinator, workspace, "cache").workload_secret_id == "cache-secret"


def test_update_signed_by_another_key_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    before = snapshot(coordinator.state_dir)
    workspace.workload_owner_key_path.unlink()  # the next set generates a stranger's key
    workspace.write_manifest(with_extra_workload(workspace.read_manifest(), "cache"))
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "unauthorized" in result.stderr
    assert snapshot(coordinator.state_dir) == before


def test_seedshare_owners_cannot_change(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    other = rsa.generate_private_key(65537, 3072)
    changed = workspace.read_manifest().with_owners([public_key_der(other.public_key()).hex()], [])
    with pytest.raises(RemoteError) as info:
        set_manifest(
            coordinator.coordinator_address,
            verifier,
            changed,
            [],
            workspace.load_workload_owner_key(),
        )
    assert info.value.code == "invalid-manifest"
    assert "SeedshareOwnerPubKeys" in info.value.message


def test_concurrent_sets_keep_the_history_a_single_line(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    owner = workspace.load_workload_owner_key()
    base = workspace.read_manifest()
    errors: list[BaseException] = []

    def update(index: int) -> None:
        try:
            manifest = with_extra_workload(base, f"w{index}")
            set_manifest(coordinator.coordinator_address, verifier, manifest, [], owner)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=update, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(get_history(coordinator.coordinator_address, verifier).manifests) == 7
    coordinator.restart()
    # Recovery walks the whole chain from the signed head: it only passes if it is linear.
    assert (
        recover(
            coordinator.coordinator_address,
            verifier,
            seed_of(workspace),
            workspace.load_seedshare_owner_key(),
        )
        == 7
    )


def test_policy_texts_are_stored_and_returned_by_verify(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    policy_file = workspace.directory / "db.rego"
    policy_file.write_bytes(policy_text("db"))
    result = run_contrast(
        "set",
        "-c",
        coordinator.address,
        "--workspace-dir",
        workspace.directory,
        "--policy",
        policy_file,
    )
    assert result.returncode == 0, result.stderr
    run_contrast(
        "verify", "-c", coordinator.address, "--workspace-dir", workspace.directory, check=True
    )
    stored = workspace.directory / "verify" / "policies" / f"{policy_hash(policy_text('db'))}.rego"
    assert stored.read_bytes() == policy_text("db")


# Restart and recovery --------------------------------------------------------------------


def test_restarted_coordinator_requires_recovery_and_serves_nothing(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.restart()
    status = run_contrast(
        "status", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert status.returncode == 3
    assert "recovery-required" in status.stdout
    expect_refusal("recovery-required", coordinator, workspace)


def test_recovery_restores_the_same_secret_and_root_ca(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    before = attest(coordinator, workspace)
    coordinator.restart()
    result = run_contrast(
        "recover", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert result.returncode == 0, result.stderr
    after = attest(coordinator, workspace)
    assert after.workload_secret == before.workload_secret
    assert after.root_ca_pem == before.root_ca_pem
    assert after.mesh_ca_pem == before.mesh_ca_pem


def test_recover_with_a_wrong_seed_is_refused_and_changes_nothing(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.restart()
    before = snapshot(coordinator.state_dir)
    wrong = SecretSeed(os.urandom(32), os.urandom(32))
    with pytest.raises(RemoteError) as info:
        recover(
            coordinator.coordinator_address, verifier, wrong, workspace.load_seedshare_owner_key()
        )
    assert info.value.code == "recovery-failed"
    assert snapshot(coordinator.state_dir) == before
    assert get_status(coordinator.coordinator_address, verifier).state == "recovery-required"


def test_recover_by_a_caller_who_is_no_seed_share_owner_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.restart()
    stranger = rsa.generate_private_key(65537, 3072)
    with pytest.raises(RemoteError) as info:
        recover(coordinator.coordinator_address, verifier, seed_of(workspace), stranger)
    assert info.value.code == "unauthorized"
    assert get_status(coordinator.coordinator_address, verifier).state == "recovery-required"


def test_recover_cli_with_a_wrong_seedshare_key_is_refused(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.restart()
    workspace.seedshare_owner_key_path.unlink()
    workspace.ensure_seedshare_owner_key()
    result = run_contrast(
        "recover", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert result.returncode == 1
    assert "no seed share is encrypted to this seed share owner key" in result.stderr


@pytest.mark.parametrize("victim", ["manifests", "transitions"])
def test_recover_refuses_a_tampered_state_directory(
    coordinator: CoordinatorProcess, workspace: Workspace, victim: str
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.stop()
    target = next((coordinator.state_dir / victim).iterdir())
    target.write_bytes(target.read_bytes().replace(b"0", b"1", 1))
    coordinator.start()
    tampered = snapshot(coordinator.state_dir)
    result = run_contrast(
        "recover", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert result.returncode == 1
    assert "was modified" in result.stderr
    assert snapshot(coordinator.state_dir) == tampered
    expect_refusal("recovery-required", coordinator, workspace)


def test_recover_refuses_a_missing_history_file(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    coordinator.stop()
    next((coordinator.state_dir / "manifests").iterdir()).unlink()
    coordinator.start()
    result = run_contrast(
        "recover", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert result.returncode == 1
    assert "is missing" in result.stderr


# The CLI verifies the Coordinator before it sends anything --------------------------------


def test_set_to_a_coordinator_with_another_simulation_key_sends_nothing(
    coordinator: CoordinatorProcess, workspace: Workspace, tmp_path: Path
) -> None:
    workspace.simulation_key_path.unlink()
    values = workspace.reference_values("simulated")  # a fresh, different simulation key
    workspace.write_manifest(replace(workspace.read_manifest(), reference_values=values))
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "simulation-key" in result.stderr
    assert not (coordinator.state_dir / "latest").exists()


def test_coordinator_policy_pin_is_enforced(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    manifest = workspace.read_manifest()
    pinned = dict(manifest.policies)
    pinned["ab" * 32] = PolicyEntry(("coordinator",), "coordinator", "coordinator")
    workspace.write_manifest(replace(manifest, policies=pinned))
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "host-data" in result.stderr


# Bad input -------------------------------------------------------------------------------


def test_set_with_an_invalid_manifest_names_the_field_and_changes_nothing(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    text = workspace.manifest_path.read_text().replace('"Role": ""', '"Role": "admin"', 1)
    workspace.manifest_path.write_text(text)
    before = snapshot(workspace.directory)
    result = run_contrast("set", "-c", coordinator.address, "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert ".Role" in result.stderr and "manifest.json" in result.stderr
    assert snapshot(workspace.directory) == before
    assert not (coordinator.state_dir / "latest").exists()


def test_unknown_manifest_field_is_refused(workspace: Workspace) -> None:
    text = workspace.manifest_path.read_text().replace("{", '{"Extra": 1,', 1)
    workspace.manifest_path.write_text(text)
    result = run_contrast("set", "-c", "127.0.0.1:1", "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "manifest field Extra: is not a known field" in result.stderr


def test_unreachable_coordinator_is_reported_after_brief_retries(workspace: Workspace) -> None:
    result = run_contrast("status", "-c", "127.0.0.1:1", "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "could not reach the Coordinator at 127.0.0.1:1: tried 5 time(s)" in result.stderr


def test_malformed_address_is_refused(workspace: Workspace) -> None:
    result = run_contrast("status", "-c", "127.0.0.1:http", "--workspace-dir", workspace.directory)
    assert result.returncode == 2
    assert "invalid port" in result.stderr


def test_manifest_init_does_not_overwrite(workspace: Workspace) -> None:
    before = snapshot(workspace.directory)
    result = run_contrast("manifest", "init", "--workspace-dir", workspace.directory)
    assert result.returncode == 1
    assert "--force" in result.stderr
    assert snapshot(workspace.directory) == before


def test_coordinator_refuses_an_unusable_state_directory(
    workspace: Workspace, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    process = CoordinatorProcess(blocker / "state", workspace.simulation_key_path, tmp_path / "log")
    with pytest.raises(AssertionError, match=r"state directory .* is not usable"):
        process.start()


def test_coordinator_without_a_tee_fails_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRAST_")}
    result = subprocess.run(
        [BIN / "coordinator", "--state-dir", tmp_path / "state", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 1
    assert "CONTRAST_TEE=simulated" in result.stderr


def test_certificate_chain_uses_p384_cas(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    root = x509.load_pem_x509_certificate(attest(coordinator, workspace).root_ca_pem.encode())
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert isinstance(root.signature_hash_algorithm, hashes.SHA384)


def test_attested_connection_reports_the_coordinator_platform(
    coordinator: CoordinatorProcess, verifier: CoordinatorVerifier
) -> None:
    connection = open_attested(coordinator.coordinator_address, verifier)
    with connection.sock as sock:
        assert "Nonce" in recv_frame(sock)
        send_frame(sock, {"Method": "Status"})
        assert recv_frame(sock)["State"] == "uninitialized"
    assert connection.verified.platform == "simulated"


def test_coordinator_running_the_pinned_policy_is_accepted(
    workspace: Workspace, tmp_path: Path
) -> None:
    coordinator_policy = policy_hash(b"the Coordinator's own runtime policy")
    manifest = workspace.read_manifest()
    pinned = dict(manifest.policies)
    pinned[coordinator_policy] = PolicyEntry(("coordinator",), "coordinator", "coordinator")
    workspace.write_manifest(replace(manifest, policies=pinned))
    process = CoordinatorProcess(
        tmp_path / "state",
        workspace.simulation_key_path,
        tmp_path / "log",
        {"CONTRAST_SIMULATED_HOST_DATA": coordinator_policy},
    ).start()
    try:
        contrast_set(process, workspace)
    finally:
        process.stop()


def test_coordinator_killed_during_updates_recovers_to_a_consistent_state(
    coordinator: CoordinatorProcess, workspace: Workspace, verifier: CoordinatorVerifier
) -> None:
    contrast_set(coordinator, workspace)
    owner = workspace.load_workload_owner_key()
    base = workspace.read_manifest()
    stop = threading.Event()
    accepted: list[int] = []

    def keep_updating(worker: int) -> None:
        for index in range(1000):
            if stop.is_set():
                return
            manifest = with_extra_workload(base, f"w{worker}-{index}")
            try:
                set_manifest(coordinator.coordinator_address, verifier, manifest, [], owner)
                accepted.append(index)
            except Exception:
                return

    threads = [threading.Thread(target=keep_updating, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(accepted) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(accepted) >= 5, "the Coordinator accepted too few updates to test a crash"
    assert coordinator.process is not None
    coordinator.process.kill()  # SIGKILL in the middle of writing the history
    coordinator.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    coordinator.start()
    count = recover(
        coordinator.coordinator_address,
        verifier,
        seed_of(workspace),
        workspace.load_seedshare_owner_key(),
    )
    # Every update the Coordinator confirmed is in the history; at most the one in flight
    # at the kill is also there (written but unconfirmed).
    assert 1 + len(accepted) <= count <= 2 + len(accepted)


WORKLOAD_PROGRAM = """
import os, sys
from contrast.attestation.platforms import issuer_from_environment
from contrast.client import CoordinatorAddress, CoordinatorVerifier
from contrast.meshapi.client import request_workload_credentials

verifier = CoordinatorVerifier.from_reference_values_json(
    os.environ["COORDINATOR_REFERENCE_VALUES"].encode()
)
credentials = request_workload_credentials(
    CoordinatorAddress.parse(os.environ["COORDINATOR_HOST"]), issuer_from_environment(), verifier
)
print(credentials.workload_secret_id, credentials.workload_secret.hex())
"""


def test_workload_process_configured_by_environment_gets_its_secret(
    coordinator: CoordinatorProcess, workspace: Workspace
) -> None:
    contrast_set(coordinator, workspace)
    reference_values = workspace.read_manifest().to_dict()["ReferenceValues"]
    env = {
        **os.environ,
        "CONTRAST_TEE": "simulated",
        "CONTRAST_SIMULATION_KEY": str(workspace.simulation_key_path),
        "CONTRAST_SIMULATED_HOST_DATA": policy_hash(policy_text("web")),
        "COORDINATOR_HOST": coordinator.address,
        "COORDINATOR_REFERENCE_VALUES": json.dumps(reference_values),
    }
    result = subprocess.run(
        [str(BIN / "python"), "-c", WORKLOAD_PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    secret_id, secret = result.stdout.split()
    offline = run_contrast(
        "derive-workload-secret",
        "--workload-secret-id",
        "web-secret",
        "--workspace-dir",
        workspace.directory,
        check=True,
    )
    assert (secret_id, secret) == ("web-secret", offline.stdout.strip())


def test_address_that_is_no_coordinator_is_reported_cleanly(workspace: Workspace) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:
        for _ in range(5):
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        result = run_contrast(
            "status", "-c", f"127.0.0.1:{port}", "--workspace-dir", workspace.directory
        )
    finally:
        listener.close()
    assert result.returncode == 1
    assert "TLS with the Coordinator failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_snp_reference_values_need_a_measurement(tmp_path: Path) -> None:
    result = run_contrast(
        "manifest", "init", "--workspace-dir", tmp_path, "--reference-values", "snp"
    )
    assert result.returncode == 1
    assert "--snp-measurement" in result.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_snp_manifest_lists_the_given_measurement(tmp_path: Path) -> None:
    measurement = "ab" * 48
    run_contrast(
        "manifest",
        "init",
        "--workspace-dir",
        tmp_path,
        "--reference-values",
        "snp",
        "--snp-measurement",
        measurement,
        check=True,
    )
    manifest = Workspace(tmp_path).read_manifest()
    assert [rv.trusted_measurement for rv in manifest.reference_values.snp] == [measurement]
    assert manifest.reference_values.simulated == ()
