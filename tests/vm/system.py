"""The whole system inside the microVM: a pod network, the Coordinator, a workspace made by
``contrast generate``, and the Initializer run as the pod's init container would run it.

Used by ``make demo`` (tests/demo.py) and by the end-to-end scenarios
(tests/vm/system_scenarios.py). Everything here runs as root inside the VM; every address
and interface it creates exists only there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.vm.guest import CONTAINER, Initializer, make_shared_mount_point

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = PROJECT / "examples" / "postgres-statefulset.yml"
EXAMPLE_WORKLOAD = ("StatefulSet", "postgres")
# The pod's network: a veth pair, the Coordinator's end in the VM's own namespace.
COORDINATOR_IP = "10.88.0.1"
POD_IP = "10.88.0.2"
PREFIX = 30
COORDINATOR_PORT = 1313
_LISTENING = re.compile(r"event=coordinator-listening address=(\S+)")


def run(*argv: str | Path, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], check=check, capture_output=True, text=True, **kwargs
    )


def contrast(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "contrast", *args, check=False, timeout=120)


# The pod's network namespace ---------------------------------------------------------------


NETNS_DIR = Path("/tmp/netns")


def netns_path(name: str) -> Path:
    """The namespace's file outside /run, which a container gets empty."""
    return NETNS_DIR / name


def create_netns(name: str) -> None:
    """A network namespace with loopback only, as a pod's is before the CNI plugin runs."""
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    NETNS_DIR.mkdir(exist_ok=True)
    netns_path(name).touch()
    run("mount", "--bind", f"/run/netns/{name}", netns_path(name))


def connect_netns(name: str, host_ip: str = COORDINATOR_IP, pod_ip: str = POD_IP) -> None:
    """What the CNI plugin does: a veth pair, one end (eth0) in the pod with its address."""
    host_end = f"vh-{name}"[:15]
    run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name)
    run("ip", "addr", "add", f"{host_ip}/{PREFIX}", "dev", host_end)
    run("ip", "link", "set", host_end, "up")
    run("ip", "-n", name, "addr", "add", f"{pod_ip}/{PREFIX}", "dev", "eth0")
    run("ip", "-n", name, "link", "set", "eth0", "up")
    run("ip", "-n", name, "route", "add", "default", "via", host_ip)


def delete_netns(name: str) -> None:
    run("umount", netns_path(name), check=False)
    run("ip", "netns", "delete", name, check=False)
    run("ip", "link", "delete", f"vh-{name}"[:15], check=False)


# The Coordinator ---------------------------------------------------------------------------


@dataclass
class Coordinator:
    state_dir: Path
    simulation_key: Path
    log_path: Path
    listen: str = f"{COORDINATOR_IP}:{COORDINATOR_PORT}"
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until it listens; seconds it took."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {
            **os.environ,
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(self.simulation_key),
        }
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [BIN / "coordinator", "--state-dir", self.state_dir, "--listen", self.listen],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if _LISTENING.search(text):
                return round(time.monotonic() - started, 3)
            if self.process.poll() is not None:
                raise RuntimeError(f"the Coordinator exited early:\n{text}")
            time.sleep(0.1)
        raise RuntimeError(f"the Coordinator did not listen within {timeout} s")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.process = None
        return status

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# The workspace: contrast generate on an example -------------------------------------------


@dataclass(frozen=True)
class GeneratedPod:
    """What generate made for the example's pod: its policy hash and Initializer env."""

    policy_hash: str
    workload_secret_id: str
    initializer_env: dict[str, str]


def generate_example(workspace: Path) -> tuple[GeneratedPod, subprocess.CompletedProcess[str]]:
    workspace.mkdir(parents=True, exist_ok=True)
    target = workspace / EXAMPLE.name
    shutil.copy(EXAMPLE, target)
    result = contrast(
        "generate", "--reference-values", "simulated", "--workspace-dir", workspace, target
    )
    if result.returncode != 0:
        raise RuntimeError(f"contrast generate failed:\n{result.stderr}")
    return generated_pod(target.read_text()), result


def generated_pod(text: str) -> GeneratedPod:
    """The example workload's pod, as the runtime would see it: host data = policy hash."""
    kind, name = EXAMPLE_WORKLOAD
    for document in yaml.safe_load_all(text):
        if not document or document.get("kind") != kind:
            continue
        if document["metadata"]["name"] != name:
            continue
        template = document["spec"]["template"]
        policy = base64.b64decode(
            template["metadata"]["annotations"]["io.katacontainers.config.agent.policy"]
        )
        initializer = template["spec"]["initContainers"][0]
        env = {item["name"]: item["value"] for item in initializer.get("env", [])}
        return GeneratedPod(
            policy_hash=hashlib.sha256(policy).hexdigest(),
            workload_secret_id=f"{kind}/default/{name}",
            initializer_env=env,
        )
    raise RuntimeError(f"{kind} {name} not found in the generated YAML")


# The Initializer as the pod's init container ----------------------------------------------


