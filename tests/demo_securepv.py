"""``make demo-securepv`` (the secure PV alone): a raw block device becomes an encrypted,
mounted ext4 volume, survives a restart with its data, and shows no plaintext on the raw
device.

On the host this creates a 1 GiB sparse disk image (the "persistent volume") and boots the
microVM with it (tests/vm/run), because this host kernel has no device-mapper; where the host
has a working device-mapper and a writable cgroup v2 hierarchy it uses a loop device
directly. In the VM (``--device``)
it runs the Initializer the way a container runtime would and checks every step.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "demo-work"
VOLUME_BYTES = 1024 * 1024 * 1024
PLAINTEXT = b"Attack at dawn. -- a secret only the workload may read\n"


class Demo:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, held: bool, detail: str = "") -> bool:
        self.results.append((name, held, detail))
        mark = "ok  " if held else "FAIL"
        print(f"[{mark}] {name}{': ' + detail if detail else ''}", flush=True)
        return held

    def summary(self) -> int:
        failed = [name for name, held, _ in self.results if not held]
        print("\n== Summary ==")
        for name, held, detail in self.results:
            print(f"  {'ok  ' if held else 'FAIL'} {name}{' (' + detail + ')' if detail else ''}")
        if failed:
            print(f"\nDEMO FAILED: {len(failed)} step(s) did not hold: {', '.join(failed)}")
            return 1
        print(f"\nDEMO PASSED: all {len(self.results)} steps held.")
        return 0


def work_ms(output: str) -> str:
    for line in output.splitlines():
        if "event=ready" in line:
            for field in line.split():
                if field.startswith("work_ms="):
                    return field.removeprefix("work_ms=")
    return "?"


def run_on_device(device: str) -> int:
    from initializer.securepv import default_mapping_name
    from tests.vm.guest import (
        Initializer,
        make_shared_mount_point,
        mappings,
        mounted_at,
        write_secret,
    )
    from tests.vm.scenarios import device_contains

    demo = Demo()
    base = Path("/tmp/demo")
    state = base / "state"
    done = base / "done"
    secrets_dir = base / "contrast" / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    make_shared_mount_point(state)
    # The attestation step would write this; the demo makes one up, in tmpfs, never shown.
    secret = write_secret(secrets_dir / "workload-secret-seed", secrets.token_hex(32))
    sectors = int(Path(f"/sys/class/block/{Path(device).name}/size").read_text())
    print(f"== Secure PV demo on {device} ({sectors * 512 / 2**30:.1f} GiB) ==")
    mapping = f"/dev/mapper/{default_mapping_name(device)}"

    print("\n-- first start: blank device --", flush=True)
    first = Initializer(device, state, secret, done).start("demo-first")
    ready_first = first.wait_ready()
    demo.check("first start reached /done", ready_first is not None, f"{ready_first} s")
    if ready_first is None:
        print(first.output())
        return demo.summary()
    demo.check(
        "volume is an encrypted mapping mounted at the shared mount point",
        mounted_at(state)[-1:] == [mapping],
        f"{mapping} on {state}",
    )
    status = subprocess.run(
        ["cryptsetup", "status", mapping], capture_output=True, text=True
    ).stdout
    cipher = next((line.split()[-1] for line in status.splitlines() if "cipher:" in line), "?")
    demo.check("mapping uses aes-xts-plain64", cipher == "aes-xts-plain64", cipher)
    (state / "demo.txt").write_bytes(PLAINTEXT)
    subprocess.run(["sync"], check=True)
    demo.check("wrote a file into the volume", (state / "demo.txt").exists(), "demo.txt")

    code, seconds = first.terminate()
    demo.check(
        "SIGTERM: exit 0, unmounted, mapping closed",
        code == 0 and not mappings() and mapping not in mounted_at(state),
        f"exit {code} after {seconds} s",
    )

    print("\n-- second start: the same device --", flush=True)
    second = Initializer(device, state, secret, done).start("demo-second")
    ready_second = second.wait_ready()
    demo.check("second start reached /done", ready_second is not None, f"{ready_second} s")
    content = (state / "demo.txt").read_bytes() if ready_second else b""
    demo.check("the file came back intact", content == PLAINTEXT)
    demo.check("second start did not format", "event=luks-format" not in second.output())
    code, seconds = second.terminate()
    demo.check("SIGTERM again: exit 0", code == 0, f"exit {code} after {seconds} s")

    print("\n-- the raw device, as the cloud provider sees it --", flush=True)
    demo.check(
        "raw device does not contain the file's plaintext",
        not device_contains(device, PLAINTEXT.strip()),
    )

    print("\n== Time to ready ==")
    print(
        f"  first start (format + mkfs): {ready_first} s wall, "
        f"Initializer's own work {work_ms(first.output())} ms"
    )
    print(
        f"  later start (open + mount):  {ready_second} s wall, "
        f"Initializer's own work {work_ms(second.output())} ms"
    )
    print("  (wall time includes Python start-up, slow under software emulation)")
    return demo.summary()


def host_can_run_containers_with_dm_crypt() -> bool:
    """/dev/mapper/control alone proves nothing: any cryptsetup run creates the node even
    where the kernel has no device-mapper. The kernel's own list of misc devices does."""
    try:
        has_dm = "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False
    cgroup_v2 = Path("/sys/fs/cgroup/cgroup.subtree_control")
    return has_dm and cgroup_v2.exists() and os.access(cgroup_v2, os.W_OK)


def fresh_volume() -> Path:
    """A new 1 GiB sparse disk image: the untrusted persistent volume of a demo."""
    WORK.mkdir(exist_ok=True)
    image = WORK / "volume.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as volume:
        volume.truncate(VOLUME_BYTES)
    print(f"created {image}: a 1 GiB sparse disk image, the untrusted persistent volume")
    return image


def run_in_vm(module: str, image: Path) -> int:
    """Run ``python -m module --device /dev/vda`` in the microVM with ``image`` attached."""
    start = time.monotonic()
    runner = PROJECT / "tests" / "vm" / "run"
    argv = [str(runner), "--disk", str(image), "--", "python", "-m", module]
    code = subprocess.run([*argv, "--device", "/dev/vda"]).returncode
    print(f"(microVM run took {time.monotonic() - start:.0f} s)")
    return code


def host() -> int:
    image = fresh_volume()
    if host_can_run_containers_with_dm_crypt():
        loop = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            return run_on_device(loop)
        finally:
            subprocess.run(["losetup", "--detach", loop], check=False)
    print(
        "this kernel has no device-mapper: booting a microVM (about 20 s, then the demo)",
        flush=True,
    )
    return run_in_vm("tests.demo_securepv", image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", help="run the demo on this block device (inside the VM)")
    args = parser.parse_args()
    sys.exit(run_on_device(args.device) if args.device else host())


if __name__ == "__main__":
    main()
