"""cryptsetup's temporary devices left by a killed format: found by what they are stacked on."""

from __future__ import annotations

import os
import stat
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


def fake_mapping(sys_block: Path, index: int, name: str, number: str) -> None:
    device = sys_block / f"dm-{index}"
    (device / "dm").mkdir(parents=True)
    (device / "dm" / "name").write_text(name + "\n")
    (device / "dev").write_text(number + "\n")


def test_a_mapping_is_found_in_the_kernel_and_its_missing_node_made(tmp_path: Path) -> None:
    sys_block, dev_mapper = tmp_path / "sys-block", tmp_path / "dev-mapper"
    fake_mapping(sys_block, 0, "securepv-other", "253:0")
    fake_mapping(sys_block, 3, "securepv-csi0", "253:3")
    assert luks.mapping_exists("securepv-csi0", sys_block, dev_mapper)
    node = os.stat(dev_mapper / "securepv-csi0")
    assert stat.S_ISBLK(node.st_mode) and node.st_rdev == os.makedev(253, 3)
    assert not luks.mapping_exists("securepv-gone", sys_block, dev_mapper)
    assert not (dev_mapper / "securepv-gone").exists()


def test_a_stale_node_naming_another_device_is_replaced(tmp_path: Path) -> None:
    sys_block, dev_mapper = tmp_path / "sys-block", tmp_path / "dev-mapper"
    fake_mapping(sys_block, 3, "securepv-csi0", "253:3")
    dev_mapper.mkdir()
    os.mknod(dev_mapper / "securepv-csi0", stat.S_IFBLK | 0o600, os.makedev(253, 9))
    assert luks.mapping_exists("securepv-csi0", sys_block, dev_mapper)
    assert os.stat(dev_mapper / "securepv-csi0").st_rdev == os.makedev(253, 3)


def test_something_else_under_the_mappings_name_is_replaced_by_the_node(tmp_path: Path) -> None:
    sys_block, dev_mapper = tmp_path / "sys-block", tmp_path / "dev-mapper"
    fake_mapping(sys_block, 3, "securepv-csi0", "253:3")
    dev_mapper.mkdir()
    (dev_mapper / "securepv-csi0").symlink_to(tmp_path / "nowhere")
    assert luks.mapping_exists("securepv-csi0", sys_block, dev_mapper)
    node = os.lstat(dev_mapper / "securepv-csi0")
    assert stat.S_ISBLK(node.st_mode) and node.st_rdev == os.makedev(253, 3)
