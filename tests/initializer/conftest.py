from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from initializer import luks
from tests.initializer.forge import format_volume

MiB = 1024 * 1024


def sparse_image(path: Path, size: int) -> Path:
    with path.open("wb") as image:
        image.truncate(size)
    return path


@pytest.fixture(scope="session")
def passphrase() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture(scope="session")
def luks_image(tmp_path_factory: pytest.TempPathFactory, passphrase: bytes) -> Path:
    """A 64 MiB image formatted by the real cryptsetup with this project's parameters."""
    image = sparse_image(tmp_path_factory.mktemp("luks") / "volume.img", 64 * MiB)
    format_volume(image, passphrase)
    return image


@pytest.fixture(scope="session")
def pristine_header(luks_image: Path) -> bytes:
    with luks_image.open("rb") as image:
        return image.read(luks.LuksLayout.DATA_OFFSET_BYTES)


@pytest.fixture
def loop_device() -> Iterator[Callable[..., str]]:
    """Attach image files as loop devices (real block devices on the host); detach after."""
    attached: list[str] = []

    def attach(image: Path, read_only: bool = False) -> str:
        argv = ["losetup", "--find", "--show", *(["--read-only"] if read_only else []), str(image)]
        device = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
        attached.append(device)
        return device

    yield attach
    for device in attached:
        subprocess.run(["losetup", "--detach", device], check=False)
