"""``make bench``: time-to-ready of the Initializer against two baselines, in one microVM run.

Devices: sparse 1 GiB and 64 GiB images, a fresh pair for the Initializer and another for
baseline (b). For each size:

- Initializer first start (format, mkfs, mount) and later starts (open, mount), run as a
  container would (tests/vm/container). Reported: wall time from spawn to /done, the
  Initializer's start-up (interpreter and imports, up to its entry point) and its own work
  (entry point to /done), both from its log;
- baseline (a), the bare minimum: ``cryptsetup open`` + ``mount(8)`` shell commands with the
  same key, on the Initializer's own volume;
- baseline (b), the reference project's parameters: LUKS2 with argon2id, 10 MiB PBKDF memory
  and cryptsetup's default iteration time, ext4 with mkfs defaults, mounted with
  ``-o sync,data=journal``.

Integrity (README, Integrity protection): the Initializer's first and later start with
``--integrity hmac-sha256`` on their own 1 GiB and 64 GiB devices, and sequential write
throughput (WRITE_MIB written in 1 MiB writes to a file on the mounted volume with the
project's mount options, fsync at the end, page cache dropped before) through the mapping
without and with integrity, beside the same write to a raw device, all in the same VM run.

Start-up is measured on the host too, where emulation does not slow it. Figures are ratios
against baselines run in the same VM, since these machines are noisy.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / "bench-work"
GiB = 1024**3
SIZES = {"1 GiB": 1 * GiB, "64 GiB": 64 * GiB}
ROUNDS = 3
WRITE_MIB = 128
INTEGRITY = "hmac-sha256"
# Zeroing this much makes a used device blank again for the next first start: the header,
# keyslots and the start of the data area (the probe checks the first 17 MiB).
BLANK_BYTES = 18 * 1024 * 1024
RESULT = "BENCH "


def emit(**facts: object) -> None:
    print(RESULT + json.dumps(facts), flush=True)


def log_field(output: str, event: str, name: str) -> float | None:
    for line in output.splitlines():
        if f"event={event} " in line:
            for field in line.split():
                if field.startswith(f"{name}="):
                    return float(field.split("=", 1)[1])
    return None


def step_durations(output: str) -> dict[str, float]:
    """Each logged step's duration, by event name: where the Initializer's time goes."""
    steps: dict[str, float] = {}
    for line in output.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "duration_ms" in fields and fields.get("status") == "ok":
            steps[fields["event"]] = float(fields["duration_ms"])
    return steps


def make_blank(device: str) -> None:
    with open(device, "r+b") as raw:
        raw.write(bytes(BLANK_BYTES))
        raw.flush()
        os.fsync(raw.fileno())


def timed(argv: list[str], stdin: bytes | None = None) -> float:
    start = time.monotonic()
    subprocess.run(argv, input=stdin, check=True, capture_output=True)
    return (time.monotonic() - start) * 1000


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def write_mib_per_second(path: Path) -> float:
    """WRITE_MIB in 1 MiB writes, then fsync; from a cold page cache."""
    chunk = os.urandom(1024 * 1024)
    drop_caches()
    start = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for _ in range(WRITE_MIB):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.monotonic() - start
    if path.is_file():
        path.unlink()
    return round(WRITE_MIB / elapsed, 1)


def initializer_start(
    device: str,
    secret: Path,
    label: str,
    integrity: str = "none",
    during: Any = None,
) -> dict[str, Any]:
    from tests.vm.guest import Initializer

    pod = Path("/tmp/bench")
    init = Initializer(
        device, pod / "state", secret, pod / "done", extra_args=["--integrity", integrity]
    ).start(label)
    ready = init.wait_ready()
    output = init.output()
    extra = during(pod / "state") if ready is not None and during is not None else {}
    status, _ = init.terminate()
    if ready is None or status != 0:
        print(output, file=sys.stderr)
        raise SystemExit(f"the Initializer failed during {label}")
    return {
        "wall_ms": round(ready * 1000, 1),
        "startup_ms": log_field(output, "started", "startup_ms"),
        "work_ms": log_field(output, "ready", "work_ms"),
        "steps": step_durations(output),
        **extra,
    }


def baseline_a(device: str, key: bytes, mount_point: Path) -> float:
    """Bare minimum later start: cryptsetup open + mount(8), same key, same volume."""
    elapsed = timed(["cryptsetup", "open", "--key-file=-", device, "bench-a"], key)
    elapsed += timed(["mount", "/dev/mapper/bench-a", str(mount_point)])
    subprocess.run(["umount", str(mount_point)], check=True)
    subprocess.run(["cryptsetup", "close", "bench-a"], check=True)
    return round(elapsed, 1)


def baseline_b_first(device: str, key: bytes, mount_point: Path) -> dict[str, float]:
    """The reference project's parameters, first start on a blank device."""
    steps = {
        "format_ms": timed(
            [
                "cryptsetup",
                "luksFormat",
                "--batch-mode",
                "--type=luks2",
                "--pbkdf=argon2id",
                "--pbkdf-memory=10240",
                "--key-file=-",
                device,
            ],
            key,
        ),
        "open_ms": timed(["cryptsetup", "open", "--key-file=-", device, "bench-b"], key),
        "mkfs_ms": timed(["mkfs.ext4", "-q", "/dev/mapper/bench-b"]),
        "mount_ms": timed(
            ["mount", "-o", "sync,data=journal", "/dev/mapper/bench-b", str(mount_point)]
        ),
    }
    subprocess.run(["umount", str(mount_point)], check=True)
    subprocess.run(["cryptsetup", "close", "bench-b"], check=True)
    return {"total_ms": round(sum(steps.values()), 1)} | {k: round(v, 1) for k, v in steps.items()}


