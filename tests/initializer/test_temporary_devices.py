"""cryptsetup's temporary devices left by a killed format: found by what they are stacked on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from initializer import luks
from tests.initializer.conftest import sparse_image

MiB = 1024 * 1024


def fake_dm(sys_block: Path, index: int, name: str, slave: str) -> None:
    device = sys_block / f"dm-{index}"
    (device / "dm").mkdir(parents=True)
    (device / "dm" / "name").write_text(name + "\n")
    (device / "slaves" / slave).mkdir(parents=True)


def test_only_cryptsetups_temporary_devices_on_this_device_are_found(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(sparse_image(tmp_path / "volume.img", 32 * MiB))
    own = Path(device).name
    sys_block = tmp_path / "sys-block"
    fake_dm(sys_block, 0, "temporary-cryptsetup-1234", own)
    fake_dm(sys_block, 1, "temporary-cryptsetup-5678", "vdz")  # another device's
    fake_dm(sys_block, 2, "securepv-csi0", own)  # the mapping: remove_stale_mapping's
    fake_dm(sys_block, 3, "temporary-cryptsetup-9", own)
    assert luks.temporary_devices_on(device, sys_block) == [
        "temporary-cryptsetup-1234",
        "temporary-cryptsetup-9",
    ]


def test_no_device_mapper_devices_means_nothing_to_remove(
    tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(sparse_image(tmp_path / "volume.img", 32 * MiB))
    assert luks.temporary_devices_on(device, tmp_path / "empty") == []
    assert luks.temporary_devices_on(device) == []  # none stacked on a fresh loop device
