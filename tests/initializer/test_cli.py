"""``initializer cryptsetup`` as a user runs it: bad input gets a clear message, an exit
status, and leaves the device exactly as it was. Real binary, real loop devices."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from initializer.state import RECORD_OFFSET, VolumeState, write_state
from tests.initializer import forge
from tests.initializer.conftest import MiB, sparse_image

INITIALIZER = Path(sys.executable).parent / "initializer"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INITIALIZER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def checksum(path: str | Path) -> str:
    with open(path, "rb") as data:
        return hashlib.sha256(data.read()).hexdigest()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "workload-secret-seed"
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def cryptsetup_args(device: str, tmp_path: Path, secret: Path, *extra: str) -> list[str]:
    return [
        "cryptsetup",
        "-d",
        device,
        "-m",
        str(tmp_path / "state"),
        "--workload-secret-path",
        str(secret),
        "--done-path",
        str(tmp_path / "done"),
        "--device-timeout",
        "1",
        *extra,
    ]


def test_missing_options_are_a_usage_error() -> None:
    result = run("cryptsetup")
    assert result.returncode == 2
    assert "Missing option '-d' / '--device-path'" in result.stderr


def test_unknown_option_is_a_usage_error() -> None:
    result = run("cryptsetup", "-d", "/dev/x", "-m", "/x", "--frobnicate")
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr and "No such option" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("cryptsetup",),
        ("cryptsetup", "-d", "/dev/x", "-m", "/x", "--integrity", "bogus"),
        ("cryptsetup", "-d", "/dev/x", "-m", "/x", "--device-timeout", "-1"),
        ("no-such-command",),
    ],
)
def test_a_usage_error_is_one_line_with_the_error_prefix(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("initializer: error: ") and "--help" in line


def test_integrity_comes_from_the_environment_too(
    tmp_path: Path, secret_file: Path, luks_image: Path, loop_device: Callable[..., str]
) -> None:
    # A volume formatted without integrity, started with CRYPTSETUP_INTEGRITY=hmac-sha256:
    # refused, as with --integrity; the variable must not be ignored.
    image = tmp_path / "volume.img"
    image.write_bytes(luks_image.read_bytes())
    before = checksum(image)
    result = run(
        *cryptsetup_args(loop_device(image), tmp_path, secret_file),
        env={"CRYPTSETUP_INTEGRITY": "hmac-sha256"},
    )
    assert result.returncode == 1
    assert "segment 0 has no integrity protection, but this Initializer is configured" in (
        result.stderr
    )
    assert checksum(image) == before
    result = run(
        *cryptsetup_args("/dev/x", tmp_path, secret_file), env={"CRYPTSETUP_INTEGRITY": "bogus"}
    )
    assert result.returncode == 2 and "'bogus' is not one of" in result.stderr


def test_help_documents_the_options() -> None:
    result = run("cryptsetup", "--help")
    assert result.returncode == 0
    for option in ("--device-path", "--mount-point", "--workload-secret-path", "--done-path"):
        assert option in result.stdout


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    result = run(*cryptsetup_args("/dev/x", tmp_path, tmp_path / "nope"))
    assert result.returncode == 2
    assert f"workload secret file {tmp_path / 'nope'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_path_comes_from_the_environment(tmp_path: Path) -> None:
    result = run(
        "cryptsetup",
        "-d",
        "/dev/x",
        "-m",
        str(tmp_path / "m"),
        "--done-path",
        str(tmp_path / "done"),
        env={"WORKLOAD_SECRET_PATH": str(tmp_path / "from-env")},
    )
    assert result.returncode == 2
    assert str(tmp_path / "from-env") in result.stderr


@pytest.mark.parametrize(
    ("content", "problem"), [("not hex at all", "not hex text"), ("abcd" * 8, "has 16 bytes")]
)
def test_malformed_secret_is_refused(tmp_path: Path, content: str, problem: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)
    result = run(*cryptsetup_args("/dev/x", tmp_path, secret))
    assert result.returncode == 2
    assert problem in result.stderr


def test_mount_point_that_is_a_file_is_refused(tmp_path: Path, secret_file: Path) -> None:
    (tmp_path / "state").write_text("a file")
    result = run(*cryptsetup_args("/dev/x", tmp_path, secret_file))
    assert result.returncode == 2
    assert "exists but is not a directory" in result.stderr


def test_device_that_never_appears_times_out(tmp_path: Path, secret_file: Path) -> None:
    result = run(*cryptsetup_args("/dev/does-not-exist", tmp_path, secret_file))
    assert result.returncode == 1
    assert "/dev/does-not-exist did not become available as a block device within 1 s" in (
        result.stderr
    )


def test_regular_file_is_not_a_block_device(tmp_path: Path, secret_file: Path) -> None:
    image = sparse_image(tmp_path / "image", 64 * MiB)
    result = run(*cryptsetup_args(str(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "is a regular file, not a block device" in result.stderr


def test_read_only_device_is_refused_untouched(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "ro.img", 64 * MiB)
    device = loop_device(image, read_only=True)
    before = checksum(image)
    result = run(*cryptsetup_args(device, tmp_path, secret_file))
    assert result.returncode == 1
    assert f"{device} is read-only" in result.stderr
    assert checksum(image) == before


def test_too_small_device_is_refused(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    device = loop_device(sparse_image(tmp_path / "small.img", 24 * MiB))
    result = run(*cryptsetup_args(device, tmp_path, secret_file))
    assert result.returncode == 1
    assert "too small for a LUKS2 header and a file system: at least 32 MiB" in result.stderr


def test_device_with_a_file_system_is_refused_untouched(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "ext4.img", 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "is not blank: found ext4 file system (version 1.0, uuid " in result.stderr
    assert checksum(image) == before


def test_forged_header_is_refused_before_any_unlock_and_left_untouched(
    tmp_path: Path, secret_file: Path, luks_image: Path, loop_device: Callable[..., str]
) -> None:
    image = tmp_path / "forged.img"
    with luks_image.open("rb") as source:
        raw = source.read()
    forged = forge.with_json(
        raw[: 2 * forge.SIZE],
        lambda m: m["segments"]["0"].update(encryption="cipher_null-ecb"),
    )
    image.write_bytes(forged + raw[2 * forge.SIZE :])
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "segment 0 encryption is 'cipher_null-ecb'" in result.stderr
    assert "was not opened and not changed" in result.stderr
    assert secret_file.read_text().strip() not in result.stderr
    assert checksum(image) == before


@pytest.mark.parametrize(
    ("missing", "package"), [("cryptsetup", "cryptsetup-bin"), ("mkfs.ext4", "e2fsprogs")]
)
def test_missing_tool_names_the_debian_package(
    tmp_path: Path, secret_file: Path, missing: str, package: str
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("cryptsetup", "mkfs.ext4", "blkid"):
        if tool != missing:
            found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
            (tools / tool).symlink_to(found)
    result = run(*cryptsetup_args("/dev/x", tmp_path, secret_file), env={"PATH": str(tools)})
    assert result.returncode == 1
    assert f"{missing} is not installed: install the Debian package {package}" in result.stderr


def test_sigterm_while_waiting_for_the_device_exits_zero_at_once(
    tmp_path: Path, secret_file: Path
) -> None:
    args = cryptsetup_args("/dev/never-appears", tmp_path, secret_file)
    args[args.index("--device-timeout") + 1] = "120"
    process = subprocess.Popen([str(INITIALIZER), *args], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "event=started" in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    status = process.wait(timeout=10)
    rest = process.stderr.read()
    assert status == 0
    assert time.monotonic() - start < 3
    assert "event=stopped" in rest and "signal=SIGTERM" in rest
    assert not (tmp_path / "done").exists()


def test_fifo_as_secret_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run(*cryptsetup_args("/dev/x", tmp_path, fifo))
    assert result.returncode == 2
    assert f"workload secret path {fifo} is not a regular file" in result.stderr


def test_oversized_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "huge"
    secret.write_text("ab" * 10_000)
    result = run(*cryptsetup_args("/dev/x", tmp_path, secret))
    assert result.returncode == 2
    assert "is larger than 4096 bytes" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("-m", "", "the mount point must be an absolute path, got '.'"),
        ("-m", "relative/dir", "the mount point must be an absolute path, got 'relative/dir'"),
        ("--done-path", "", "the done path must be an absolute path"),
        ("--device-timeout", "nan", "device timeout nan is not a finite number"),
        ("--mapping-name", "a/b", "mapping name 'a/b' is not a valid device-mapper name"),
        ("--mapping-name", "x" * 200, "is not a valid device-mapper name"),
    ],
)
def test_unusable_option_values_are_refused_before_anything_happens(
    tmp_path: Path, secret_file: Path, option: str, value: str, problem: str
) -> None:
    args = cryptsetup_args("/dev/x", tmp_path, secret_file)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    result = run(*args)
    assert result.returncode == 2
    assert problem in result.stderr
    assert result.stderr.count("initializer: error:") == 1


def test_done_path_that_is_a_directory_is_refused(tmp_path: Path, secret_file: Path) -> None:
    args = cryptsetup_args("/dev/x", tmp_path, secret_file)
    args[args.index("--done-path") + 1] = str(tmp_path)
    result = run(*args)
    assert result.returncode == 2
    assert "is a directory; give a file path" in result.stderr


def test_symlink_loop_as_device_is_a_clear_error(tmp_path: Path, secret_file: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = run(*cryptsetup_args(str(loop), tmp_path, secret_file))
    assert result.returncode == 1
    assert f"{loop} cannot be examined: Too many levels of symbolic links" in result.stderr
    assert "Traceback" not in result.stderr


def test_blank_device_on_a_kernel_without_device_mapper_is_not_formatted(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    if "device-mapper" in Path("/proc/misc").read_text():
        pytest.fail("this test needs a host kernel without device-mapper (as on CI)")
    image = sparse_image(tmp_path / "blank.img", 64 * MiB)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "this kernel has no device-mapper" in result.stderr
    assert "event=luks-format" not in result.stderr
    with image.open("rb") as data:
        assert not any(data.read(32 * MiB))


def test_unfinished_first_start_is_taken_up_again_not_refused_as_unknown_data(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    """A first start that died after writing part of a header: the state record says
    "formatting", so the next start formats again (here it stops, as the kernel lacks
    device-mapper, without writing: the device stays exactly as it was)."""
    if "device-mapper" in Path("/proc/misc").read_text():
        pytest.fail("this test needs a host kernel without device-mapper (as on CI)")
    image = sparse_image(tmp_path / "unfinished.img", 64 * MiB)
    write_state(str(image), VolumeState.FORMATTING)
    with image.open("r+b") as data:
        data.write(secrets.token_bytes(6000))  # a partial header
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "event=first-start-unfinished" in result.stderr
    assert "this kernel has no device-mapper" in result.stderr
    assert "not blank" not in result.stderr
    assert checksum(image) == before


def test_damaged_state_record_is_refused_untouched(
    tmp_path: Path, secret_file: Path, luks_image: Path, loop_device: Callable[..., str]
) -> None:
    image = tmp_path / "damaged.img"
    image.write_bytes(luks_image.read_bytes())
    with image.open("r+b") as data:
        data.seek(RECORD_OFFSET)
        data.write(b"formatting please")
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert f"state record (offset {RECORD_OFFSET}" in result.stderr
    assert "b'formatting please'" in result.stderr
    assert checksum(image) == before


def test_initialized_volume_without_header_is_refused_untouched(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "headless.img", 64 * MiB)
    write_state(str(image), VolumeState.INITIALIZED)
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "the state record says this volume was initialized, but its LUKS2" in result.stderr
    assert checksum(image) == before


def test_blank_device_of_an_unaligned_size_is_refused_untouched(
    tmp_path: Path, secret_file: Path, loop_device: Callable[..., str]
) -> None:
    image = sparse_image(tmp_path / "unaligned.img", 64 * MiB + 512)
    device = loop_device(image)
    before = checksum(image)
    result = run(*cryptsetup_args(device, tmp_path, secret_file))
    assert result.returncode == 1
    assert f"{device} has {64 * MiB + 512} bytes" in result.stderr
    assert "not a multiple of the 4096-byte encryption sector" in result.stderr
    assert "event=state-formatting" not in result.stderr
    assert checksum(image) == before


def test_volume_whose_device_grew_to_an_unaligned_size_is_refused_untouched(
    tmp_path: Path, secret_file: Path, luks_image: Path, loop_device: Callable[..., str]
) -> None:
    image = tmp_path / "grown.img"
    image.write_bytes(luks_image.read_bytes())
    with image.open("r+b") as grown:
        grown.truncate(96 * MiB + 1536)
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    assert "not a multiple of the 4096-byte encryption sector" in result.stderr
    assert "opens again once its claim is expanded" in result.stderr
    assert checksum(image) == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # cryptsetup's defaults: its keyslots area, filled with random bytes, covers the
        # place of the state record.
        ([], "cryptsetup's default"),
        # The project's first layout: the keyslots area reached the data offset.
        (
            [
                "--cipher=aes-xts-plain64",
                "--key-size=512",
                "--sector-size=4096",
                "--luks2-metadata-size=16384",
                f"--luks2-keyslots-size={16 * MiB - 32 * 1024}",
                "--offset=32768",
            ],
            "the layout of Initializers from before the first-start state record",
        ),
    ],
)
def test_a_luks2_header_made_otherwise_is_refused_by_the_header_check_not_as_a_damaged_record(
    tmp_path: Path,
    secret_file: Path,
    loop_device: Callable[..., str],
    options: list[str],
    expected: str,
) -> None:
    image = sparse_image(tmp_path / "volume.img", 64 * MiB)
    subprocess.run(
        [
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--type=luks2",
            "--pbkdf=pbkdf2",
            "--pbkdf-force-iterations=1000",
            "--key-file=-",
            *options,
            str(image),
        ],
        input=b"k" * 32,
        check=True,
        capture_output=True,
    )
    before = checksum(image)
    result = run(*cryptsetup_args(loop_device(image), tmp_path, secret_file))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "initializer: error:" in line]
    assert expected in line and "state record (offset" not in line
    assert checksum(image) == before