def throughput(mount_point: Path) -> dict[str, float]:
    return {"write_mib_s": write_mib_per_second(mount_point / "throughput.bin")}


def guest(rounds: int) -> None:
    from contrast.derivation import derive_luks_passphrase
    from tests.vm.guest import make_shared_mount_point, write_secret

    pod = Path("/tmp/bench")
    make_shared_mount_point(pod / "state")
    mount_point = pod / "baseline"
    mount_point.mkdir()
    # Made here, in the guest's memory: key material never travels in argv.
    secret_hex = secrets.token_hex(32)
    secret = write_secret(pod / "secret", secret_hex)
    key = derive_luks_passphrase(binascii.unhexlify(secret_hex))
    devices = {"1 GiB": ("/dev/vda", "/dev/vdc"), "64 GiB": ("/dev/vdb", "/dev/vdd")}
    integrity_devices = {"1 GiB": "/dev/vde", "64 GiB": "/dev/vdf"}
    raw_device = Path("/dev/vdg")
    # Rounds interleave everything, so a burst of load on this shared machine hits the
    # Initializer, the baselines and both sizes alike rather than one of them.
    for round_ in range(rounds):
        emit(kind="raw-write", write_mib_s=write_mib_per_second(raw_device))
        for size, device in integrity_devices.items():
            make_blank(device)
            first = initializer_start(device, secret, f"int-first-{round_}", INTEGRITY)
            emit(size=size, kind="integrity-first", **first)
            during = throughput if size == "1 GiB" else None
            later = initializer_start(device, secret, f"int-later-{round_}", INTEGRITY, during)
            emit(size=size, kind="integrity-later", **later)
        for size, (device, baseline_device) in devices.items():
            make_blank(device)
            first = initializer_start(device, secret, f"first-{round_}")
            emit(size=size, kind="initializer-first", **first)
            during = throughput if size == "1 GiB" else None
            later = initializer_start(device, secret, f"later-{round_}", during=during)
            emit(size=size, kind="initializer-later", **later)
            base_a = baseline_a(device, key, mount_point)
            emit(size=size, kind="baseline-a-later", total_ms=base_a)
            make_blank(baseline_device)
            base_b = baseline_b_first(baseline_device, key, mount_point)
            emit(size=size, kind="baseline-b-first", **base_b)
    emit(kind="end")


