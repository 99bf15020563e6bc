"""End to end in a microVM: the real kernel dm-crypt, real ext4, real mount(2), the
Initializer running as a container would (own namespaces, empty /run, 100 MiB limit).

Two boots, each doing many steps (tests/vm/scenarios.py); every test below asserts one
behaviour on the facts those steps reported.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.vm.boot import Steps, boot, sparse_disk

pytestmark = pytest.mark.vm

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    directory = tmp_path_factory.mktemp("lifecycle")
    volume = sparse_disk(directory / "volume.img", 256 * MiB)
    forged = sparse_disk(directory / "forged.img", 64 * MiB)
    return boot([volume, forged], "tests.vm.scenarios", "lifecycle")


def test_first_start_on_a_blank_device_mounts_an_encrypted_volume_and_writes_done(
    lifecycle: Steps,
) -> None:
    first = lifecycle["first-start"]
    assert first["ready_seconds"] is not None, first["output"]
    assert first["mappings"] == ["securepv-vda"]
    assert first["mounted"][-1] == "/dev/mapper/securepv-vda"
    assert "event=luks-format" in first["output"]
    assert "event=mkfs" in first["output"]


def test_each_step_is_logged_with_its_duration_and_no_secret(lifecycle: Steps) -> None:
    output = lifecycle["first-start"]["output"]
    for event in ("wait-device", "probe", "luks-format", "header-check", "luks-open", "mount"):
        assert any(
            f"event={event} " in line and "duration_ms=" in line for line in output.splitlines()
        ), event
    leaks = lifecycle["secrets-in-logs"]
    assert leaks["checked_bytes"] > 1000
    assert leaks["workload_secret"] is False
    assert leaks["luks_key"] is False


def test_mount_propagates_to_an_app_container_with_host_to_container(lifecycle: Steps) -> None:
    output = lifecycle["app-hosttocontainer"]["output"].split()
    assert "/dev/mapper/securepv-vda" in output  # mounted in the app's own namespace
    assert "lost+found" in output


def test_mount_does_not_reach_an_app_container_without_propagation(lifecycle: Steps) -> None:
    output = lifecycle["app-none"]["output"].split()
    assert "/dev/mapper/securepv-vda" not in output
    assert "lost+found" not in output


def test_sigterm_unmounts_closes_the_mapping_removes_done_and_exits_zero(
    lifecycle: Steps,
) -> None:
    stop = lifecycle["first-sigterm"]
    assert stop["status"] == 0, stop["output"]
    assert stop["seconds"] < 5
    assert stop["mappings"] == []
    assert "/dev/mapper/securepv-vda" not in stop["mounted"]
    assert stop["done_exists"] is False


def test_restart_opens_the_same_volume_with_its_data(lifecycle: Steps) -> None:
    second = lifecycle["second-start"]
    assert second["ready_seconds"] is not None, second["output"]
    assert second["file_intact"] is True
    assert second["app_file"] is True
    assert "event=luks-format" not in second["output"]
    assert "event=mkfs" not in second["output"]
    stop = lifecycle["second-sigterm"]
    assert stop["status"] == 0, stop["output"]
    assert stop["mappings"] == []
    assert stop["done_exists"] is False


def test_raw_device_holds_no_plaintext(lifecycle: Steps) -> None:
    assert lifecycle["raw-device"]["contains_plaintext"] is False


def test_wrong_workload_secret_is_refused_and_device_unchanged(lifecycle: Steps) -> None:
    wrong = lifecycle["wrong-secret"]
    assert wrong["became_ready"] is False
    assert wrong["status"] == 1
    assert "different workload secret" in " ".join(wrong["errors"])
    assert wrong["unchanged"] is True
    assert wrong["mappings"] == []


def test_forged_cipher_null_header_is_refused_although_cryptsetup_would_open_it(
    lifecycle: Steps,
) -> None:
    forged = lifecycle["forged-header"]
    # The attack is real: cryptsetup alone opens the forged header with the workload's key
    # and the data written through it reaches the disk in plaintext.
    assert forged["cryptsetup_alone_opens"] is True, forged["cryptsetup_error"]
    assert forged["plaintext_on_disk"] is True
    assert forged["became_ready"] is False
    assert forged["status"] == 1
    message = " ".join(forged["errors"])
    assert "cipher_null" in message
    assert forged["unchanged"] is True
    assert forged["mappings"] == []


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    directory = tmp_path_factory.mktemp("refusals")
    ext4 = sparse_disk(directory / "ext4.img", 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(ext4)], check=True)
    gpt = sparse_disk(directory / "gpt.img", 64 * MiB)
    subprocess.run(["sfdisk", "-q", str(gpt)], input="label: gpt\n,,L\n", text=True, check=True)
    unknown = sparse_disk(directory / "unknown.img", 64 * MiB)
    with unknown.open("r+b") as disk:
        disk.seek(3 * MiB)
        disk.write(os.urandom(4096))
    luks1 = sparse_disk(directory / "luks1.img", 64 * MiB)
    subprocess.run(
        [
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--type=luks1",
            "--pbkdf-force-iterations=1000",
            "--key-file=-",
            str(luks1),
        ],
        input=b"another-tool",
        check=True,
    )
    small = sparse_disk(directory / "small.img", 24 * MiB)
    read_only = sparse_disk(directory / "readonly.img", 64 * MiB)
    return boot([ext4, gpt, unknown, luks1, small, read_only], "tests.vm.scenarios", "refusals")


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("ext4", "found ext4 file system"),
        ("gpt", "found gpt partition table"),
        ("unknown-data", "non-zero byte at offset 3145728"),
        ("luks1", "LUKS1"),
        ("too-small", "too small"),
        ("read-only", "read-only"),
    ],
)
def test_device_that_is_not_blank_or_usable_is_refused_untouched(
    refusals: Steps, case: str, named: str
) -> None:
    result = refusals[case]
    assert result["became_ready"] is False
    assert result["status"] == 1
    assert named in " ".join(result["errors"])
    assert result["unchanged"] is True
    assert result["mappings"] == []


def test_missing_device_times_out_with_a_clear_error(refusals: Steps) -> None:
    result = refusals["missing-device"]
    assert result["status"] == 1
    assert "did not become available as a block device within 2 s" in " ".join(result["errors"])


def test_character_device_is_refused_as_not_a_block_device(refusals: Steps) -> None:
    result = refusals["not-block-device"]
    assert result["status"] == 1
    assert "a character device, not a block device" in " ".join(result["errors"])
