"""Integrity scenarios that run inside the microVM, two boots with the disks kept between them.

    tests/vm/run --disk A --disk B --disk C --disk D -- python -m tests.integrity.scenarios before
    (the host flips one byte of a file's data in A and in B)
    tests/vm/run --disk A --disk B --disk C -- python -m tests.integrity.scenarios after

Disks: A (/dev/vda) with integrity, B (/dev/vdb) without, both get a file whose middle block
the host then changes; C (/dev/vdc) with integrity loses power after the application's
fsync; D (/dev/vdd) gets a header formatted with integrity, kept as a test vector; E
(/dev/vde) is the counter-example for the ext4 journal: integrity with a lazily initialised
journal (what the Initializer does NOT do), also losing power while mounted.

Each step prints a RESULT line; tests/integrity/test_integrity_vm.py asserts.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from contrast.derivation import derive_luks_passphrase
from initializer import luks
from initializer.securepv import blocks_mkfs_reads, mkfs_options, zero_blocks
from tests.initializer import forge
from tests.vm.guest import (
    Initializer,
    fail_if_not_root,
    make_shared_mount_point,
    mappings,
    report,
    run_to_completion,
    write_secret,
)

POD = Path("/tmp/pod")
STATE = POD / "state"
DONE = POD / "done"
# A fixed secret: the second boot must open the volumes of the first. Test-only value.
SECRET_HEX = "5e" * 32
BLOCK = 4096
# Three blocks; the host changes the middle one.
CONTENT = hashlib.shake_256(b"integrity test file").digest(3 * BLOCK)
FILE_NAME = "precious.bin"
SYNCED = hashlib.shake_256(b"fsynced before power loss").digest(5 * BLOCK)
VECTOR_PASSPHRASE = b"integrity-header-test-vector-passphrase!"
HASHED_PREFIX = 32 * 1024 * 1024


def integrity_args(mode: str) -> list[str]:
    return ["--integrity", mode]


def physical_blocks(path: Path) -> list[int]:
    """The file's physical blocks in logical order, from ``filefrag -v`` (in fs blocks)."""
    output = subprocess.run(
        ["filefrag", "-v", "-b4096", str(path)], capture_output=True, text=True, check=True
    ).stdout
    blocks: list[int] = []
    # "   0:        0..       2:      34816..     34818:      3:             last,eof"
    for match in re.finditer(r"^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):", output, re.M):
        logical_start, logical_end, physical_start, _ = (int(g) for g in match.groups())
        for offset in range(logical_end - logical_start + 1):
            blocks.append(physical_start + offset)
    return blocks


def read_at(path: str | Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def prefix_hash(device: str) -> str:
    return hashlib.sha256(read_at(device, 0, HASHED_PREFIX)).hexdigest()


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def file_volume(name: str, device: str, mode: str, secret: Path) -> None:
    """First start, a file with known content, the file's middle block located, SIGTERM."""
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args(mode))
    ready = init.start(name).wait_ready()
    facts: dict[str, object] = {"ready_seconds": ready, "output": init.output()}
    if ready is not None:
        write_synced(STATE / FILE_NAME, CONTENT)
        blocks = physical_blocks(STATE / FILE_NAME)
        facts["blocks"] = blocks
        mapping = luks.mapping_path(f"securepv-{Path(device).name}")
        # What the middle block's 4 KiB look like on the disk: below dm-crypt, the ciphertext
        # (with integrity, as dm-integrity stores it; it passes data through unchanged).
        below = Path(f"{mapping}{luks.INTEGRITY_DEVICE_SUFFIX}") if mode != "none" else None
        if below is not None:
            facts["stored_block"] = read_at(below, blocks[1] * BLOCK, BLOCK).hex()
        else:
            facts["stored_block"] = read_at(
                device, luks.LuksLayout.DATA_OFFSET_BYTES + blocks[1] * BLOCK, BLOCK
            ).hex()
        facts["dm_table"] = subprocess.run(
            ["dmsetup", "table"], capture_output=True, text=True
        ).stdout
        status, seconds = init.terminate()
        facts.update(stop_status=status, stop_seconds=seconds, mappings=mappings())
    report(name, **facts)