@dataclass
class PodInitializer(Initializer):
    """``initializer`` with no subcommand, in the pod's network namespace and as a container.

    Its environment is what ``contrast generate`` wrote into the pod, except
    COORDINATOR_HOST (no cluster DNS in the VM) and the paths (CONTRAST_DIR, mount point and
    done file under the pod's directory), plus the simulated TEE's host data = the pod's
    policy hash, as the runtime would pin it.
    """

    netns: str = "pod"
    environment: dict[str, str] = field(default_factory=dict)

    def start(self, name: str) -> PodInitializer:
        self.log_path = Path(f"/tmp/{name}.log")
        self.log_path.unlink(missing_ok=True)
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
            # Joins the pod's network namespace, then execs: the Initializer stays PID 1.
            "nsenter",
            f"--net={netns_path(self.netns)}",
            "--",
            "initializer",
        ]
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.environment}
        )
        log.close()
        return self

    def container_init_pid(self) -> int:
        """The container's PID 1 as seen from the VM, wherever it is below our process."""
        assert self.process is not None
        pending = [self.process.pid]
        while pending:
            pid = pending.pop(0)
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspids.split()[-1] == "1" and len(nspids.split()) > 2:
                return pid
            pending += [int(child) for child in children]
        raise RuntimeError("the Initializer container has no PID 1 (it exited)")

    def wait_for_log(self, text: str, timeout: float = 240.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            assert self.process is not None
            if self.process.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False


@dataclass
class Pod:
    """One pod's files: its contrast-secrets emptyDir, its secure-PV mount point, /done."""

    root: Path
    generated: GeneratedPod
    simulation_key: Path
    coordinator: str = f"{COORDINATOR_IP}:{COORDINATOR_PORT}"

    @property
    def contrast_dir(self) -> Path:
        return self.root / "contrast"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def done(self) -> Path:
        return self.root / "done"

    def prepare(self) -> None:
        self.contrast_dir.mkdir(parents=True, exist_ok=True)
        make_shared_mount_point(self.state)

    def initializer(
        self, device: str | None, host_data: str | None = None, netns: str = "pod"
    ) -> PodInitializer:
        env = {
            **self.generated.initializer_env,
            "COORDINATOR_HOST": self.coordinator,
            "CONTRAST_TEE": "simulated",
            "CONTRAST_SIMULATION_KEY": str(self.simulation_key),
            "CONTRAST_SIMULATED_HOST_DATA": host_data or self.generated.policy_hash,
            "CONTRAST_DIR": str(self.contrast_dir),
            "CRYPTSETUP_MOUNT_POINT": str(self.state),
            "DONE_PATH": str(self.done),
        }
        if device is None:
            env.pop("CRYPTSETUP_DEVICE", None)
        else:
            env["CRYPTSETUP_DEVICE"] = device
        return PodInitializer(
            device or "",
            self.state,
            self.contrast_dir / "secrets" / "workload-secret-seed",
            self.done,
            netns=netns,
            environment=env,
        )

    def secret_digest(self) -> str | None:
        """SHA-256 of the written workload secret, to compare runs without showing it."""
        path = self.contrast_dir / "secrets" / "workload-secret-seed"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    def files(self) -> list[str]:
        """Credential files readable at their documented paths."""
        found = []
        for top in ("tls-config", "secrets"):
            directory = self.contrast_dir / top
            if directory.is_dir():
                found += sorted(f"{top}/{p.name}" for p in directory.iterdir())
        return found


# Timings from the Initializer's log -------------------------------------------------------

PHASES = (
    ("start-up (interpreter, imports)", ("started:startup_ms",)),
    ("wait for a pod address", ("wait-network",)),
    ("attestation (aTLS, evidence, secret)", ("attested",)),
    ("write /contrast", ("write-credentials",)),
    ("wait for the device", ("wait-device",)),
    ("probe", ("probe",)),
    ("LUKS (format, header check, open)", ("luks-format", "header-check", "luks-open")),
    ("file system (mkfs, mount)", ("mkfs", "mount")),
)


def log_fields(output: str) -> list[dict[str, str]]:
    events = []
    for line in output.splitlines():
        fields = dict(part.split("=", 1) for part in re.findall(r'(\w+=(?:"[^"]*"|\S+))', line))
        if "event" in fields:
            events.append({k: v.strip('"') for k, v in fields.items()})
    return events


def phase_ms(output: str) -> dict[str, float]:
    """Milliseconds per phase of one Initializer run, from its log."""
    events = log_fields(output)
    result: dict[str, float] = {}
    for label, sources in PHASES:
        total = 0.0
        for source in sources:
            name, _, key = source.partition(":")
            for fields in events:
                if fields["event"] == name and fields.get(key or "duration_ms"):
                    total += float(fields[key or "duration_ms"])
        result[label] = round(total, 1)
    ready = [f for f in events if f["event"] == "ready" and "work_ms" in f]
    result["Initializer's own work, to /done"] = float(ready[-1]["work_ms"]) if ready else -1.0
    return result


def key_derivation_us(rounds: int = 2000) -> float:
    """Microseconds for one LUKS key derivation (HKDF from the workload secret)."""
    from contrast.derivation import derive_luks_passphrase

    secret = os.urandom(32)
    start = time.perf_counter()
    for _ in range(rounds):
        derive_luks_passphrase(secret)
    return round((time.perf_counter() - start) / rounds * 1e6, 1)
