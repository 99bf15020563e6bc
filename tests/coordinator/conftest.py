"""Fixtures that run the real ``coordinator`` and ``contrast`` console scripts on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.attestation.platforms import issuer_from_environment
from contrast.attestation.simulated import SimulatedIssuer
from contrast.client import CoordinatorAddress, CoordinatorVerifier
from contrast.manifest import Manifest, PolicyEntry, policy_hash
from contrast.workspace import Workspace
from tests.coordinator.helpers import policy_text

BIN = Path(sys.executable).parent
WORKLOADS = {"db": "db-secret", "web": "web-secret"}
_LISTENING = re.compile(r"event=coordinator-listening address=(\S+)")


def run_contrast(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "contrast"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"contrast {args} failed: {result.stderr}")
    return result


class CoordinatorProcess:
    """The real ``coordinator`` console script, simulated TEE, ephemeral port."""

    def __init__(
        self,
        state_dir: Path,
        simulation_key: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
    ) -> None:
        self.extra_env = extra_env or {}
        self.listen = listen
        self.state_dir = state_dir
        self.simulation_key = simulation_key
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(self.simulation_key),
            **self.extra_env,
        }

    def start(self) -> CoordinatorProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [BIN / "coordinator", "--state-dir", self.state_dir, "--listen", self.listen],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.environment(),
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match = _LISTENING.search(text)
            if match:
                self.address = match.group(1)
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"coordinator exited early: {text}")
            time.sleep(0.05)
        raise AssertionError("coordinator did not start listening within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> CoordinatorProcess:
        self.stop()
        return self.start()

    @property
    def coordinator_address(self) -> CoordinatorAddress:
        return CoordinatorAddress.parse(self.address)


@pytest.fixture(scope="session")
def template_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace from `contrast manifest init`, with two workloads' policies added."""
    directory = tmp_path_factory.mktemp("template") / "workspace"
    run_contrast("manifest", "init", "--workspace-dir", directory, check=True)
    workspace = Workspace(directory)
    manifest = workspace.read_manifest()
    policies = {
        policy_hash(policy_text(name)): PolicyEntry((name, "*"), secret_id)
        for name, secret_id in WORKLOADS.items()
    }
    workspace.write_manifest(
        Manifest(
            policies,
            manifest.reference_values,
            manifest.seedshare_owner_pub_keys,
            manifest.workload_owner_key_digests,
        )
    )
    return directory


@pytest.fixture
def workspace_dir(template_workspace: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "workspace"
    shutil.copytree(template_workspace, directory)
    return directory


@pytest.fixture
def workspace(workspace_dir: Path) -> Workspace:
    return Workspace(workspace_dir)


@pytest.fixture
def coordinator(workspace: Workspace, tmp_path: Path) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(
        tmp_path / "state", workspace.simulation_key_path, tmp_path / "coordinator.log"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def verifier(workspace: Workspace) -> CoordinatorVerifier:
    return CoordinatorVerifier.from_manifest(workspace.read_manifest())


def workload_issuer(workspace: Workspace, name: str) -> SimulatedIssuer:
    """The issuer a workload would use: simulated TEE pinned to the pod's policy hash."""
    issuer = issuer_from_environment(
        {
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(workspace.simulation_key_path),
            "CONTRAST_SIMULATED_HOST_DATA": policy_hash(policy_text(name)),
        }
    )
    assert isinstance(issuer, SimulatedIssuer)
    return issuer
