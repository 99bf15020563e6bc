"""The whole system end to end in a microVM: the real Coordinator, ``contrast generate`` /
``set`` / ``recover``, and the Initializer (no subcommand) as the pod's init container, in
its own network namespace, with a secure PV on a virtio disk.

One boot runs every step (tests/vm/system_scenarios.py); each test asserts one behaviour on
the facts the steps reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.boot import Steps, boot

pytestmark = pytest.mark.vm

MiB = 1024 * 1024


CREDENTIALS = [
    "tls-config/certChain.pem",
    "tls-config/coordinator-root-ca.pem",
    "tls-config/key.pem",
    "tls-config/mesh-ca.pem",
    "secrets/workload-secret-seed",
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    directory: Path = tmp_path_factory.mktemp("system")
    volume = directory / "volume.img"
    with volume.open("wb") as disk:
        disk.truncate(256 * MiB)
    steps = boot([volume], "tests.vm.system_scenarios")
    assert steps["setup"]["set_status"] == 0, steps["setup"]["stderr"]
    return steps


def test_unknown_policy_hash_gets_nothing_writes_nothing_and_leaves_the_device_untouched(
    system: Steps,
) -> None:
    step = system["unknown-policy"]
    assert step["refused"], step["output"]
    assert step["status"] == 0
    assert step["seconds"] < 10
    assert step["contrast_dir"] == []
    assert step["unchanged"]
    assert not step["done_exists"]
    assert step["mappings"] == []


def test_the_initializer_waits_for_the_pods_address_before_dialling(system: Steps) -> None:
    step = system["network-wait"]
    assert step["waiting_without_address"], step["output"]
    assert not step["dialled_before_address"]
    assert step["status"] == 0, step["output"]
    assert step["files"] == CREDENTIALS
    assert "eth0/10.88.1.2" in step["output"]


def test_first_start_attests_writes_credentials_and_mounts_a_fresh_volume(system: Steps) -> None:
    step = system["first-start"]
    assert step["ready_seconds"] is not None, step["output"]
    assert step["files"] == CREDENTIALS
    assert "event=attested" in step["output"]
    assert "event=luks-format" in step["output"]


def test_sigterm_unmounts_and_closes_the_volume(system: Steps) -> None:
    assert system["first-sigterm"]["status"] == 0
    assert system["first-sigterm"]["mappings"] == []


def test_a_restarted_coordinator_reports_that_it_needs_recovery(system: Steps) -> None:
    step = system["coordinator-restarted"]
    assert step["status"] == 3
    assert step["stdout"].startswith("recovery-required")


def test_the_initializer_waits_while_the_coordinator_needs_recovery(system: Steps) -> None:
    step = system["after-recovery"]
    assert step["waited_for_recovery"], step["output"]
    assert step["still_waiting"]
    assert not step["done_before_recovery"]


def test_after_recovery_the_same_secret_opens_the_same_volume_with_the_data(
    system: Steps,
) -> None:
    step = system["after-recovery"]
    assert step["recover_status"] == 0, step["recover_stderr"]
    assert step["ready_seconds"] is not None, step["output"]
    assert step["same_secret"]
    assert step["file_intact"]
    assert not step["formatted"]
    assert system["second-sigterm"]["status"] == 0


def test_a_changed_workload_secret_id_is_refused_not_reformatted(system: Steps) -> None:
    step = system["secret-id-changed"]
    assert step["set_status"] == 0, step["set_stderr"]
    assert not step["became_ready"], step["output"]
    assert step["status"] == 1
    assert any("different workload secret" in line for line in step["errors"]), step["output"]
    assert step["unchanged"]
    assert step["mappings"] == []


def test_each_phase_to_done_is_timed_in_the_log(system: Steps) -> None:
    for name in ("first-start", "after-recovery"):
        phases = system[name]["phases"]
        assert phases["attestation (aTLS, evidence, secret)"] > 0
        assert phases["LUKS (format, header check, open)"] > 0
        assert phases["Initializer's own work, to /done"] > 0


def test_the_workload_secret_appears_in_no_log(system: Steps) -> None:
    assert system["first-start"]["secret_in_logs"] is False
