"""An Initializer killed at any moment of a later start or a shutdown, on a volume holding
application data, inside the microVM (issue 7, section 1).

    tests/vm/run --disk DISK -- python -m tests.vm.data_kill_scenarios

DISK (sparse, 2 GiB) backs a dm-linear device, the volume, which starts at 256 MiB. A first
start makes the volume, and the application writes and fsyncs files on it. Then, for every
fault point a later start or a shutdown passes (initializer/faults.py), an Initializer is
SIGKILLed there, the rest of the pod goes the way a node tears it down (the application
killed too, its view of the volume unmounted), and a fresh start must reach /done with
every file the application had fsynced, intact, on the same LUKS volume; the application
then writes more files. Before each growth point the device grows by 512 MiB, as a
PersistentVolumeClaim expansion does, and the fresh start must leave ext4 at the new size.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from initializer import faults, growth
from initializer.state import read_state
from tests.vm.crash_scenarios import (
    FAULTY,
    check_files,
    descendants,
    file_content,
    luks_uuid,
    process_name,
    wait_for,
    wait_until,
)
from tests.vm.guest import (
    RESULT_PREFIX,
    Initializer,
    create,
    fail_if_not_root,
    linear_table,
    make_shared_mount_point,
    mappings,
    mounted_at,
    report,
    resize,
    write_secret,
)

MiB = 1024 * 1024
POD = Path("/tmp/pod")
STATE = POD / "state"
DONE = POD / "done"
VOLUME_NAME = "volume"
VOLUME = f"/dev/mapper/{VOLUME_NAME}"
MAPPING = Path("/dev/mapper/securepv-volume")
FIRST_SIZE = 256 * MiB
# Large enough that resize2fs runs for a while under emulation, so "during" lands in it.
GROWTH_STEP = 512 * MiB
FILES_PER_BATCH = 3
# In the order a later start passes them ("after:done" is the running pod, killed while
# the application writes), then the growth of a grown device, then SIGTERM's teardown.
LATER_START = ["after:probe", "during:luks-open", "after:luks-open", "after:mount", "after:done"]
GROWTH = ["during:grow-file-system", "after:grow-file-system"]
TEARDOWN = ["after:done-removed", "after:unmount"]
POINTS = LATER_START + GROWTH + TEARDOWN
COMMAND_NAMES = {"luks-open": {"cryptsetup"}, "grow-file-system": {"resize2fs"}}


def label(point: str) -> str:
    return point.replace(":", "-")


def write_batch(trial: str, count: int = FILES_PER_BATCH) -> int:
    """The application: write and fsync ``count`` files (and their directory entries);
    returns how many it may now count on."""
    dir_fd = os.open(STATE, os.O_RDONLY)
    try:
        for index in range(count):
            name = f"file-{trial}-{index}"
            with open(STATE / name, "wb") as out:
                out.write(file_content(name))
                out.flush()
                os.fsync(out.fileno())
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return count


def acked_by(writer_output: bytes) -> int:
    """How many files the writer said were fsynced; a line cut by the kill is dropped."""
    counts = [0]
    for line in writer_output.decode(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                facts = json.loads(line[len(RESULT_PREFIX) :])
            except json.JSONDecodeError:
                continue
            if facts.get("step") == "acked":
                counts.append(int(facts["count"]))
    return max(counts)


def tear_down_pod() -> None:
    """What is left of a pod whose containers died: the application's view of the volume
    (the mount that propagated out of the killed Initializer) is unmounted, as the node
    does with the pod's emptyDir, and the killed container's done file goes with it."""
    while any(source.startswith("/dev/mapper/") for source in mounted_at(STATE)):
        subprocess.run(["umount", str(STATE)], check=True)
    DONE.unlink(missing_ok=True)


def forget_mapping_nodes() -> None:
    """The next container gets a fresh /dev: the /dev/mapper nodes the killed Initializer's
    libdevmapper made are gone, while its mappings may live on in the kernel."""
    for node in Path("/dev/mapper").glob("securepv-*"):
        node.unlink()


def command_running(init: Initializer, step: str) -> bool:
    wanted = COMMAND_NAMES[step]
    return any(process_name(pid) in wanted for pid in descendants(init.container_init_pid()))


def volume_sizes() -> tuple[int, bool]:
    """(ext4 bytes, whether ext4 is still smaller than the mapping) of the open volume."""
    sizes = growth.compare_sizes(
        VOLUME,
        growth.read_file_system_size(VOLUME, MAPPING),
        growth.mapping_size(MAPPING),
        0,
    )
    return sizes.file_system.size_bytes, sizes.needs_growth


def kill_at(point: str, secret: Path, expected: str, device_bytes: int) -> str:
    """SIGKILL an Initializer at ``point`` on the volume, then start a fresh one; returns
    ``expected`` ("TRIAL:COUNT,...", the files the application may count on) extended."""
    trial = label(point)
    signal_file = POD / f"fault-{trial}"
    faulty = Initializer(
        VOLUME,
        STATE,
        secret,
        DONE,
        entry=FAULTY,
        env={faults.FAULT_ENV: point, faults.SIGNAL_ENV: str(signal_file)},
    ).start(f"kill-{trial}")
    acked = 0
    # Teardown: the pod runs and the application writes; then the pod is stopped.
    if point in TEARDOWN and faulty.wait_ready() is not None:
        acked = write_batch(trial)
        os.kill(faulty.container_init_pid(), signal.SIGTERM)
    reached = wait_for(signal_file, faulty)
    writer = None
    if reached and point == "after:done":
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.vm.crash_scenarios", "writer", str(STATE), trial],
            stdout=subprocess.PIPE,
        )
        wait_until(lambda: (STATE / f"file-{trial}-1").exists())
    running = None
    if reached and point.startswith("during:"):
        step = point.split(":", 1)[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not command_running(faulty, step):
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.05))
        running = command_running(faulty, step)
    killed_status, _ = faulty.terminate(signal.SIGKILL) if reached else (faulty.wait_exit(), 0.0)
    if writer is not None:
        writer.kill()
        acked = acked_by(writer.communicate()[0])
    tear_down_pod()
    expected += f"{trial}:{acked},"

    uuid_before = luks_uuid(VOLUME)
    fresh = Initializer(VOLUME, STATE, secret, DONE).start(f"fresh-{trial}")
    ready = fresh.wait_ready()
    facts: dict[str, object] = {}
    if ready is not None:
        file_system_bytes, still_smaller = volume_sizes()
        facts = {
            **check_files(STATE, expected),
            "file_system_bytes": file_system_bytes,
            "still_smaller_than_mapping": still_smaller,
        }
        more = f"{trial}-then"
        expected += f"{more}:{write_batch(more)},"
    status, _ = fresh.terminate() if ready is not None else (fresh.wait_exit(), 0.0)
    report(
        f"kill {point}",
        reached=reached,
        command_running_at_kill=running,
        killed_status=killed_status,
        acked_before_kill=acked,
        device_bytes=device_bytes,
        fresh_ready=ready is not None,
        fresh_status=status,
        formatted_again="event=luks-format" in fresh.output(),
        grew="event=grow-file-system" in fresh.output(),
        uuid_kept=bool(uuid_before) and uuid_before == luks_uuid(VOLUME),
        state_after_fresh=read_state(VOLUME).value,
        mappings=[name for name in mappings() if name.startswith("securepv-")],
        faulty_output=faulty.output()[-3000:],
        fresh_errors=fresh.errors(),
        **facts,
    )
    return expected


def sidecar_restart(secret: Path, expected: str) -> str:
    """Only the Initializer's container dies (SIGKILL, as an OOM kill does) while the
    application keeps writing on the mounted volume; a fresh Initializer must take the volume
    over (it cannot be closed: the application holds it), reach /done, and at SIGTERM
    unmount and close it; the next ordinary start finds every fsynced file."""
    trial = "sidecar"
    first = Initializer(VOLUME, STATE, secret, DONE).start("sidecar-first")
    ready = first.wait_ready()
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.vm.crash_scenarios", "writer", str(STATE), trial],
        stdout=subprocess.PIPE,
    )
    wait_until(lambda: (STATE / f"file-{trial}-1").exists())
    killed_status, _ = first.terminate(signal.SIGKILL)
    files_at_kill = len(list(STATE.glob(f"file-{trial}-*")))
    DONE.unlink(missing_ok=True)  # it lived in the killed container
    forget_mapping_nodes()
    still_mounted = any(source.startswith("/dev/mapper/") for source in mounted_at(STATE))

    restarted = Initializer(VOLUME, STATE, secret, DONE).start("sidecar-restarted")
    restarted_ready = restarted.wait_ready()
    writer_alive = writer.poll() is None
    time.sleep(1.0)  # the application writes on through the takeover
    writer.kill()
    acked = acked_by(writer.communicate()[0])
    expected += f"{trial}:{acked},"
    status, _ = (
        restarted.terminate() if restarted_ready is not None else (restarted.wait_exit(), 0.0)
    )
    after_stop = {
        "mounted_after_stop": mounted_at(STATE),
        "mappings_after_stop": [name for name in mappings() if name.startswith("securepv-")],
    }
    tear_down_pod()
    fresh = Initializer(VOLUME, STATE, secret, DONE).start("sidecar-fresh")
    fresh_ready = fresh.wait_ready()
    files = check_files(STATE, expected) if fresh_ready is not None else {}
    fresh_status, _ = fresh.terminate() if fresh_ready is not None else (fresh.wait_exit(), 0.0)
    report(
        "sidecar restart",
        first_ready=ready is not None,
        killed_status=killed_status,
        still_mounted_after_kill=still_mounted,
        restarted_ready=restarted_ready is not None,
        taken_over="event=volume-taken-over" in restarted.output(),
        formatted_again="event=luks-format" in restarted.output(),
        writer_alive_at_takeover=writer_alive,
        acked=acked,
        files_at_kill=files_at_kill,
        restarted_status=status,
        restarted_errors=restarted.errors(),
        **after_stop,
        fresh_ready=fresh_ready is not None,
        fresh_status=fresh_status,
        fresh_errors=fresh.errors(),
        **files,
    )
    return expected


def main() -> None:
    fail_if_not_root()
    POD.mkdir(parents=True, exist_ok=True)
    make_shared_mount_point(STATE)
    secret = write_secret(POD / "secret", secrets.token_hex(32))
    device_bytes = FIRST_SIZE
    create(VOLUME_NAME, linear_table("/dev/vda", device_bytes))

    first = Initializer(VOLUME, STATE, secret, DONE).start("first")
    ready = first.wait_ready()
    expected = f"first:{write_batch('first')}," if ready is not None else ""
    status, _ = first.terminate() if ready is not None else (first.wait_exit(), 0.0)
    report("first-start", ready=ready is not None, status=status, errors=first.errors())

    for point in POINTS:
        if point in GROWTH:
            device_bytes += GROWTH_STEP
            resize(VOLUME_NAME, linear_table("/dev/vda", device_bytes))
        expected = kill_at(point, secret, expected, device_bytes)
    sidecar_restart(secret, expected)
    report("done")


if __name__ == "__main__":
    main()
