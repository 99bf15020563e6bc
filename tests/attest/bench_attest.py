"""Time from Initializer start to /done, with attestation and without, side by side.

``python -m tests.attest.bench_attest`` boots the microVM with two sparse 1 GiB images and,
in it, with the Coordinator and a pod network as in ``make demo``:

- the Initializer without a subcommand (attest, write /contrast, secure PV) on /dev/vda,
  first on the fresh volume, then twice on the existing one;
- ``initializer cryptsetup`` (the secure-PV benchmark's subject) on /dev/vdb with the same
  workload secret, fresh then twice existing.

Printed per run: the phases from the Initializer's log (attestation, LUKS, file system, ...),
its own work to /done, and its interpreter start-up. A software-emulated VM on a shared
machine makes absolute figures slow and noisy; compare the columns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
WORK = PROJECT / "bench-work"
GiB = 1024**3
EXISTING_RUNS = 2


def in_vm() -> int:
    from tests.vm.guest import Initializer, make_shared_mount_point, write_secret
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

    base = Path(tempfile.mkdtemp(prefix="bench-attest-", dir="/tmp"))
    workspace = base / "workspace"
    create_netns("pod")
    connect_netns("pod")
    generated, _ = generate_example(workspace)
    coordinator = Coordinator(
        base / "state", workspace / "simulation-key.pem", base / "coordinator.log"
    )
    coordinator.start()
    if contrast("set", "-c", coordinator.listen, "--workspace-dir", workspace).returncode:
        print("contrast set failed")
        return 1
    pod = Pod(base / "pod", generated, workspace / "simulation-key.pem", coordinator.listen)
    pod.prepare()

    columns: dict[str, dict[str, float]] = {}

    def record(name: str, output: str, wall: float | None) -> None:
        phases = phase_ms(output)
        phases["wall time, spawn to /done"] = round((wall or -1) * 1000, 1)
        columns[name] = phases

    for run in range(1 + EXISTING_RUNS):
        name = "attest+PV fresh" if run == 0 else f"attest+PV existing {run}"
        init = pod.initializer("/dev/vda").start(f"bench-attest-{run}")
        wall = init.wait_ready()
        record(name, init.output(), wall)
        init.terminate()
        if wall is None:
            print(init.output())
            return 1

    secure_pv_state = base / "securepv-state"
    make_shared_mount_point(secure_pv_state)
    secret = write_secret(
        base / "securepv-secret",
        (pod.contrast_dir / "secrets" / "workload-secret-seed").read_text().strip(),
    )
    for run in range(1 + EXISTING_RUNS):
        name = "PV alone fresh" if run == 0 else f"PV alone existing {run}"
        plain = Initializer("/dev/vdb", secure_pv_state, secret, base / "securepv-done")
        plain.start(f"bench-securepv-{run}")
        wall = plain.wait_ready()
        record(name, plain.output(), wall)
        plain.terminate()
        if wall is None:
            print(plain.output())
            return 1
    coordinator.stop()

    names = list(columns)
    labels = list(columns[names[0]])
    print("\n== Time to /done (ms): with attestation (vda) beside the secure PV alone (vdb) ==")
    print(f"  {'phase':38}" + "".join(f"{n:>22}" for n in names))
    for label in labels:
        print(f"  {label:38}" + "".join(f"{columns[n][label]:>22.1f}" for n in names))
    print(f"  key derivation (HKDF, measured apart): {key_derivation_us()} us")
    return 0


def host() -> int:
    WORK.mkdir(exist_ok=True)
    images = []
    for name in ("attest.img", "securepv.img"):
        image = WORK / name
        image.unlink(missing_ok=True)
        with image.open("wb") as disk:
            disk.truncate(GiB)
        images.append(image)
    argv = [str(PROJECT / "tests" / "vm" / "run")]
    for image in images:
        argv += ["--disk", str(image)]
    argv += ["--", "python", "-m", "tests.attest.bench_attest", "--in-vm"]
    start = time.monotonic()
    code = subprocess.run(argv).returncode
    print(f"(microVM run took {time.monotonic() - start:.0f} s)")
    for image in images:
        image.unlink(missing_ok=True)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-vm", action="store_true", help="run the benchmark (inside the VM)")
    args = parser.parse_args()
    sys.exit(in_vm() if args.in_vm else host())


if __name__ == "__main__":
    main()
