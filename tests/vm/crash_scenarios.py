"""Crash-safety scenarios inside the microVM (issue 7, section 1).

    tests/vm/run --disk A -- python -m tests.vm.crash_scenarios kills
    tests/vm/run --disk APP --disk PREV --disk NEW -- \\
        python -m tests.vm.crash_scenarios power-off TRIAL DELAY EXPECTED

``kills``: for every fault point (initializer/faults.py), a first start on a blank device
is SIGKILLed there; then a fresh start must reach /done.

``power-off``: one boot of a chain. A fresh start on PREV (the device a power cut hit in the
previous boot) must reach /done; the application volume APP must hold every file the
application had fsynced before the last cut (EXPECTED: "TRIAL:COUNT,..."); then the
application writes and fsyncs files on APP while a first start runs on NEW, and DELAY
seconds after that start the VM is powered off without any clean shutdown.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from initializer import faults
from initializer.state import read_state
from tests.vm.guest import (
    Initializer,
    fail_if_not_root,
    make_shared_mount_point,
    mappings,
    report,
    write_secret,
)

POD = Path("/tmp/pod")
FAULTY = ("python", "-m", "tests.vm.faulty_initializer")
MiB = 1024 * 1024
# The external commands each fault point "during:X" kills, by process name.
COMMAND_NAMES = {
    "luks-format": {"cryptsetup"},
    "luks-open": {"cryptsetup"},
    "mkfs": {"mkfs.ext4", "mke2fs"},
}
FILE_BYTES = 64 * 1024


def wipe(device: str) -> None:
    """Zeros over the whole (small) device: a blank volume for the next trial."""
    size = int(
        subprocess.run(
            ["blockdev", "--getsize64", device], capture_output=True, check=True, text=True
        ).stdout
    )
    with open(device, "r+b") as raw:
        for _ in range(size // MiB):
            raw.write(bytes(MiB))
        raw.flush()
        os.fsync(raw.fileno())


def wait_until(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        time.sleep(0.02)


def luks_uuid(device: str) -> str:
    with open(device, "rb") as raw:
        header = raw.read(512)
    return header[0xA8 : 0xA8 + 40].rstrip(b"\0").decode(errors="replace")


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found += [int(child) for child in children]
        queue += [int(child) for child in children]
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_for(path: Path, process: Initializer, timeout: float = 240.0) -> bool:
    deadline = time.monotonic() + timeout
    assert process.process is not None
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process.process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def kill_at(
    point: str,
    device: str,
    secret: Path,
    mount_point: Path,
    done: Path,
    extra_args: list[str],
) -> None:
    """A first start on a blank device, SIGKILLed at ``point``; then a fresh start."""
    wipe(device)
    signal_file = POD / f"fault-{point.replace(':', '-')}"
    faulty = Initializer(
        device,
        mount_point,
        secret,
        done,
        extra_args=extra_args,
        propagation="private",
        entry=FAULTY,
        env={faults.FAULT_ENV: point, faults.SIGNAL_ENV: str(signal_file)},
    ).start(f"kill-{point.replace(':', '-')}")
    reached = wait_for(signal_file, faulty)
    command_running = None
    if reached and point.startswith("during:"):
        wanted = COMMAND_NAMES[point.split(":", 1)[1]]
        init_pid = faulty.container_init_pid()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(process_name(pid) in wanted for pid in descendants(init_pid)):
                break
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.1))
        command_running = any(process_name(pid) in wanted for pid in descendants(init_pid))
    killed_status, _ = faulty.terminate(signal.SIGKILL) if reached else (faulty.wait_exit(), 0.0)
    # The next container starts with its own file system: no /done from the killed one.
    done.unlink(missing_ok=True)
    uuid_before = luks_uuid(device)
    state_after_kill = read_state(device).value
    fresh = Initializer(
        device, mount_point, secret, done, extra_args=extra_args, propagation="private"
    )
    fresh.start(f"fresh-after-{point.replace(':', '-')}")
    ready = fresh.wait_ready()
    uuid_after = luks_uuid(device)
    status, _ = fresh.terminate() if ready is not None else (fresh.wait_exit(), 0.0)
    report(
        f"kill {point}",
        reached=reached,
        command_running_at_kill=command_running,
        killed_status=killed_status,
        state_after_kill=state_after_kill,
        fresh_ready=ready is not None,
        fresh_status=status,
        resumed="event=first-start-unfinished" in fresh.output(),
        formatted_again="event=luks-format" in fresh.output(),
        uuid_kept=bool(uuid_before) and uuid_before == uuid_after,
        state_after_fresh=read_state(device).value,
        mappings=mappings(),
        removed_temporary_device="temporary-cryptsetup-" in fresh.output(),
        faulty_output=faulty.output()[-3000:],
        fresh_errors=fresh.errors(),
    )


def kills(device: str, extra_args: list[str]) -> None:
    secret = write_secret(POD / "secret", secrets.token_hex(32))
    mount_point, done = POD / "state", POD / "done"
    points = [f"after:{name}" for name in faults.FIRST_START_BOUNDARIES]
    points += [f"during:{name}" for name in faults.FIRST_START_COMMANDS]
    for point in points:
        kill_at(point, device, secret, mount_point, done, extra_args)


def file_content(name: str) -> bytes:
    seed = name.encode() * (FILE_BYTES // len(name) + 1)
    return seed[:FILE_BYTES]


def check_files(directory: Path, expected: str) -> dict[str, object]:
    """Every file the application was told is on stable storage must be there, intact."""
    missing, corrupt, checked = [], [], 0
    for item in filter(None, expected.split(",")):
        trial, count = item.split(":")
        for index in range(int(count)):
            name = f"file-{trial}-{index}"
            checked += 1
            try:
                if (directory / name).read_bytes() != file_content(name):
                    corrupt.append(name)
            except FileNotFoundError:
                missing.append(name)
    return {"checked": checked, "missing": missing, "corrupt": corrupt}


def write_files(directory: Path, trial: str) -> None:
    """The application: write and fsync files one by one, saying so after each fsync."""
    dir_fd = os.open(directory, os.O_RDONLY)
    index = 0
    while True:
        name = f"file-{trial}-{index}"
        with open(directory / name, "wb") as out:
            out.write(file_content(name))
            out.flush()
            os.fsync(out.fileno())
        os.fsync(dir_fd)
        index += 1
        report("acked", trial=trial, count=index)


def start_previous_device(device: str, secret: Path) -> None:
    """A fresh start on the device the last power cut hit, in the middle of its first start."""
    previous = Initializer(
        device, POD / "prev", secret, POD / "prev-done", propagation="private"
    ).start("previous")
    ready = previous.wait_ready()
    status, _ = previous.terminate() if ready is not None else (previous.wait_exit(), 0.0)
    report(
        "previous-device",
        ready=ready is not None,
        status=status,
        resumed="event=first-start-unfinished" in previous.output(),
        errors=previous.errors(),
        state=read_state(device).value,
    )


def power_off(trial: str, anchor: str, delay: float, expected: str) -> None:
    """Power the VM off ``delay`` seconds after the first start on a blank device logged
    ``anchor`` (an event name), while an application writes and fsyncs files."""
    app_device, previous_device, new_device = "/dev/vda", "/dev/vdb", "/dev/vdc"
    secret = write_secret(POD / "secret", "ab" * 32)  # the same workload in every boot
    state = POD / "state"
    make_shared_mount_point(state)

    start_previous_device(previous_device, secret)

    app_volume = Initializer(app_device, state, secret, POD / "done").start("app-volume")
    ready = app_volume.wait_ready()
    report(
        "app-volume",
        ready=ready is not None,
        errors=app_volume.errors(),
        **(check_files(state, expected) if ready is not None else {}),
    )
    if ready is None:
        report("done")
        return
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.vm.crash_scenarios", "writer", str(state), trial]
    )
    # Python starts slowly in the VM (seconds, more under load): the cut must find the
    # application writing and the first start at work, so both are awaited first.
    wait_until(lambda: (state / f"file-{trial}-1").exists())
    new = Initializer(new_device, POD / "new", secret, POD / "new-done", propagation="private")
    new.start("new")
    wait_until(lambda: f"event={anchor} " in new.output())
    time.sleep(delay)
    report(
        "powering-off",
        anchor=anchor,
        delay=delay,
        writer_running=writer.poll() is None,
        first_start_steps=[
            line.split("event=")[1].split()[0]
            for line in new.output().splitlines()
            if "event=" in line
        ],
    )
    Path("/proc/sysrq-trigger").write_text("o")
    time.sleep(60)
    report("still-running-after-power-off")


def verify(expected: str) -> None:
    """The last boot of a chain: only the fresh starts, no new power cut."""
    secret = write_secret(POD / "secret", "ab" * 32)
    start_previous_device("/dev/vdb", secret)
    state = POD / "state"
    make_shared_mount_point(state)
    app_volume = Initializer("/dev/vda", state, secret, POD / "done").start("app-volume")
    ready = app_volume.wait_ready()
    report(
        "app-volume",
        ready=ready is not None,
        errors=app_volume.errors(),
        **(check_files(state, expected) if ready is not None else {}),
    )
    if ready is not None:
        app_volume.terminate()


def main() -> None:
    fail_if_not_root()
    POD.mkdir(parents=True, exist_ok=True)
    group, *args = sys.argv[1:]
    if group == "kills":
        kills("/dev/vda", [])
    elif group == "kills-integrity":
        kills("/dev/vda", ["--integrity", "hmac-sha256"])
    elif group == "power-off":
        trial, anchor, delay, expected = args
        power_off(trial, anchor, float(delay), expected)
    elif group == "writer":
        directory, trial = args
        write_files(Path(directory), trial)
    elif group == "verify":
        (expected,) = args
        verify(expected)
    else:
        sys.exit(f"unknown scenario group {group!r}")
    report("done")


if __name__ == "__main__":
    main()
