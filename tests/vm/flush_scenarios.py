"""Every state a power cut can leave on the disk, replayed from a log of the real writes,
inside the microVM (issue 7, section 1: flush ordering).

    tests/vm/run --disk TARGET --disk LOG --disk REPLAY --disk COW \
        -- python -m tests.vm.flush_scenarios

The power-cut test loses the guest's memory but not what the emulated disk acknowledged.
Here the disk's side is covered: a first start and an application's fsynced writes run on a
dm-log-writes device over TARGET, which records every write on LOG in the order it became
durable, with each flush, and a mark after each of the application's fsyncs returned. Then
the log is replayed onto REPLAY, and at every flush (a state the disk is guaranteed to
hold if the power fails right then) a fresh Initializer starts on a snapshot of it (its
writes go to COW, so the replay goes on unchanged): it must reach /done, must not format a
volume whose record says "initialized", and must show every file whose fsync returned
before that flush.

Writes that completed after the last flush may or may not be on a real disk after a power
cut, in any combination; the replay covers the prefix at each flush, as xfstests' log
replay does, not every subset of the writes between two flushes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from initializer.state import read_state
from tests.vm import guest
from tests.vm.crash_scenarios import check_files, file_content
from tests.vm.guest import (
    SECTOR,
    Initializer,
    create,
    dmsetup,
    fail_if_not_root,
    make_shared_mount_point,
    mappings,
    mounted_at,
    remove,
    write_secret,
)
from tests.vm.write_log import read_entries, replay

MiB = 1024 * 1024
TARGET, LOG, REPLAY, COW = "/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"
SIZE = 96 * MiB
POD = Path("/tmp/pod")
STATE = POD / "state"
DONE = POD / "done"
FILES = 4
TRIAL = "logged"
STARTED = time.monotonic()


def report(step: str, **facts: object) -> None:
    guest.report(step, at_seconds=round(time.monotonic() - STARTED, 1), **facts)


def unmount_state() -> None:
    while any(source.startswith("/dev/mapper/") for source in mounted_at(STATE)):
        subprocess.run(["umount", str(STATE)], check=True)
    DONE.unlink(missing_ok=True)


def record(secret: Path) -> None:
    """A first start, then the application's files, each fsynced, then SIGTERM; all on a
    device whose writes are logged."""
    device = create("recorded", f"0 {SIZE // SECTOR} log-writes {TARGET} {LOG}")
    init = Initializer(device, STATE, secret, DONE).start("recorded")
    ready = init.wait_ready()
    if ready is not None:
        dmsetup("message", "recorded", "0", "mark", "done")
        dir_fd = os.open(STATE, os.O_RDONLY)
        try:
            for index in range(FILES):
                name = f"file-{TRIAL}-{index}"
                with open(STATE / name, "wb") as out:
                    out.write(file_content(name))
                    out.flush()
                    os.fsync(out.fileno())
                os.fsync(dir_fd)
                dmsetup("message", "recorded", "0", "mark", f"acked-{index + 1}")
        finally:
            os.close(dir_fd)
    status, _ = init.terminate() if ready is not None else (init.wait_exit(), 0.0)
    unmount_state()
    # Removing the target writes the entries still pending and the log's final superblock.
    remove("recorded")
    report("recorded", ready=ready is not None, status=status, errors=init.errors())


def check(index: int, flags: int, acked: int, after_done: bool, secret: Path) -> None:
    """A fresh start on a snapshot of the replayed disk as it is now."""
    snapshot = create("replayed", f"0 {SIZE // SECTOR} snapshot {REPLAY} {COW} N 8")
    state_before = read_state(snapshot).value
    fresh = Initializer(snapshot, STATE, secret, DONE).start(f"replay-{index}")
    ready = fresh.wait_ready()
    files = check_files(STATE, f"{TRIAL}:{acked},") if ready is not None else {}
    status, _ = fresh.terminate() if ready is not None else (fresh.wait_exit(), 0.0)
    unmount_state()
    output = fresh.output()
    report(
        f"flush {index}",
        flags=flags,
        acked=acked,
        after_done=after_done,
        state_before=state_before,
        ready=ready is not None,
        status=status,
        formatted="event=luks-format" in output,
        resumed="event=first-start-unfinished" in output,
        errors=fresh.errors(),
        mappings=[name for name in mappings() if name.startswith("securepv-")],
        **files,
    )
    remove("replayed")


def main() -> None:
    fail_if_not_root()
    subprocess.run(["modprobe", "dm-log-writes"], check=True)
    subprocess.run(["modprobe", "dm-snapshot"], check=True)
    POD.mkdir(parents=True, exist_ok=True)
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret", secrets.token_hex(32))
    record(secret)

    with open(LOG, "rb") as log, open(REPLAY, "r+b", buffering=0) as device:
        block, entries = read_entries(log)
        durable = [entry for entry in entries if entry.durable_point]
        report(
            "log",
            block=block,
            entries=len(entries),
            flushes=len(durable),
            marks=[entry.mark for entry in entries if entry.mark],
        )
        acked, after_done = 0, False
        for entry in replay(log, device, entries, block):
            if entry.mark == "done":
                after_done = True
            elif entry.mark and entry.mark.startswith("acked-"):
                acked = int(entry.mark.removeprefix("acked-"))
            if entry.durable_point:
                os.fsync(device.fileno())
                check(entry.index, entry.flags, acked, after_done, secret)
    report("done")


if __name__ == "__main__":
    main()
