"""Integrity profiles on the host: the header check against a real header that cryptsetup
wrote with --integrity (made in a microVM by tests/integrity/make_vector.py, since luksFormat
with integrity needs device-mapper), the mkfs plan against the real mke2fs, the options."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from initializer import luks
from initializer.errors import UsageError
from initializer.luks_header import HeaderRejected, check_header
from initializer.securepv import (
    EXT4_BLOCK_BYTES,
    SecurePVConfig,
    check_config,
    mkfs_options,
    parse_superblock_backups,
)
from tests.initializer import forge

VECTOR = Path(__file__).parent / "vectors" / "hmac-sha256-header.bin.gz"
DEVICE_BYTES = 1024**3
NAME = "/dev/test"
MiB = 1024 * 1024
GiB = 1024 * MiB
INITIALIZER = Path(sys.executable).parent / "initializer"


@pytest.fixture(scope="module")
def integrity_header() -> bytes:
    return gzip.decompress(VECTOR.read_bytes())


def rejection(raw: bytes, integrity: luks.IntegrityProfile) -> str:
    with pytest.raises(HeaderRejected) as error:
        check_header(NAME, raw, DEVICE_BYTES, integrity)
    return str(error.value)


def test_header_written_with_integrity_passes_when_integrity_is_configured(
    integrity_header: bytes,
) -> None:
    checked = check_header(NAME, integrity_header, DEVICE_BYTES, luks.HMAC_SHA256)
    assert checked.data_offset == luks.LuksLayout.DATA_OFFSET_BYTES
    # 768-bit volume key, split 4000 ways, in whole 4 KiB sectors.
    assert checked.keyslot_area_size == 385024


def test_header_written_with_integrity_is_refused_when_configured_without(
    integrity_header: bytes,
) -> None:
    message = rejection(integrity_header, luks.NO_INTEGRITY)
    assert "segment 0 has integrity protection 'hmac(sha256)'" in message
    assert "configured with integrity none" in message


def test_header_without_integrity_is_refused_when_integrity_is_configured(
    pristine_header: bytes,
) -> None:
    # The downgrade: the provider swaps in a header without integrity.
    message = rejection(pristine_header, luks.HMAC_SHA256)
    assert "segment 0 has no integrity protection" in message
    assert "cannot downgrade the volume by swapping the header" in message
    assert "keyslot 0 key_size is 64, expected 96" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda m: m["segments"]["0"]["integrity"].update(type="hmac(sha1)"),
            "segment 0 integrity type is 'hmac(sha1)', expected 'hmac(sha256)'",
        ),
        (
            lambda m: m["segments"]["0"]["integrity"].update(journal_integrity="crc32c"),
            "segment 0 integrity journal_integrity is 'crc32c'",
        ),
        (
            lambda m: m["segments"]["0"]["integrity"].update(key_size=32),
            "segment 0 integrity has unexpected key_size",
        ),
        (
            lambda m: m["segments"]["0"].update(integrity="hmac(sha256)"),
            "segment 0 integrity is not an object",
        ),
        (
            lambda m: m["keyslots"]["0"].update(key_size=64),
            "keyslot 0 key_size is 64, expected 96",
        ),
        (
            lambda m: m["keyslots"]["0"]["area"].update(size="258048"),
            "keyslot 0 area size is 258048, expected 385024",
        ),
    ],
    ids=["other-mac", "journal-integrity", "extra-key", "not-object", "short-key", "short-area"],
)
def test_integrity_header_with_a_bent_field_is_refused(
    integrity_header: bytes, change: object, named: str
) -> None:
    assert named in rejection(forge.with_json(integrity_header, change), luks.HMAC_SHA256)  # type: ignore[arg-type]


def test_unknown_integrity_value_names_its_source_and_the_allowed_values() -> None:
    with pytest.raises(UsageError) as error:
        luks.integrity_profile("aes-gcm-random", "environment variable CRYPTSETUP_INTEGRITY")
    assert str(error.value) == (
        "environment variable CRYPTSETUP_INTEGRITY is 'aes-gcm-random'; allowed values are "
        "none, hmac-sha256"
    )


def test_integrity_leaves_room_for_the_dm_integrity_device_name() -> None:
    config = SecurePVConfig(
        device="/dev/x",
        mount_point=Path("/state"),
        workload_secret_path=Path("/s"),
        done_path=Path("/done"),
        mapping_name="m" * 125,
        device_timeout=1.0,
        integrity=luks.HMAC_SHA256,
    )
    with pytest.raises(UsageError, match="adds '_dif'"):
        check_config(config)


@pytest.mark.parametrize("size", [1 * GiB, 64 * GiB, 64 * 1024 * GiB])
def test_with_integrity_the_ext4_journal_is_zeroed_and_of_fixed_size(size: int) -> None:
    options = mkfs_options(luks.HMAC_SHA256, size)
    assert options == [
        "-b",
        "4096",
        "-J",
        "size=32",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=0,nodiscard",
    ]


def test_on_a_small_volume_the_journal_shrinks_but_never_below_the_jbd2_minimum() -> None:
    assert mkfs_options(luks.HMAC_SHA256, 128 * MiB)[3] == "size=8"
    assert mkfs_options(luks.HMAC_SHA256, 15 * MiB)[3] == "size=4"


def test_without_integrity_mkfs_stays_fully_lazy() -> None:
    assert mkfs_options(luks.NO_INTEGRITY, 64 * GiB) == [
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    ]


def dry_run(tmp_path: Path, size: int) -> str:
    image = tmp_path / "fs.img"
    with image.open("wb") as data:
        data.truncate(size)
    options = mkfs_options(luks.HMAC_SHA256, size)
    return subprocess.run(
        ["mkfs.ext4", "-n", *options, str(image)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def test_superblock_backups_are_read_from_the_real_mke2fs_dry_run(tmp_path: Path) -> None:
    backups = parse_superblock_backups(dry_run(tmp_path, 1 * GiB))
    # sparse_super: groups 1, 3, 5, 7, 9 of 32768 blocks each (a 1 GiB file has 8 groups).
    assert backups == [32768, 98304, 163840, 229376]


def test_blocks_zeroed_before_mkfs_stay_few_on_a_huge_volume(tmp_path: Path) -> None:
    # Powers of 3, 5 and 7: logarithmic in the size, 4 KiB each.
    backups = parse_superblock_backups(dry_run(tmp_path, 2 * 1024 * GiB))
    assert 10 < len(backups) < 40
    assert len(backups) * EXT4_BLOCK_BYTES < 256 * 1024


def test_a_volume_of_one_group_has_no_superblock_backups(tmp_path: Path) -> None:
    assert parse_superblock_backups(dry_run(tmp_path, 64 * MiB)) == []


def test_cryptsetup_command_refuses_an_unknown_integrity_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(INITIALIZER),
            "cryptsetup",
            "-d",
            "/dev/x",
            "-m",
            str(tmp_path / "state"),
            "--integrity",
            "aes-gcm-random",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "'aes-gcm-random' is not one of 'none', 'hmac-sha256'" in result.stderr


def test_attested_start_refuses_an_unknown_integrity_value_before_attesting(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "CRYPTSETUP_DEVICE": "/dev/x",
        "CRYPTSETUP_INTEGRITY": "hmac-sha1",
        # Nothing listens here: reaching the attestation would fail differently.
        "COORDINATOR_HOST": "127.0.0.1:9",
        "CONTRAST_DIR": str(tmp_path / "contrast"),
    }
    result = subprocess.run([str(INITIALIZER)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert (
        "environment variable CRYPTSETUP_INTEGRITY is 'hmac-sha1'; allowed values are "
        "none, hmac-sha256"
    ) in result.stderr
    assert not (tmp_path / "contrast").exists()


def test_generate_offers_exactly_the_initializers_integrity_modes() -> None:
    from genpolicy import kuberesource

    assert kuberesource.SECURE_PV_INTEGRITY_VALUES == luks.INTEGRITY_MODES


def test_generate_puts_the_integrity_setting_into_the_policy_bound_env() -> None:
    import base64

    from tests.generate.golden_support import GOLDEN

    expected = (GOLDEN / "secure-pv-integrity" / "expected.yaml").read_text()
    policy_line = next(
        line for line in expected.splitlines() if "io.katacontainers.config.agent.policy" in line
    )
    policy = base64.b64decode(policy_line.split(":", 1)[1].strip()).decode()
    assert '"name": "CRYPTSETUP_INTEGRITY",\n"value": "hmac-sha256"' in policy
