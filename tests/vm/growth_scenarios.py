"""Volume growth and failing devices, inside the microVM, in one boot.

    tests/vm/run --disk GROW --disk BLANK --disk FORMATTED -- \
        python -m tests.vm.growth_scenarios

GROW (3 GiB, sparse) backs a dm-linear device whose size the scenario changes, as a storage
provider does when a PersistentVolumeClaim is expanded: 1 GiB, 2 GiB, then cut to 1.5 GiB.
BLANK and FORMATTED (64 MiB) sit under dm tables with an ``error`` segment, so that reads of
one region fail with EIO. Each step prints a RESULT line; tests/vm/test_growth_vm.py asserts.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

from initializer import luks
from tests.vm import guest
from tests.vm.guest import (
    SECTOR,
    Initializer,
    create,
    fail_if_not_root,
    linear_table,
    make_shared_mount_point,
    mappings,
    mounted_at,
    remove,
    resize,
    run_to_completion,
    sha256_of,
    write_secret,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
POD = Path("/tmp/pod")
STATE = POD / "state"
DONE = POD / "done"
DATA_FILE = STATE / "data.bin"
# What a format writes first: the LUKS2 header and keyslots area, then the first MiB of ext4.
HEADER_REGION_BYTES = luks.LuksLayout.DATA_OFFSET_BYTES + MiB
STARTED = time.monotonic()


def report(step: str, **facts: object) -> None:
    """A RESULT line with the seconds since the scenario started (where a boot's time goes)."""
    guest.report(step, at_seconds=round(time.monotonic() - STARTED, 1), **facts)


def error_table(disk: str, disk_bytes: int, error_offset: int, error_bytes: int) -> str:
    """The whole disk, except ``error_bytes`` at ``error_offset`` that fail every I/O."""
    start, length, total = error_offset // SECTOR, error_bytes // SECTOR, disk_bytes // SECTOR
    lines = []
    if start:
        lines.append(f"0 {start} linear {disk} 0")
    lines.append(f"{start} {length} error")
    if start + length < total:
        rest = start + length
        lines.append(f"{rest} {total - rest} linear {disk} {rest}")
    return "\n".join(lines)


def statvfs_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def writes_to(device: str) -> tuple[int, int]:
    """(sectors written, discard requests) the block layer counted for ``device`` so far."""
    # By device number: /dev/mapper nodes made without udev are nodes, not dm-N symlinks.
    number = os.stat(device).st_rdev
    stat = Path(f"/sys/dev/block/{os.major(number)}:{os.minor(number)}/stat")
    fields = stat.read_text().split()
    return int(fields[6]), int(fields[11])


def sha256_of_region(device: str, offset: int, length: int) -> str:
    with open(device, "rb") as raw:
        raw.seek(offset)
        return hashlib.sha256(raw.read(length)).hexdigest()


def all_zero(device: str) -> bool:
    with open(device, "rb") as raw:
        while chunk := raw.read(4 * MiB):
            if chunk.count(0) != len(chunk):
                return False
    return True


def securepv_mappings() -> list[str]:
    return [name for name in mappings() if name.startswith("securepv-")]


def start_and_stop(init: Initializer, name: str) -> dict[str, object]:
    """Start an Initializer expected to reach /done; look at the volume; stop it."""
    init.start(name)
    ready = init.wait_ready()
    facts: dict[str, object] = {"ready_seconds": ready}
    if ready is not None:
        facts.update(
            size_bytes=statvfs_bytes(STATE),
            data_sha256=file_sha256(DATA_FILE),
            mounted=mounted_at(STATE),
        )
        status, _ = init.terminate()
        facts["stop_status"] = status
    facts.update(output=init.output(), mappings_after=securepv_mappings())
    return facts


def growth(disk: str, secret: Path) -> None:
    device = create("grow", linear_table(disk, 1 * GiB))
    first = Initializer(device, STATE, secret, DONE).start("grow-first")
    ready = first.wait_ready()
    data = os.urandom(16 * MiB)
    with DATA_FILE.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    size_before = statvfs_bytes(STATE)
    status, _ = first.terminate()
    report(
        "grow-first-start",
        ready_seconds=ready,
        size_bytes=size_before,
        data_sha256=hashlib.sha256(data).hexdigest(),
        stop_status=status,
        output=first.output(),
    )

    resize("grow", linear_table(disk, 2 * GiB))
    facts = start_and_stop(Initializer(device, STATE, secret, DONE), "grow-grown")
    report("grow-grown-start", device_bytes=2 * GiB, **facts)

    facts = start_and_stop(Initializer(device, STATE, secret, DONE), "grow-again")
    report("grow-same-size-start", **facts)

    resize("grow", linear_table(disk, 3 * GiB // 2))
    # A checksum of all 1.5 GiB costs minutes under emulation; the block layer's write
    # counters of the device and the disk under it prove that no sector was written at all,
    # and the checksum of the header region shows the part a format would rewrite.
    writes = (writes_to(device), writes_to(disk))
    header = sha256_of_region(device, 0, HEADER_REGION_BYTES)
    result = run_to_completion(Initializer(device, STATE, secret, DONE), "grow-shrunk")
    report(
        "grow-shrunk-start",
        **result,
        writes_before=writes,
        writes_after=(writes_to(device), writes_to(disk)),
        header_unchanged=sha256_of_region(device, 0, HEADER_REGION_BYTES) == header,
        mounted=mounted_at(STATE),
        done_exists=DONE.exists(),
        mappings=securepv_mappings(),
    )

    resize("grow", linear_table(disk, 2 * GiB))
    facts = start_and_stop(Initializer(device, STATE, secret, DONE), "grow-restored")
    report("grow-restored-start", **facts)
    remove("grow")


INTEGRITY = ["--integrity", "hmac-sha256"]
TEMPORARY = "temporary-cryptsetup-4242"


def integrity_growth(disk: str, secret: Path) -> None:
    """The same with integrity protection, from 512 MiB to 1 GiB, on a device that a format
    killed while it ran left cryptsetup's temporary device on."""
    device = create("igrow", linear_table(disk, 512 * MiB))
    create(TEMPORARY, linear_table(device, 512 * MiB))
    first = Initializer(device, STATE, secret, DONE, extra_args=INTEGRITY).start("igrow-first")
    ready = first.wait_ready()
    data = os.urandom(16 * MiB)
    if ready is not None:
        with DATA_FILE.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    size_before = statvfs_bytes(STATE) if ready is not None else 0
    status, _ = first.terminate() if ready is not None else (first.wait_exit(), 0.0)
    report(
        "igrow-first-start",
        ready_seconds=ready,
        size_bytes=size_before,
        data_sha256=hashlib.sha256(data).hexdigest(),
        stop_status=status,
        temporary_left=TEMPORARY in mappings(),
        output=first.output(),
    )

    resize("igrow", linear_table(disk, 1 * GiB))
    facts = start_and_stop(
        Initializer(device, STATE, secret, DONE, extra_args=INTEGRITY), "igrow-grown"
    )
    report("igrow-grown-start", **facts)
    facts = start_and_stop(
        Initializer(device, STATE, secret, DONE, extra_args=INTEGRITY), "igrow-again"
    )
    report("igrow-same-size-start", **facts)

    resize("igrow", linear_table(disk, 384 * MiB))
    writes = (writes_to(device), writes_to(disk))
    result = run_to_completion(
        Initializer(device, STATE, secret, DONE, extra_args=INTEGRITY), "igrow-shrunk"
    )
    report(
        "igrow-shrunk-start",
        **result,
        writes_before=writes,
        writes_after=(writes_to(device), writes_to(disk)),
        done_exists=DONE.exists(),
        mappings=securepv_mappings(),
    )
    resize("igrow", linear_table(disk, 1 * GiB))
    facts = start_and_stop(
        Initializer(device, STATE, secret, DONE, extra_args=INTEGRITY), "igrow-restored"
    )
    report("igrow-restored-start", **facts)
    remove("igrow")


def keyslot_area(device: str) -> tuple[int, int]:
    """(offset, size) of keyslot 0's area, from the header's JSON metadata."""
    with open(device, "rb") as raw:
        raw.seek(4096)
        text = raw.read(luks.LuksLayout.METADATA_BYTES - 4096).split(b"\0", 1)[0]
    area = json.loads(text)["keyslots"]["0"]["area"]
    return int(area["offset"]), int(area["size"])


def device_size(device: str) -> int:
    with open(device, "rb") as raw:
        return raw.seek(0, os.SEEK_END)


def blkid_status(device: str) -> int:
    return subprocess.run(["blkid", "--probe", device], capture_output=True).returncode


def failing_device(
    case: str, disk: str, disk_sha256: str, error_offset: int, secret: Path
) -> dict[str, object]:
    """Run the Initializer on ``disk`` (checksum ``disk_sha256``) with 4 KiB at
    ``error_offset`` failing with EIO."""
    name = f"eio-{case}"
    device = create(name, error_table(disk, device_size(disk), error_offset, 4096))
    writes = writes_to(disk)
    blkid = blkid_status(device)
    result = run_to_completion(Initializer(device, STATE, secret, DONE), name)
    init_output = Path(f"/tmp/{name}.log").read_text(errors="replace")
    facts = {
        **result,
        "device": device,
        "error_offset": error_offset,
        "blkid_status": blkid,
        "unchanged": sha256_of(disk) == disk_sha256,
        "writes_before": writes,
        "writes_after": writes_to(disk),
        "traceback": "Traceback" in init_output,
        "output": init_output,
        "mappings": securepv_mappings(),
        "done_exists": DONE.exists(),
    }
    remove(name)
    return facts


def io_errors(blank: str, formatted: str, secret: Path) -> None:
    size = device_size(blank)
    blank_sha256 = sha256_of(blank)
    report("blank-disk", all_zero=all_zero(blank))
    for case, offset in (
        ("blank-header", 0),
        ("blank-zero-region", 8 * MiB),
        ("blank-tail", size - 4096),
    ):
        report(case, **failing_device(case, blank, blank_sha256, offset, secret))

    facts = start_and_stop(Initializer(formatted, STATE, secret, DONE), "format")
    report("formatted", **facts)
    slot_offset, slot_size = keyslot_area(formatted)
    formatted_sha256 = sha256_of(formatted)
    for case, offset in (
        ("metadata", luks.LuksLayout.METADATA_BYTES),
        ("keyslot", slot_offset + (slot_size // 2) // 4096 * 4096),
        ("superblock", luks.LuksLayout.DATA_OFFSET_BYTES),
    ):
        report(case, **failing_device(case, formatted, formatted_sha256, offset, secret))
    facts = start_and_stop(Initializer(formatted, STATE, secret, DONE), "reopen")
    report("formatted-reopen", **facts)


def main() -> None:
    fail_if_not_root()
    # Kernel messages (I/O errors on purpose) must not interleave with RESULT lines.
    subprocess.run(["dmesg", "--console-level", "emerg"], check=False)
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret", secrets.token_hex(32))
    start = time.monotonic()
    growth("/dev/vda", secret)
    report("growth-seconds", seconds=round(time.monotonic() - start, 1))
    integrity_growth("/dev/vdd", secret)
    io_errors("/dev/vdb", "/dev/vdc", secret)
    report("done")


if __name__ == "__main__":
    main()