def power_loss(device: str, secret: Path) -> None:
    """The application fsyncs, the Initializer is SIGKILLed, the VM loses power."""
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args("hmac-sha256"))
    ready = init.start("power-loss").wait_ready()
    if ready is None:
        report("power-loss", ready_seconds=None, output=init.output())
        return
    write_synced(STATE / "synced.bin", SYNCED)
    # Not synced: may be lost, must not break anything.
    (STATE / "unsynced.bin").write_bytes(os.urandom(64 * 1024))
    os.kill(init.container_init_pid(), 9)
    init.wait_exit(30)
    report("power-loss", ready_seconds=ready, killed=True, output=init.output())


def header_vector(device: str) -> None:
    forge.format_volume(device, VECTOR_PASSPHRASE, luks.HMAC_SHA256)
    dump = subprocess.run(
        ["cryptsetup", "luksDump", "--dump-json-metadata", device], capture_output=True, text=True
    )
    report("header-vector", dump=dump.stdout, cryptsetup=dump.stderr)


def workload_key() -> bytes:
    return derive_luks_passphrase(binascii.unhexlify(SECRET_HEX))


LAZY = Path("/tmp/lazy-journal")


def lazy_journal_volume(device: str) -> None:
    """Integrity, but the ext4 journal left unwritten (lazy_journal_init=1), mounted at the
    power cut: jbd2's recovery will read the never-written block after the last commit."""
    key = workload_key()
    forge.format_volume(device, key, luks.HMAC_SHA256)
    subprocess.run(["cryptsetup", "open", "--key-file=-", device, "lazy"], input=key, check=True)
    mapping = Path("/dev/mapper/lazy")
    size = int(
        subprocess.run(
            ["blockdev", "--getsize64", str(mapping)], capture_output=True, text=True, check=True
        ).stdout
    )
    options = [
        o.replace("lazy_journal_init=0", "lazy_journal_init=1")
        for o in mkfs_options(luks.HMAC_SHA256, size)
    ]
    zero_blocks(mapping, blocks_mkfs_reads("mkfs.ext4", mapping, options))
    made = subprocess.run(["mkfs.ext4", "-q", *options, str(mapping)], capture_output=True)
    LAZY.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", str(mapping), str(LAZY)], capture_output=True)
    if mounted.returncode == 0:
        write_synced(LAZY / "synced.bin", SYNCED)
    report(
        "lazy-journal-before",
        mkfs_status=made.returncode,
        mount_status=mounted.returncode,
        stderr=(made.stderr + mounted.stderr).decode(errors="replace"),
    )


def before() -> None:
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret", SECRET_HEX)
    file_volume("with-integrity", "/dev/vda", "hmac-sha256", secret)
    file_volume("without-integrity", "/dev/vdb", "none", secret)
    header_vector("/dev/vdd")
    lazy_journal_volume("/dev/vde")
    power_loss("/dev/vdc", secret)
    report("done")
    # Power off now: no unmount, no sync, no clean close of the mapping.
    with open("/proc/sysrq-trigger", "w") as trigger:
        trigger.write("o")
    time.sleep(60)


def read_blocks(path: Path) -> dict[str, object]:
    """Each block of the file read on its own, then the whole file: data or the errno."""
    results: list[object] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for index in range(3):
            try:
                data = os.pread(fd, BLOCK, index * BLOCK)
                results.append(
                    {
                        "ok": True,
                        "intact": data == CONTENT[index * BLOCK : (index + 1) * BLOCK],
                        "differing_bytes": sum(
                            a != b
                            for a, b in zip(
                                data, CONTENT[index * BLOCK : (index + 1) * BLOCK], strict=False
                            )
                        ),
                    }
                )
            except OSError as exc:
                results.append({"ok": False, "errno": exc.errno, "error": exc.strerror})
    finally:
        os.close(fd)
    try:
        whole: dict[str, object] = {"ok": True, "intact": path.read_bytes() == CONTENT}
    except OSError as exc:
        whole = {"ok": False, "errno": exc.errno}
    return {"blocks": results, "whole": whole}


