"""The real ``coordinator``, ``contrast`` and ``initializer`` console scripts on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.manifest import policy_hash, reference_values_json
from contrast.workspace import Workspace
from tests.coordinator import conftest as coordinator_fixtures
from tests.coordinator.conftest import BIN, CoordinatorProcess, run_contrast
from tests.coordinator.helpers import policy_text

# The Coordinator tests' workspace fixtures: a `contrast manifest init` workspace whose
# manifest lists the pods "db" (secret ID db-secret) and "web" (web-secret).
template_workspace = coordinator_fixtures.template_workspace
workspace_dir = coordinator_fixtures.workspace_dir
workspace = coordinator_fixtures.workspace

__all__ = ["BIN", "CoordinatorProcess", "InitializerProcess", "contrast_set", "run_contrast"]


def free_port() -> int:
    """A port nothing listens on now (the Coordinator may be started on it later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def workspace_reference_values(workspace: Workspace) -> str:
    return reference_values_json(workspace.read_manifest().reference_values)


class InitializerProcess:
    """``initializer`` with no subcommand, as the pod's first init container runs it."""

    def __init__(self, workspace: Workspace, contrast_dir: Path, log_path: Path) -> None:
        self.workspace = workspace
        self.contrast_dir = contrast_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self, coordinator: str, pod: str, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CONTRAST_", "COORDINATOR_", "CRYPTSETUP_"))
        }
        return {
            **env,
            "COORDINATOR_HOST": coordinator,
            "COORDINATOR_REFERENCE_VALUES": workspace_reference_values(self.workspace),
            "CONTRAST_DIR": str(self.contrast_dir),
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(self.workspace.simulation_key_path),
            "CONTRAST_SIMULATED_HOST_DATA": policy_hash(policy_text(pod)),
            **extra,
        }

    def start(self, coordinator: str, pod: str = "db", **extra: str) -> InitializerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [BIN / "initializer"],
                stdout=log,
                stderr=log,
                env=self.environment(coordinator, pod, **extra),
            )
        return self

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"initializer exited before logging {text!r}:\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"initializer did not log {text!r} within {timeout} s:\n{self.output()}"
        )

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds until it exited)."""
        assert self.process is not None
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(30)
        return status, time.monotonic() - start

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def attempts_failed(self) -> list[str]:
        return [line for line in self.output().splitlines() if "attest-attempt-failed" in line]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def coordinator_process(
    workspace: Workspace, tmp_path: Path, port: int
) -> Iterator[CoordinatorProcess]:
    """Not started: each test decides when the Coordinator comes up."""
    process = CoordinatorProcess(
        tmp_path / "state",
        workspace.simulation_key_path,
        tmp_path / "coordinator.log",
        listen=f"127.0.0.1:{port}",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def contrast_dir(tmp_path: Path) -> Path:
    return tmp_path / "contrast"


@pytest.fixture
def initializer(
    workspace: Workspace, contrast_dir: Path, tmp_path: Path
) -> Iterator[InitializerProcess]:
    process = InitializerProcess(workspace, contrast_dir, tmp_path / "initializer.log")
    try:
        yield process
    finally:
        process.kill()


def contrast_set(address: str, workspace: Workspace) -> None:
    result = run_contrast("set", "-c", address, "--workspace-dir", workspace.directory)
    assert result.returncode == 0, result.stderr
