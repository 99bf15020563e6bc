"""Benchmark: attested issuances per second, and recovery time for 1,000 manifests.

Run with ``python -m tests.coordinator.bench_coordinator``. Starts the real ``coordinator``
process on 127.0.0.1 (simulated TEE). The load generator runs in separate processes so
that its own Python work does not share the Coordinator's interpreter lock.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from contrast.client import CoordinatorAddress, CoordinatorVerifier
from contrast.derivation import derive_history_signing_key
from contrast.manifest import Manifest, PolicyEntry, policy_hash
from contrast.meshapi.client import request_workload_credentials
from contrast.seedshare import SecretSeed, encrypt_seed_share
from contrast.userapi import recover, set_manifest
from contrast.workspace import Workspace
from coordinator.history import HistoryStore
from tests.coordinator.conftest import CoordinatorProcess, run_contrast, workload_issuer
from tests.coordinator.helpers import policy_text

CLIENTS = 16
PROCESSES = 4
TARGET_ISSUANCES_PER_SECOND = 200
HISTORY_LENGTH = 1000
TARGET_RECOVERY_SECONDS = 2.0


def _workspace(directory: Path) -> Workspace:
    workspace = Workspace(directory)
    values = workspace.reference_values("simulated")
    manifest = Manifest(
        policies={policy_hash(policy_text("db")): PolicyEntry(("db",), "db-secret")},
        reference_values=values,
    )
    workspace.write_manifest(workspace.with_owner_keys(manifest))
    return workspace


def _quiet_client_side_warnings() -> None:
    # Each client logs its insecure acceptance of the simulated Coordinator; thousands of
    # identical lines would bury the figures. The Coordinator still logs to its own file.
    logging.getLogger("contrast.attestation.simulated").setLevel(logging.ERROR)


def _load_worker(
    address: str,
    workspace_dir: str,
    threads: int,
    seconds: float,
    results: multiprocessing.Queue[tuple[int, int]],
) -> None:
    _quiet_client_side_warnings()
    workspace = Workspace(Path(workspace_dir))
    issuer = workload_issuer(workspace, "db")
    verifier = CoordinatorVerifier.from_manifest(workspace.read_manifest())
    target = CoordinatorAddress.parse(address)
    counts = [0] * threads
    failures = [0] * threads
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                request_workload_credentials(target, issuer, verifier)
                counts[index] += 1
            except Exception:
                failures[index] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((sum(counts), sum(failures)))


def bench_issuance(root: Path, seconds: float) -> float:
    workspace = _workspace(root / "issuance-workspace")
    coordinator = CoordinatorProcess(
        root / "issuance-state", workspace.simulation_key_path, root / "issuance.log"
    ).start()
    try:
        manifest = workspace.read_manifest()
        set_manifest(
            coordinator.coordinator_address,
            CoordinatorVerifier.from_manifest(manifest),
            manifest,
            [],
            workspace.load_workload_owner_key(),
        )
        results: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
        per_process = CLIENTS // PROCESSES
        processes = [
            multiprocessing.Process(
                target=_load_worker,
                args=(coordinator.address, str(workspace.directory), per_process, seconds, results),
            )
            for _ in range(PROCESSES)
        ]
        start = time.monotonic()
        for process in processes:
            process.start()
        totals = [results.get(timeout=seconds + 120) for _ in processes]
        for process in processes:
            process.join()
        elapsed = time.monotonic() - start
    finally:
        coordinator.stop()
    issued = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    rate = issued / elapsed
    print(
        f"issuance: {issued} attested certificate+secret issuances in {elapsed:.1f} s with "
        f"{CLIENTS} concurrent clients ({PROCESSES} load processes): {rate:.0f}/s "
        f"(target >= {TARGET_ISSUANCES_PER_SECOND}/s), {failed} failures"
    )
    return rate


def bench_recovery(root: Path) -> float:
    workspace = _workspace(root / "recovery-workspace")
    secret = SecretSeed(bytes(range(32)), bytes(range(32, 64)))
    workspace.write_seed_shares(
        [encrypt_seed_share(secret, workspace.load_seedshare_owner_key().public_key())]
    )
    state = root / "recovery-state"
    store = HistoryStore(state)
    store.open()
    signing_key = derive_history_signing_key(secret.seed, secret.salt)
    manifest = workspace.read_manifest()
    built = time.monotonic()
    previous = None
    for index in range(HISTORY_LENGTH):
        policies = dict(manifest.policies)
        policies[policy_hash(f"policy {index}".encode())] = PolicyEntry(("w",), f"id-{index}")
        version = replace(manifest, policies=policies)
        previous = store.append(version.to_json(), {}, previous, signing_key)
    store.close()
    print(
        f"recovery: built a history of {HISTORY_LENGTH} manifests in "
        f"{time.monotonic() - built:.1f} s (not measured)"
    )
    coordinator = CoordinatorProcess(
        state, workspace.simulation_key_path, root / "recovery.log"
    ).start()
    try:
        verifier = CoordinatorVerifier.from_manifest(previous.manifest if previous else manifest)
        start = time.monotonic()
        count = recover(
            coordinator.coordinator_address,
            verifier,
            secret,
            workspace.load_seedshare_owner_key(),
        )
        elapsed = time.monotonic() - start
        coordinator.restart()
        workspace.write_manifest(previous.manifest if previous else manifest)
        start = time.monotonic()
        run_contrast(
            "recover",
            "-c",
            coordinator.address,
            "--workspace-dir",
            workspace.directory,
            check=True,
        )
        cli_elapsed = time.monotonic() - start
    finally:
        coordinator.stop()
    assert count == HISTORY_LENGTH
    print(
        f"recovery: verified {count} manifests and became ready in {elapsed:.3f} s, attested "
        f"TLS round trip included (target < {TARGET_RECOVERY_SECONDS} s); the whole "
        f"`contrast recover` command, process start and seed decryption included: "
        f"{cli_elapsed:.3f} s"
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="issuance run length")
    args = parser.parse_args()
    _quiet_client_side_warnings()
    with tempfile.TemporaryDirectory(prefix="bench-coordinator-") as directory:
        root = Path(directory)
        rate = bench_issuance(root, args.seconds)
        elapsed = bench_recovery(root)
    ok = rate >= TARGET_ISSUANCES_PER_SECOND and elapsed < TARGET_RECOVERY_SECONDS
    print("result: " + ("both targets met" if ok else "a target was missed"))


if __name__ == "__main__":
    main()
