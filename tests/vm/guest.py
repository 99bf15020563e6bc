"""Helpers for code that runs inside the microVM: start the Initializer as a container
runtime would, wait for it, stop it, and look at devices, mappings and mounts.

Scenario scripts print one ``RESULT {json}`` line per step; the pytest side on the host
parses them and asserts, so each test there reads as one behaviour.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
CONTAINER = PROJECT / "tests" / "vm" / "container"
RESULT_PREFIX = "RESULT "


def report(step: str, **facts: object) -> None:
    """One result line for the host; flushed at once so a crash later loses nothing."""
    print(RESULT_PREFIX + json.dumps({"step": step, **facts}, default=str), flush=True)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as device:
        while chunk := device.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def mappings() -> list[str]:
    return sorted(name for name in os.listdir("/dev/mapper") if name != "control")


def mounted_at(target: str | Path) -> list[str]:
    """Sources mounted at ``target`` in this (the VM's root) mount namespace."""
    wanted = os.path.realpath(target)
    sources = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == wanted:
                sources.append(fields[fields.index("-") + 2])
    return sources


def make_shared_mount_point(path: Path) -> None:
    """An emptyDir the kubelet shares with Bidirectional/HostToContainer containers."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-shared", str(path)], check=True)


def write_secret(path: Path, secret_hex: str) -> Path:
    path.write_text(secret_hex + "\n")
    path.chmod(0o400)
    return path


@dataclass
class Initializer:
    """One Initializer container: ``initializer cryptsetup`` under tests/vm/container."""

    device: str
    mount_point: Path
    secret_path: Path
    done_path: Path
    extra_args: list[str] = field(default_factory=list)
    propagation: str = "unchanged"
    # The command that is the container's process; the fault-injection tests use
    # ("python", "-m", "tests.vm.faulty_initializer") with CONTRAST_FAULT_* in ``env``.
    entry: tuple[str, ...] = ("initializer",)
    env: dict[str, str] = field(default_factory=dict)
    memory_limit: str = "100M"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_at: float = 0.0

    def start(self, name: str) -> Initializer:
        self.log_path = Path(f"/tmp/{name}.log")
        log = self.log_path.open("wb")
        argv = [
            str(CONTAINER),
            "--cgroup",
            name,
            "--memory-limit",
            self.memory_limit,
            "--propagation",
            self.propagation,
            "--",
            *self.entry,
            "cryptsetup",
            "--device-path",
            self.device,
            "--mount-point",
            str(self.mount_point),
            "--workload-secret-path",
            str(self.secret_path),
            "--done-path",
            str(self.done_path),
            *self.extra_args,
        ]
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 240.0) -> float | None:
        """Seconds from start until the done file appeared, or None if the process ended."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done_path.exists():
                return round(time.monotonic() - self.started_at, 3)
            if self.process.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def wait_exit(self, timeout: float = 240.0) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def container_init_pid(self) -> int:
        """The Initializer's PID as seen from the VM: the child that unshare forked."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(children.read_text().split()[0])

    def terminate(
        self, sig: int = signal.SIGTERM, timeout: float = 30.0
    ) -> tuple[int | None, float]:
        """Send ``sig`` to the container's PID 1, as the runtime does; (exit status, seconds)."""
        os.kill(self.container_init_pid(), sig)
        start = time.monotonic()
        status = self.wait_exit(timeout)
        return status, round(time.monotonic() - start, 3)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def errors(self) -> list[str]:
        return [line for line in self.output().splitlines() if "initializer: error:" in line]


def run_to_completion(init: Initializer, name: str, timeout: float = 240.0) -> dict[str, object]:
    """Start an Initializer expected to refuse; return its exit status and error lines."""
    init.start(name)
    ready = init.wait_ready(timeout)
    if ready is not None:
        status, _ = init.terminate()
        return {"status": status, "became_ready": True, "errors": init.errors()}
    return {"status": init.wait_exit(timeout), "became_ready": False, "errors": init.errors()}


# Device-mapper tables over the VM's disks: devices that grow, shrink or fail, as a storage
# provider's do. libdevmapper creates the /dev/mapper nodes itself, as the Initializer's
# cryptsetup does.
SECTOR = 512
DM_ENV = {**os.environ, "DM_DISABLE_UDEV": "1"}


def dmsetup(*args: str) -> None:
    subprocess.run(["dmsetup", *args], check=True, env=DM_ENV, capture_output=True)


def linear_table(disk: str, size: int) -> str:
    return f"0 {size // SECTOR} linear {disk} 0"


def create(name: str, table: str) -> str:
    dmsetup("create", "--noudevsync", name, "--table", table)
    return f"/dev/mapper/{name}"


def resize(name: str, table: str) -> None:
    dmsetup("reload", "--noudevsync", name, "--table", table)
    dmsetup("resume", "--noudevsync", name)


def remove(name: str) -> None:
    dmsetup("remove", "--noudevsync", name)


def fail_if_not_root() -> None:
    if os.geteuid() != 0:
        sys.exit("scenarios must run as root inside the microVM")
