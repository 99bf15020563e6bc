"""Secure-PV scenarios that run inside the microVM, many steps per boot.

    tests/vm/run --disk A --disk B -- python -m tests.vm.scenarios lifecycle
    tests/vm/run --disk ... -- python -m tests.vm.scenarios refusals

Each step prints a RESULT line (see tests/vm/guest.py); tests/vm/test_securepv_vm.py asserts.
"""

from __future__ import annotations

import binascii
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from contrast.derivation import derive_luks_passphrase
from initializer import luks
from tests.initializer import forge
from tests.vm.guest import (
    CONTAINER,
    Initializer,
    fail_if_not_root,
    make_shared_mount_point,
    mappings,
    mounted_at,
    report,
    run_to_completion,
    sha256_of,
    write_secret,
)

PLAINTEXT = b"the-quick-brown-fox-secret-payload-4711"
POD = Path("/tmp/pod")
STATE = POD / "state"
DONE = POD / "done"


def start_app(name: str, propagation: str) -> subprocess.Popen[bytes]:
    """An application container that waits for /done, then looks at the shared volume."""
    script = (
        f"while [ ! -e {DONE} ]; do sleep 0.1; done; sleep 0.5; "
        f'awk \'$5 == "{STATE}" {{ for (i = 1; i <= NF; i++) if ($i == "-") print $(i + 2) }}\' '
        f"/proc/self/mountinfo; ls -A {STATE}; "
        f"if [ -d {STATE}/lost+found ]; then echo app-was-here > {STATE}/from-{name}; sync; fi"
    )
    return subprocess.Popen(
        [str(CONTAINER), "--cgroup", name, "--propagation", propagation, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def device_contains(device: str, needle: bytes) -> bool:
    overlap = len(needle)
    tail = b""
    with open(device, "rb") as raw:
        while chunk := raw.read(8 * 1024 * 1024):
            if needle in tail + chunk:
                return True
            tail = chunk[-overlap:]
    return False


def lifecycle(device: str, forged_device: str) -> None:
    # Secrets are made here, in the guest's memory, never passed in argv.
    secret_a, secret_b = secrets.token_hex(32), secrets.token_hex(32)
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret-a", secret_a)
    wrong_secret = write_secret(POD / "secret-b", secret_b)

    apps = {"hosttocontainer": start_app("app-slave", "slave")}
    apps["none"] = start_app("app-private", "private")
    first = Initializer(device, STATE, secret, DONE).start("first-start")
    ready = first.wait_ready()
    report(
        "first-start",
        ready_seconds=ready,
        mappings=mappings(),
        mounted=mounted_at(STATE),
        output=first.output(),
    )
    for propagation, app in apps.items():
        out, _ = app.communicate(timeout=120)
        report(f"app-{propagation}", output=out.decode(errors="replace"))

    (STATE / "file.txt").write_bytes(PLAINTEXT)
    subprocess.run(["sync"], check=True)
    status, seconds = first.terminate()
    report(
        "first-sigterm",
        status=status,
        seconds=seconds,
        mappings=mappings(),
        mounted=mounted_at(STATE),
        done_exists=DONE.exists(),
        output=first.output(),
    )

    second = Initializer(device, STATE, secret, DONE).start("second-start")
    ready = second.wait_ready()
    content = (STATE / "file.txt").read_bytes() if ready else b""
    report(
        "second-start",
        ready_seconds=ready,
        file_intact=content == PLAINTEXT,
        app_file=(STATE / "from-app-slave").exists(),
        output=second.output(),
    )
    status, seconds = second.terminate()
    report(
        "second-sigterm",
        status=status,
        seconds=seconds,
        mappings=mappings(),
        done_exists=DONE.exists(),
        output=second.output(),
    )
    report("raw-device", contains_plaintext=device_contains(device, PLAINTEXT))
    key_hex = derive_luks_passphrase(binascii.unhexlify(secret_a)).hex()
    logs = first.output() + second.output()
    report(
        "secrets-in-logs",
        workload_secret=secret_a in logs.lower(),
        luks_key=key_hex in logs.lower(),
        checked_bytes=len(logs),
    )

    before = sha256_of(device)
    result = run_to_completion(Initializer(device, STATE, wrong_secret, DONE), "wrong-secret")
    report("wrong-secret", **result, unchanged=sha256_of(device) == before, mappings=mappings())

    forged_header(forged_device, secret_a)


def forged_header(device: str, secret_hex: str) -> None:
    """The provider takes a volume formatted by this workload and rewrites its header: the
    keyslot (still opening with the workload's key) is kept, the data segment is switched to
    cipher_null and the checksums are redone. cryptsetup alone opens it, and whatever the
    guest then writes lands on the disk in plaintext."""
    key = derive_luks_passphrase(binascii.unhexlify(secret_hex))
    forge.format_volume(device, key)
    with open(device, "r+b") as raw:
        header = raw.read(luks.LuksLayout.DATA_OFFSET_BYTES)
        raw.seek(0)
        raw.write(
            forge.with_json(
                header, lambda m: m["segments"]["0"].update(encryption="cipher_null-ecb")
            )
        )
    # Proof that the attack is real without the check: cryptsetup opens it with our key,
    # and data written through the mapping is plaintext on the device.
    opened = subprocess.run(
        ["cryptsetup", "open", "--key-file=-", device, "attacked"], input=key, capture_output=True
    )
    plaintext_on_disk = False
    if opened.returncode == 0:
        with open("/dev/mapper/attacked", "r+b") as mapping:
            mapping.write(PLAINTEXT)
            mapping.flush()
            os.fsync(mapping.fileno())
        subprocess.run(["cryptsetup", "close", "attacked"], check=True)
        plaintext_on_disk = device_contains(device, PLAINTEXT)
    secret = write_secret(POD / "secret-forged", secret_hex)
    before = sha256_of(device)
    result = run_to_completion(Initializer(device, STATE, secret, DONE), "forged-header")
    report(
        "forged-header",
        cryptsetup_alone_opens=opened.returncode == 0,
        cryptsetup_error=opened.stderr.decode(errors="replace"),
        plaintext_on_disk=plaintext_on_disk,
        **result,
        unchanged=sha256_of(device) == before,
        mappings=mappings(),
    )


def refusals() -> None:
    """Devices that must be refused and left byte-for-byte as they were (see the host test)."""
    STATE.mkdir(parents=True, exist_ok=True)
    secret = write_secret(POD / "secret-a", secrets.token_hex(32))
    cases = {
        "ext4": "/dev/vda",
        "gpt": "/dev/vdb",
        "unknown-data": "/dev/vdc",
        "luks1": "/dev/vdd",
        "too-small": "/dev/vde",
        "read-only": "/dev/vdf",
    }
    subprocess.run(["blockdev", "--setro", cases["read-only"]], check=True)
    for name, device in cases.items():
        before = sha256_of(device)
        result = run_to_completion(Initializer(device, STATE, secret, DONE), name)
        report(name, **result, unchanged=sha256_of(device) == before, mappings=mappings())

    missing = Initializer("/dev/vdz", STATE, secret, DONE, extra_args=["--device-timeout", "2"])
    start = time.monotonic()
    result = run_to_completion(missing, "missing-device")
    report("missing-device", **result, seconds=round(time.monotonic() - start, 3))
    report(
        "not-block-device",
        **run_to_completion(Initializer("/dev/null", STATE, secret, DONE), "char"),
    )


def main() -> None:
    fail_if_not_root()
    (group,) = sys.argv[1:]
    if group == "lifecycle":
        lifecycle("/dev/vda", "/dev/vdb")
    elif group == "refusals":
        refusals()
    else:
        sys.exit(f"unknown scenario group {group!r}")
    report("done")


if __name__ == "__main__":
    main()