def reopen_and_read(name: str, device: str, mode: str, secret: Path) -> None:
    # Fresh boot: nothing of the file is in the page cache.
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args(mode))
    ready = init.start(name).wait_ready()
    facts: dict[str, object] = {"ready_seconds": ready}
    if ready is not None:
        facts.update(read_blocks(STATE / FILE_NAME))
        facts["kernel"] = kernel_messages()
        status, _ = init.terminate()
        facts["stop_status"] = status
    facts["output"] = init.output()
    report(name, **facts)


def kernel_messages() -> list[str]:
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return [line for line in dmesg.splitlines() if "integrity" in line or "crypt" in line][-10:]


def after_power_loss(device: str, secret: Path) -> None:
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args("hmac-sha256"))
    ready = init.start("after-power-loss").wait_ready()
    facts: dict[str, object] = {"ready_seconds": ready}
    if ready is not None:
        try:
            facts["synced_intact"] = (STATE / "synced.bin").read_bytes() == SYNCED
        except OSError as exc:
            facts["synced_error"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        facts["status"], _ = init.terminate()
    facts["output"] = init.output()
    report("after-power-loss", **facts)


def wrong_setting(name: str, device: str, mode: str, secret: Path) -> None:
    before_hash = prefix_hash(device)
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args(mode))
    result = run_to_completion(init, name)
    report(name, **result, unchanged=prefix_hash(device) == before_hash, mappings=mappings())


def lazy_journal_after(device: str) -> None:
    opened = subprocess.run(
        ["cryptsetup", "open", "--key-file=-", device, "lazy"], input=workload_key()
    )
    LAZY.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "/dev/mapper/lazy", str(LAZY)], capture_output=True, text=True
    )
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    report(
        "lazy-journal-after",
        open_status=opened.returncode,
        mount_status=mounted.returncode,
        mount_error=mounted.stderr,
        kernel=[line for line in dmesg.splitlines() if "JBD2" in line or "EXT4-fs (dm" in line][
            -8:
        ],
    )
    if mounted.returncode == 0:
        subprocess.run(["umount", str(LAZY)])
    subprocess.run(["cryptsetup", "close", "lazy"])


def stale_integrity_device(device: str, secret: Path) -> None:
    """What an Initializer killed inside 'cryptsetup open' leaves: NAME_dif without NAME."""
    name = f"securepv-{Path(device).name}"
    subprocess.run(
        ["cryptsetup", "open", "--key-file=-", device, name], input=workload_key(), check=True
    )
    subprocess.run(["dmsetup", "remove", name], check=True)
    left = mappings()
    init = Initializer(device, STATE, secret, DONE, extra_args=integrity_args("hmac-sha256"))
    ready = init.start("stale-dif").wait_ready()
    facts: dict[str, object] = {"left_behind": left, "ready_seconds": ready}
    if ready is not None:
        facts["status"], _ = init.terminate()
    report("stale-integrity-device", **facts, mappings=mappings(), output=init.output())


def after() -> None:
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret", SECRET_HEX)
    reopen_and_read("flipped-with-integrity", "/dev/vda", "hmac-sha256", secret)
    reopen_and_read("flipped-without-integrity", "/dev/vdb", "none", secret)
    after_power_loss("/dev/vdc", secret)
    wrong_setting("integrity-volume-opened-without", "/dev/vda", "none", secret)
    wrong_setting("plain-volume-opened-with", "/dev/vdb", "hmac-sha256", secret)
    stale_integrity_device("/dev/vdc", secret)
    lazy_journal_after("/dev/vde")
    report("done")


def main() -> None:
    fail_if_not_root()
    (group,) = sys.argv[1:]
    if group == "before":
        before()
    elif group == "after":
        after()
    else:
        sys.exit(f"unknown scenario group {group!r}")


if __name__ == "__main__":
    main()
