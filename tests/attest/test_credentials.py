"""The credential files under CONTRAST_DIR: written all or nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from contrast.meshapi.client import Credentials, generate_workload_key
from initializer import credentials
from initializer.credentials import (
    CredentialFile,
    CredentialsWriteError,
    credential_files,
    install,
    workload_secret_path,
)

SECRET = bytes(range(32))


def sample_credentials() -> Credentials:
    return Credentials(
        key=generate_workload_key(),
        cert_chain_pem="-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n",
        mesh_ca_pem="-----BEGIN CERTIFICATE-----\nmesh\n-----END CERTIFICATE-----\n",
        root_ca_pem="-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n",
        workload_secret_id="db",
        workload_secret=SECRET,
    )


def visible(base: Path) -> dict[str, bytes]:
    """What a reader of the documented paths sees (symbolic links followed)."""
    found = {}
    for top in ("tls-config", "secrets"):
        if (base / top).is_dir():
            for path in (base / top).iterdir():
                found[f"{top}/{path.name}"] = path.read_bytes()
    return found


def test_files_are_the_documented_set_with_their_modes() -> None:
    files = credential_files(sample_credentials())
    assert {name: f.mode for name, f in files.items()} == {
        "tls-config/mesh-ca.pem": 0o444,
        "tls-config/certChain.pem": 0o444,
        "tls-config/key.pem": 0o400,
        "tls-config/coordinator-root-ca.pem": 0o444,
        "secrets/workload-secret-seed": 0o400,
    }


def test_workload_secret_is_written_as_hex() -> None:
    files = credential_files(sample_credentials())
    assert files["secrets/workload-secret-seed"].data == SECRET.hex().encode()


def test_install_makes_every_file_readable_at_its_documented_path(tmp_path: Path) -> None:
    files = credential_files(sample_credentials())
    install(tmp_path, files)
    assert visible(tmp_path) == {name: f.data for name, f in files.items()}
    assert workload_secret_path(tmp_path).read_bytes() == SECRET.hex().encode()


def test_install_gives_each_file_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    files = credential_files(sample_credentials())
    old = os.umask(0o077)
    try:
        install(tmp_path, files)
    finally:
        os.umask(old)
    for name, content in files.items():
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == content.mode, name


def test_a_failure_half_way_leaves_nothing_readable_and_no_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    real_write = credentials._write_new_file

    def crash_on_third(path: Path, content: CredentialFile) -> None:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(path, content)

    monkeypatch.setattr(credentials, "_write_new_file", crash_on_third)
    with pytest.raises(CredentialsWriteError, match="No space left on device"):
        install(tmp_path, credential_files(sample_credentials()))
    assert visible(tmp_path) == {}
    assert not list(tmp_path.glob(".credentials-*"))


def test_a_failure_while_replacing_keeps_the_previous_set_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = credential_files(sample_credentials())
    install(tmp_path, first)

    def crash(path: Path, content: CredentialFile) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(credentials, "_write_new_file", crash)
    with pytest.raises(CredentialsWriteError):
        install(tmp_path, credential_files(sample_credentials()))
    assert visible(tmp_path) == {name: f.data for name, f in first.items()}


def test_a_generation_left_uncommitted_by_a_crash_is_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    leftover = tmp_path / ".credentials-crashed"
    (leftover / "secrets").mkdir(parents=True)
    (leftover / "secrets" / "workload-secret-seed").write_text("00" * 32)
    install(tmp_path, credential_files(sample_credentials()))
    assert not leftover.exists()
    assert len(list(tmp_path.glob(".credentials-*"))) == 1


def test_a_crash_before_the_commit_shows_no_files_at_the_documented_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate dying right at the commit: everything but the final rename has happened.
    real_replace = credentials._replace_symlink

    def die_at_commit(link: Path, target: str) -> None:
        if link.name == credentials.CURRENT:
            raise KeyboardInterrupt
        real_replace(link, target)

    monkeypatch.setattr(credentials, "_replace_symlink", die_at_commit)
    with pytest.raises(KeyboardInterrupt):
        install(tmp_path, credential_files(sample_credentials()))
    assert visible(tmp_path) == {}
    assert not workload_secret_path(tmp_path).exists()


def test_a_second_install_replaces_the_set_and_keeps_one_generation(tmp_path: Path) -> None:
    install(tmp_path, credential_files(sample_credentials()))
    second = credential_files(sample_credentials())
    install(tmp_path, second)
    assert visible(tmp_path) == {name: f.data for name, f in second.items()}
    assert len(list(tmp_path.glob(".credentials-*"))) == 1


def test_a_real_directory_in_the_way_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mine").write_text("user data")
    with pytest.raises(CredentialsWriteError, match="is not a symbolic link"):
        install(tmp_path, credential_files(sample_credentials()))
    assert (tmp_path / "secrets" / "mine").read_text() == "user data"
    assert not list(tmp_path.glob(".credentials-*"))