def host_startup_ms(runs: int = 15) -> dict[str, float]:
    """Interpreter and imports on the host: the real command up to its entry point."""
    initializer = PROJECT / ".venv" / "bin" / "initializer"
    python = PROJECT / ".venv" / "bin" / "python"
    walls, bare = [], []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run([str(initializer), "--help"], check=True, capture_output=True)
        walls.append((time.monotonic() - start) * 1000)
        start = time.monotonic()
        subprocess.run([str(python), "-c", "pass"], check=True, capture_output=True)
        bare.append((time.monotonic() - start) * 1000)
    return {
        "initializer_ms": round(statistics.median(walls), 1),
        "bare_python_ms": round(statistics.median(bare), 1),
    }


def step_medians(rows: list[dict[str, Any]], size: str, kind: str) -> str:
    """Each step's median duration (ms) over the rounds of one kind of start on one size."""
    runs = [r["steps"] for r in rows if r.get("size") == size and r.get("kind") == kind]
    names = sorted({name for run in runs for name in run})
    return ", ".join(
        f"{name} {statistics.median(run[name] for run in runs if name in run):.0f}"
        for name in names
    )


def report(rows: list[dict[str, Any]], host: dict[str, float], rounds: int) -> int:
    def median(size: str | None, kind: str, field: str) -> float:
        values = [
            float(r[field])
            for r in rows
            if r.get("size") == size and r.get("kind") == kind and r.get(field) is not None
        ]
        return statistics.median(values)

    print("\n== Secure PV time-to-ready (medians, ms; microVM under software emulation) ==")
    verdicts: list[tuple[str, bool]] = []
    own_first: dict[str, float] = {}
    own_later: dict[str, float] = {}
    for size in SIZES:
        first_work = median(size, "initializer-first", "work_ms")
        first_wall = median(size, "initializer-first", "wall_ms")
        startup_vm = median(size, "initializer-later", "startup_ms")
        later_work = median(size, "initializer-later", "work_ms")
        later_wall = median(size, "initializer-later", "wall_ms")
        base_a = median(size, "baseline-a-later", "total_ms")
        base_b = median(size, "baseline-b-first", "total_ms")
        own_first[size], own_later[size] = first_work, later_work
        whole_first_host = host["initializer_ms"] + first_work
        print(f"\n-- {size} device ({rounds} rounds) --")
        print(f"  Initializer start-up in the VM (interpreter + imports): {startup_vm:9.1f}")
        print(f"  first start: own work {first_work:9.1f}   wall in VM {first_wall:9.1f}")
        print(f"  later start: own work {later_work:9.1f}   wall in VM {later_wall:9.1f}")
        print(f"  baseline (a) later start, cryptsetup open + mount(8): {base_a:9.1f}")
        print(f"  baseline (b) first start, reference parameters:       {base_b:9.1f}")
        ratio_a = later_work / base_a
        print(f"  later start own work / baseline (a) = {ratio_a:.2f}x   (target <= 1.2x)")
        speedup_host = base_b / whole_first_host
        speedup_vm = base_b / first_wall
        print(
            f"  baseline (b) / whole first start = {speedup_host:.2f}x with host start-up, "
            f"{speedup_vm:.2f}x with VM start-up   (target >= 3x)"
        )
        verdicts += [
            (f"{size}: later start within 1.2x of (a)", ratio_a <= 1.2),
            (f"{size}: first start 3x faster than (b), host start-up", speedup_host >= 3),
        ]
    print("\n-- where the Initializer's own work goes (median ms per step) --")
    for kind in ("initializer-first", "initializer-later"):
        for size in SIZES:
            print(f"  {kind.removeprefix('initializer-')} {size}: {step_medians(rows, size, kind)}")
    growth_first = own_first["64 GiB"] / own_first["1 GiB"]
    growth_later = own_later["64 GiB"] / own_later["1 GiB"]
    print(
        f"\n64 GiB / 1 GiB own work: first start {growth_first:.2f}x, "
        f"later start {growth_later:.2f}x   (target <= 1.10x)"
    )
    print(
        f"host start-up: initializer {host['initializer_ms']:.1f} ms "
        f"(bare python {host['bare_python_ms']:.1f} ms)   (target < 300 ms)"
    )
    verdicts += [
        ("64 GiB first start within 10% of 1 GiB", growth_first <= 1.10),
        ("64 GiB later start within 10% of 1 GiB", growth_later <= 1.10),
        ("host start-up under 0.3 s", host["initializer_ms"] < 300),
    ]
    print(f"\n== Integrity ({INTEGRITY}) against none (medians, ms; own work / wall in VM) ==")
    print(f"  {'':22}{'1 GiB':>22}{'64 GiB':>22}")
    for label, kind in (
        ("first start, none", "initializer-first"),
        ("first start, hmac", "integrity-first"),
        ("later start, none", "initializer-later"),
        ("later start, hmac", "integrity-later"),
    ):
        cells = [
            f"{median(size, kind, 'work_ms'):9.1f} / {median(size, kind, 'wall_ms'):9.1f}"
            for size in SIZES
        ]
        print(f"  {label:22}{cells[0]:>22}{cells[1]:>22}")
    for kind in ("integrity-first", "integrity-later"):
        for size in SIZES:
            steps = step_medians(rows, size, kind)
            print(f"  steps {kind.removeprefix('integrity-')} hmac {size}: {steps}")
    int_growth = median("64 GiB", "integrity-first", "work_ms") / median(
        "1 GiB", "integrity-first", "work_ms"
    )
    print(f"  64 GiB / 1 GiB first start with integrity: {int_growth:.2f}x")
    raw = median(None, "raw-write", "write_mib_s")
    plain = median("1 GiB", "initializer-later", "write_mib_s")
    hmac = median("1 GiB", "integrity-later", "write_mib_s")
    print(f"\n== Sequential write, {WRITE_MIB} MiB + fsync, cold cache (median MiB/s, same VM) ==")
    print(f"  raw device                      {raw:8.1f}   1.00x")
    print(f"  mapping + ext4, no integrity    {plain:8.1f}   {plain / raw:.2f}x of raw")
    print(f"  mapping + ext4, hmac-sha256     {hmac:8.1f}   {hmac / raw:.2f}x of raw")
    print(f"  hmac-sha256 / no integrity      {hmac / plain:8.2f}x")
    print("\n== Targets ==")
    for name, held in verdicts:
        print(f"  {'met ' if held else 'MISS'} {name}")
    return 0


