"""``initializer`` with no subcommand against the real Coordinator on 127.0.0.1.

Every test runs the real console scripts as subprocesses: the Coordinator (simulated TEE),
the ``contrast`` CLI, and the Initializer with CONTRAST_DIR in a temporary directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.manifest import public_key_der
from contrast.workspace import Workspace
from tests.attest.conftest import BIN, InitializerProcess, contrast_set, run_contrast
from tests.coordinator.conftest import CoordinatorProcess

CREDENTIAL_FILES = {
    "tls-config/mesh-ca.pem": 0o444,
    "tls-config/certChain.pem": 0o444,
    "tls-config/key.pem": 0o400,
    "tls-config/coordinator-root-ca.pem": 0o444,
    "secrets/workload-secret-seed": 0o400,
}


def derived_secret(workspace: Workspace, secret_id: str) -> str:
    result = run_contrast(
        "derive-workload-secret",
        "--workload-secret-id",
        secret_id,
        "--workspace-dir",
        workspace.directory,
        check=True,
    )
    return result.stdout.strip()


def visible_files(contrast_dir: Path) -> dict[str, int]:
    """What an app container sees under /contrast: path -> mode, links followed."""
    found = {}
    for top in ("tls-config", "secrets"):
        directory = contrast_dir / top
        if directory.is_dir():
            for path in directory.iterdir():
                found[f"{top}/{path.name}"] = stat.S_IMODE(path.stat().st_mode)
    return found


def everything_under(contrast_dir: Path) -> list[str]:
    if not contrast_dir.exists():
        return []
    return sorted(str(p.relative_to(contrast_dir)) for p in contrast_dir.rglob("*"))


def started(coordinator: CoordinatorProcess, workspace: Workspace) -> CoordinatorProcess:
    coordinator.start()
    contrast_set(coordinator.address, workspace)
    return coordinator


def test_writes_the_whole_credential_set_and_exits_0(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    status = initializer.start(coordinator.address).wait()
    assert status == 0, initializer.output()
    assert visible_files(contrast_dir) == CREDENTIAL_FILES


def test_workload_secret_is_the_one_derived_from_the_seed_for_the_pods_secret_id(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    assert initializer.start(coordinator.address).wait() == 0, initializer.output()
    written = (contrast_dir / "secrets" / "workload-secret-seed").read_text()
    assert written == derived_secret(workspace, "db-secret")


def test_certificate_chain_is_issued_for_the_written_key_by_the_mesh_ca(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    assert initializer.start(coordinator.address).wait() == 0, initializer.output()
    tls = contrast_dir / "tls-config"
    key = serialization.load_pem_private_key((tls / "key.pem").read_bytes(), None)
    leaf, mesh = x509.load_pem_x509_certificates((tls / "certChain.pem").read_bytes())
    mesh_ca = x509.load_pem_x509_certificate((tls / "mesh-ca.pem").read_bytes())
    root = x509.load_pem_x509_certificate((tls / "coordinator-root-ca.pem").read_bytes())
    assert public_key_der(leaf.public_key()) == public_key_der(key.public_key())
    assert mesh == mesh_ca
    leaf.verify_directly_issued_by(mesh_ca)
    mesh_ca.verify_directly_issued_by(root)
    assert (tls / "coordinator-root-ca.pem").read_bytes() == (
        workspace.directory / "coordinator-root-ca.pem"
    ).read_bytes()


def test_logs_the_pod_addresses_and_the_coordinator_it_dials(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
) -> None:
    coordinator = started(coordinator_process, workspace)
    assert initializer.start(coordinator.address).wait() == 0
    dialling = [line for line in initializer.output().splitlines() if "event=dialling" in line]
    assert len(dialling) == 1
    assert f"coordinator={coordinator.address}" in dialling[0]
    assert "pod_addresses=" in dialling[0] and "127.0.0.1" not in dialling[0].split("pod_")[1]


def test_no_secret_or_key_appears_in_the_log(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    assert initializer.start(coordinator.address).wait() == 0
    secret = (contrast_dir / "secrets" / "workload-secret-seed").read_text()
    key_pem = (contrast_dir / "tls-config" / "key.pem").read_text()
    key_body = "".join(key_pem.splitlines()[1:-1])
    output = initializer.output()
    assert secret not in output
    assert key_body[:40] not in output


def test_a_second_run_replaces_the_set_and_leaves_one_generation(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    assert initializer.start(coordinator.address).wait() == 0
    first_key = (contrast_dir / "tls-config" / "key.pem").read_bytes()
    assert initializer.start(coordinator.address).wait() == 0, initializer.output()
    assert (contrast_dir / "tls-config" / "key.pem").read_bytes() != first_key
    assert visible_files(contrast_dir) == CREDENTIAL_FILES
    generations = [p for p in contrast_dir.iterdir() if p.name.startswith(".credentials-")]
    assert len(generations) == 1


def test_unknown_policy_gets_nothing_and_writes_nothing(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    initializer.start(coordinator.address, pod="not-in-the-manifest")
    initializer.wait_for_log("unknown-policy")
    status, _ = initializer.terminate()
    assert status == 0
    assert everything_under(contrast_dir) == []
    assert "event=attested" not in initializer.output()


def test_keeps_retrying_while_the_coordinator_is_down_and_succeeds_once_it_is_up(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
    port: int,
) -> None:
    initializer.start(f"127.0.0.1:{port}")
    initializer.wait_for_log("attempt=3 ")
    assert everything_under(contrast_dir) == []
    started(coordinator_process, workspace)
    assert initializer.wait(30) == 0, initializer.output()
    assert visible_files(contrast_dir) == CREDENTIAL_FILES


def test_each_failed_attempt_is_one_log_line_saying_why(
    initializer: InitializerProcess, port: int
) -> None:
    initializer.start(f"127.0.0.1:{port}")
    initializer.wait_for_log("attempt=2 ")
    initializer.terminate()
    lines = initializer.attempts_failed()
    assert [f"attempt={n} " in line for n, line in enumerate(lines, 1)] == [True] * len(lines)
    assert all("unreachable" in line and "retry_in_s=" in line for line in lines)


def test_backoff_grows_between_attempts(initializer: InitializerProcess, port: int) -> None:
    initializer.start(f"127.0.0.1:{port}")
    initializer.wait_for_log("attempt=4 ")
    initializer.terminate()
    delays = [
        float(field.removeprefix("retry_in_s="))
        for line in initializer.attempts_failed()
        for field in line.split()
        if field.startswith("retry_in_s=")
    ]
    # 0.5, 1, 2, 4 s plus up to 0.5 s of jitter each, capped at 5 s.
    assert delays[3] > delays[0] + 2.5
    assert all(delay <= 5.0 for delay in delays)


def test_sigterm_while_retrying_exits_0_at_once_and_writes_nothing(
    initializer: InitializerProcess, contrast_dir: Path, port: int
) -> None:
    initializer.start(f"127.0.0.1:{port}")
    initializer.wait_for_log("attempt=3 ")  # now waiting about 2 s before attempt 4
    status, seconds = initializer.terminate()
    assert status == 0
    assert seconds < 1.0
    assert everything_under(contrast_dir) == []
    assert "event=stopped" in initializer.output()


def test_waits_while_the_coordinator_needs_recovery_then_succeeds_after_contrast_recover(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    coordinator.restart()
    initializer.start(coordinator.address)
    initializer.wait_for_log("recovery-required")
    assert everything_under(contrast_dir) == []
    recovered = run_contrast(
        "recover", "-c", coordinator.address, "--workspace-dir", workspace.directory
    )
    assert recovered.returncode == 0, recovered.stderr
    assert initializer.wait(30) == 0, initializer.output()
    written = (contrast_dir / "secrets" / "workload-secret-seed").read_text()
    assert written == derived_secret(workspace, "db-secret")


def test_a_coordinator_that_does_not_match_the_reference_values_gets_no_evidence(
    coordinator_process: CoordinatorProcess,
    workspace: Workspace,
    initializer: InitializerProcess,
    contrast_dir: Path,
    tmp_path: Path,
) -> None:
    coordinator = started(coordinator_process, workspace)
    impostor_workspace = Workspace(tmp_path / "impostor")
    run_contrast("manifest", "init", "--workspace-dir", impostor_workspace.directory, check=True)
    # The pod was deployed trusting another simulation key than the one this Coordinator
    # attests with: it must refuse the Coordinator before sending anything.
    other = InitializerProcess(impostor_workspace, contrast_dir, tmp_path / "other.log")
    env_key = str(workspace.simulation_key_path)
    other.start(coordinator.address, CONTRAST_SIMULATION_KEY=env_key)
    try:
        other.wait_for_log("did not verify")
        assert other.terminate()[0] == 0
    finally:
        other.kill()
    assert everything_under(contrast_dir) == []
    assert "workload-attested" not in coordinator.log_path.read_text()
    assert "event=attested" not in other.output()


def test_missing_coordinator_host_is_a_usage_error_naming_the_variable(
    initializer: InitializerProcess, contrast_dir: Path
) -> None:
    initializer.start("", COORDINATOR_HOST="")
    assert initializer.wait() == 2
    assert "initializer: error: COORDINATOR_HOST is not set" in initializer.output()
    assert not contrast_dir.exists()


def test_missing_reference_values_is_a_usage_error_naming_the_variable(
    initializer: InitializerProcess, contrast_dir: Path, port: int
) -> None:
    initializer.start(f"127.0.0.1:{port}", COORDINATOR_REFERENCE_VALUES="")
    assert initializer.wait() == 2
    assert "COORDINATOR_REFERENCE_VALUES is not set" in initializer.output()
    assert not contrast_dir.exists()


def test_cryptsetup_subcommand_still_needs_no_coordinator(tmp_path: Path) -> None:
    # The subcommand keeps its own interface; it fails here only on the missing secret file.
    result = subprocess.run(
        [
            BIN / "initializer",
            "cryptsetup",
            "-d",
            "/dev/nonexistent",
            "-m",
            str(tmp_path / "state"),
            "--workload-secret-path",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")},
    )
    assert result.returncode == 2
    assert "workload secret file" in result.stderr
