"""Whether a device is mounted at a place, read from this mount namespace's mountinfo."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from initializer import mount
from tests.initializer.conftest import sparse_image

MiB = 1024 * 1024


@pytest.fixture
def ext4_device(tmp_path: Path, loop_device: Callable[..., str]) -> str:
    image = sparse_image(tmp_path / "volume.img", 32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    return loop_device(image)


@pytest.fixture
def mounted(tmp_path: Path, ext4_device: str) -> Iterator[Path]:
    target = tmp_path / "state with space"
    target.mkdir()
    mount.mount(Path(ext4_device), target, "ext4", 0, "")
    yield target
    mount.unmount(target)


def test_the_device_is_found_at_its_mount_point_even_with_a_space(
    ext4_device: str, mounted: Path
) -> None:
    assert mount.is_mounted_at(Path(ext4_device), mounted)


def test_another_place_or_another_device_is_not_a_match(
    tmp_path: Path, ext4_device: str, mounted: Path, loop_device: Callable[..., str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert not mount.is_mounted_at(Path(ext4_device), elsewhere)
    other = loop_device(sparse_image(tmp_path / "other.img", 32 * MiB))
    assert not mount.is_mounted_at(Path(other), mounted)


def test_a_missing_device_is_mounted_nowhere(tmp_path: Path) -> None:
    assert not mount.is_mounted_at(tmp_path / "no-such-mapping", tmp_path)