def host(rounds: int) -> int:
    WORK.mkdir(exist_ok=True)
    images = []
    names = ("init-1g", "init-64g", "base-1g", "base-64g", "int-1g", "int-64g", "raw-1g")
    for name in names:
        image = WORK / f"{name}.img"
        image.unlink(missing_ok=True)
        with image.open("wb") as disk:
            disk.truncate(SIZES["64 GiB"] if "64g" in name else SIZES["1 GiB"])
        images.append(image)
    host_figures = host_startup_ms()
    argv = [str(PROJECT / "tests" / "vm" / "run")]
    for image in images:
        argv += ["--disk", str(image)]
    argv += ["--", "python", "-m", "tests.bench", "--guest", "--rounds", str(rounds)]
    print("booting the microVM for the benchmark (a few minutes under emulation)", flush=True)
    # The integrity rounds roughly double the run: give the VM more than the default 30 min.
    env = {**os.environ, "VM_TIMEOUT": os.environ.get("VM_TIMEOUT", "5400")}
    completed = subprocess.run(argv, capture_output=True, text=True, env=env)
    rows = [
        json.loads(line[len(RESULT) :])
        for line in completed.stdout.splitlines()
        if line.startswith(RESULT)
    ]
    for image in images:
        image.unlink(missing_ok=True)
    if not rows or rows[-1].get("kind") != "end":
        print(completed.stdout[-5000:], completed.stderr[-5000:], sep="\n")
        print("the benchmark did not finish", file=sys.stderr)
        return 1
    (WORK / "results.json").write_text(json.dumps({"host": host_figures, "vm": rows}, indent=1))
    return report(rows, host_figures, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guest", action="store_true", help="run the measurements (in the VM)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds (default %(default)s)")
    args = parser.parse_args()
    if args.guest:
        guest(args.rounds)
        sys.exit(0)
    sys.exit(host(args.rounds))


if __name__ == "__main__":
    main()
