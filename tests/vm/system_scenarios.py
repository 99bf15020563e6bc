"""End-to-end scenarios of the whole system, run inside the microVM (one boot, many steps).

``python -m tests.vm.system_scenarios`` prints one ``RESULT {json}`` line per step;
tests/vm/test_system_vm.py asserts on them. The volume is /dev/vda.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from tests.vm.guest import fail_if_not_root, mappings, report, sha256_of
from tests.vm.system import (
    Coordinator,
    Pod,
    connect_netns,
    contrast,
    create_netns,
    generate_example,
    phase_ms,
)

DEVICE = "/dev/vda"
PLAINTEXT = b"rows of a table only the workload may read\n"
OTHER_POLICY_HASH = "ab" * 32


def network_wait(pod: Pod) -> None:
    """The pod's network comes up after the Initializer started: it waits, then dials."""
    create_netns("late")
    late = Pod(pod.root.parent / "late", pod.generated, pod.simulation_key, pod.coordinator)
    late.contrast_dir.mkdir(parents=True)
    init = late.initializer(None, netns="late").start("late-network")
    noticed = init.wait_for_log("event=waiting-for-pod-address")
    time.sleep(3)
    waiting = noticed and init.process is not None and init.process.poll() is None
    before = init.output()
    # A second pod network; the Coordinator's address is local to the VM's namespace, so
    # the default route via this veth reaches it.
    connect_netns("late", host_ip="10.88.1.1", pod_ip="10.88.1.2")
    status = init.wait_exit(240)
    report(
        "network-wait",
        waiting_without_address=waiting,
        dialled_before_address="event=dialling" in before,
        status=status,
        files=late.files(),
        output=init.output(),
    )


def unknown_policy(pod: Pod) -> None:
    before = sha256_of(DEVICE)
    init = pod.initializer(DEVICE, host_data=OTHER_POLICY_HASH).start("unknown-policy")
    refused = init.wait_for_log("unknown-policy")
    time.sleep(3)  # let it retry at least once more
    status, seconds = init.terminate()
    report(
        "unknown-policy",
        refused=refused,
        status=status,
        seconds=seconds,
        files=pod.files(),
        contrast_dir=sorted(p.name for p in pod.contrast_dir.iterdir()),
        unchanged=sha256_of(DEVICE) == before,
        done_exists=pod.done.exists(),
        mappings=mappings(),
        output=init.output(),
    )


def lifecycle(pod: Pod, coordinator: Coordinator, workspace: Path) -> None:
    address = coordinator.listen
    first = pod.initializer(DEVICE).start("first")
    ready = first.wait_ready()
    secret = pod.secret_digest()
    if ready is not None:
        (pod.state / "table.txt").write_bytes(PLAINTEXT)
        subprocess.run(["sync"], check=True)
    secret_path = pod.contrast_dir / "secrets" / "workload-secret-seed"
    secret_hex = secret_path.read_text().strip() if secret_path.exists() else None
    report(
        "first-start",
        ready_seconds=ready,
        secret_in_logs=None
        if secret_hex is None
        else secret_hex in first.output() + coordinator.log_text(),
        files=pod.files(),
        phases=phase_ms(first.output()),
        output=first.output(),
    )
    status, seconds = first.terminate() if ready is not None else (None, 0.0)
    report("first-sigterm", status=status, seconds=seconds, mappings=mappings())

    coordinator.stop()
    coordinator.start()
    state = contrast("status", "-c", address, "--workspace-dir", workspace)
    report("coordinator-restarted", status=state.returncode, stdout=state.stdout)

    second = pod.initializer(DEVICE).start("during-recovery")
    waited = second.wait_for_log("recovery-required")
    time.sleep(2)
    still_waiting = second.process is not None and second.process.poll() is None
    done_before_recovery = pod.done.exists()
    recovered = contrast("recover", "-c", address, "--workspace-dir", workspace)
    ready = second.wait_ready()
    content = (pod.state / "table.txt").read_bytes() if ready is not None else b""
    report(
        "after-recovery",
        waited_for_recovery=waited,
        still_waiting=still_waiting,
        done_before_recovery=done_before_recovery,
        recover_status=recovered.returncode,
        recover_stderr=recovered.stderr,
        ready_seconds=ready,
        same_secret=pod.secret_digest() == secret,
        file_intact=content == PLAINTEXT,
        formatted="event=luks-format" in second.output(),
        phases=phase_ms(second.output()),
        output=second.output(),
    )
    status, seconds = second.terminate() if ready is not None else (None, 0.0)
    report("second-sigterm", status=status, seconds=seconds, mappings=mappings())


def secret_id_changed(pod: Pod, coordinator: Coordinator, workspace: Path) -> None:
    """The workload owner changes the pod's secret ID: the old volume must not be wiped."""
    manifest_path = workspace / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["Policies"][pod.generated.policy_hash]["WorkloadSecretID"] = "another-secret-id"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    updated = contrast("set", "-c", coordinator.listen, "--workspace-dir", workspace)
    before = sha256_of(DEVICE)
    init = pod.initializer(DEVICE).start("secret-id-changed")
    ready = init.wait_ready()
    status = init.terminate()[0] if ready is not None else init.wait_exit(240)
    report(
        "secret-id-changed",
        set_status=updated.returncode,
        set_stderr=updated.stderr,
        became_ready=ready is not None,
        status=status,
        errors=init.errors(),
        unchanged=sha256_of(DEVICE) == before,
        mappings=mappings(),
        output=init.output(),
    )


def main() -> None:
    fail_if_not_root()
    base = Path(tempfile.mkdtemp(prefix="system-", dir="/tmp"))
    workspace = base / "workspace"
    create_netns("pod")
    connect_netns("pod")
    generated, _ = generate_example(workspace)
    coordinator = Coordinator(
        base / "coordinator-state", workspace / "simulation-key.pem", base / "coordinator.log"
    )
    coordinator.start()
    result = contrast("set", "-c", coordinator.listen, "--workspace-dir", workspace)
    report("setup", set_status=result.returncode, stderr=result.stderr)
    pod = Pod(base / "pod", generated, workspace / "simulation-key.pem", coordinator.listen)
    pod.prepare()
    try:
        unknown_policy(pod)
        network_wait(pod)
        lifecycle(pod, coordinator, workspace)
        secret_id_changed(pod, coordinator, workspace)
    finally:
        coordinator.stop()
        report("coordinator-log", text=coordinator.log_text()[-20000:])
    report("done")


if __name__ == "__main__":
    main()
