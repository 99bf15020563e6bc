"""``make demo``: the whole system, as the design documents describe it.

A Coordinator hands a workload its secret over attested TLS, the Initializer turns it into
an encrypted volume, the Coordinator restarts and is recovered by the seed share owner, and
the same data comes back:

1. start the Coordinator (simulated TEE, state in a temporary directory); ``contrast
   generate`` the example ``examples/postgres-statefulset.yml`` and ``contrast set`` it;
2. run the Initializer as the pod's init container would (its own network namespace, the
   env generate wrote, the pod's policy hash as the simulated host data,
   ``CRYPTSETUP_DEVICE`` set); wait for ``/done``; write a file;
3. stop the Initializer and the Coordinator; start the Coordinator again (it needs
   recovery); ``contrast recover`` with the workspace's seed share owner key;
4. run the Initializer again: the same workload secret opens the same volume; the file is
   there;
5. print a summary and the timings, and exit 0 only if every step held.

On the host this creates a 1 GiB sparse disk image (the untrusted persistent volume) and
boots the microVM with it (tests/vm/run), because this host kernel has no device-mapper.
Inside the VM (``--device``) it runs the steps above.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.demo_securepv import Demo, fresh_volume, run_in_vm

PLAINTEXT = b"Attack at dawn. -- a secret only the workload may read\n"


def section(title: str) -> None:
    print(f"\n-- {title} --", flush=True)


def run_system(device: str) -> int:
    from tests.vm.guest import mappings
    from tests.vm.scenarios import device_contains
    from tests.vm.system import (
        Coordinator,
        Pod,
        connect_netns,
        contrast,
        create_netns,
        generate_example,
        key_derivation_us,
        phase_ms,
    )

    demo = Demo()
    base = Path(tempfile.mkdtemp(prefix="contrast-demo-", dir="/tmp"))
    workspace = base / "workspace"
    print(f"== Contrast secure PV, the whole system, on {device} ==")
    print(f"(work directory {base}; simulated TEE: development only)")

    section("1. Coordinator, contrast generate, contrast set")
    create_netns("pod")
    connect_netns("pod")
    generated, _ = generate_example(workspace)
    demo.check(
        "contrast generate injected the Initializer with the Coordinator's reference values",
        "COORDINATOR_REFERENCE_VALUES" in generated.initializer_env
        and generated.initializer_env.get("CRYPTSETUP_DEVICE") == "/dev/csi0",
        f"pod policy hash {generated.policy_hash[:16]}...",
    )
    coordinator = Coordinator(
        base / "coordinator-state", workspace / "simulation-key.pem", base / "coordinator.log"
    )
    seconds = coordinator.start()
    demo.check("Coordinator started", True, f"{coordinator.listen}, {seconds} s")
    address = coordinator.listen
    result = contrast("set", "-c", address, "--workspace-dir", workspace)
    demo.check(
        "contrast set: manifest accepted, seed share saved",
        result.returncode == 0 and (workspace / "seed-shares.json").exists(),
        result.stderr.strip().splitlines()[-1][:100] if result.returncode else "",
    )
    if result.returncode != 0:
        return demo.summary()

    pod = Pod(base / "pod", generated, workspace / "simulation-key.pem", address)
    pod.prepare()

    section("2. the Initializer as the pod's init container: attest, then the secure PV")
    first = pod.initializer(device).start("demo-initializer-first")
    ready_first = first.wait_ready()
    demo.check("Initializer reached /done", ready_first is not None, f"{ready_first} s")
    if ready_first is None:
        print(first.output())
        coordinator.stop()
        return demo.summary()
    demo.check(
        "attested over aTLS and wrote /contrast",
        "event=attested" in first.output() and len(pod.files()) == 5,
        ", ".join(pod.files()),
    )
    first_secret = pod.secret_digest()
    demo.check("blank device formatted", "event=luks-format" in first.output())
    (pod.state / "demo.txt").write_bytes(PLAINTEXT)
    subprocess.run(["sync"], check=True)
    demo.check("wrote a file into the volume", (pod.state / "demo.txt").exists(), "demo.txt")

    section("3. stop everything; the Coordinator restarts and needs recovery")
    code, seconds = first.terminate()
    demo.check(
        "SIGTERM: Initializer exit 0, volume unmounted and closed",
        code == 0 and not mappings(),
        f"exit {code} after {seconds} s",
    )
    demo.check("Coordinator stopped", coordinator.stop() == 0)
    coordinator.start()
    status = contrast("status", "-c", address, "--workspace-dir", workspace)
    demo.check(
        "restarted Coordinator reports that it needs recovery",
        status.returncode == 3 and status.stdout.split()[:1] == ["recovery-required"],
        status.stdout.strip(),
    )
    recover_started = time.monotonic()
    recovered = contrast("recover", "-c", address, "--workspace-dir", workspace)
    demo.check(
        "contrast recover with the seed share owner key",
        recovered.returncode == 0,
        f"{time.monotonic() - recover_started:.1f} s"
        + (f": {recovered.stderr}" if recovered.returncode else ""),
    )

    section("4. the Initializer again: same secret, same volume, same data")
    second = pod.initializer(device).start("demo-initializer-second")
    ready_second = second.wait_ready()
    demo.check("Initializer reached /done again", ready_second is not None, f"{ready_second} s")
    demo.check("the same workload secret came back", pod.secret_digest() == first_secret)
    content = (pod.state / "demo.txt").read_bytes() if ready_second else b""
    demo.check("the file is there, intact", content == PLAINTEXT)
    demo.check("the volume was opened, not formatted", "event=luks-format" not in second.output())
    code, seconds = second.terminate() if second.process else (None, 0.0)
    demo.check("SIGTERM again: exit 0", code == 0, f"exit {code} after {seconds} s")
    coordinator.stop()
    demo.check(
        "raw device does not contain the file's plaintext",
        not device_contains(device, PLAINTEXT.strip()),
    )

    print("\n== Time from Initializer start to /done (ms, from its log) ==")
    fresh, existing = phase_ms(first.output()), phase_ms(second.output())
    print(f"  {'phase':42} {'fresh volume':>13} {'existing':>10}")
    for label in fresh:
        print(f"  {label:42} {fresh[label]:>13.1f} {existing[label]:>10.1f}")
    print(f"  {'wall time, spawn to /done (s)':42} {ready_first:>13} {ready_second:>10}")
    print(f"  key derivation (HKDF, measured apart): {key_derivation_us()} us")
    print("  (software-emulated VM on a shared machine: interpreter start-up and cryptsetup are")
    print("   many times slower than on hardware; compare phases, not absolute wall time)")
    return demo.summary()


def host() -> int:
    image = fresh_volume()
    print("booting a microVM (about 20 s, then the demo)", flush=True)
    return run_in_vm("tests.demo", image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", help="run the demo on this block device (inside the VM)")
    args = parser.parse_args()
    sys.exit(run_system(args.device) if args.device else host())


if __name__ == "__main__":
    main()
