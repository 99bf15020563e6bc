"""Reading the workload secret file: every malformed input names the file, never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from initializer.secret import WorkloadSecretError, parse_workload_secret, read_workload_secret

SOURCE = Path("/contrast/secrets/workload-secret-seed")


def test_hex_with_a_trailing_newline_is_accepted() -> None:
    assert parse_workload_secret(b"ab" * 32 + b"\n", SOURCE) == b"\xab" * 32


def test_uppercase_hex_is_accepted() -> None:
    assert parse_workload_secret(b"AB" * 32, SOURCE) == b"\xab" * 32


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"zz" * 32, "not hex text"),
        (b"abc", "not hex text"),
        (b"ab" * 31, "has 31 bytes"),
    ],
)
def test_malformed_secret_is_refused_with_the_file_named(text: bytes, problem: str) -> None:
    with pytest.raises(WorkloadSecretError, match=problem) as error:
        parse_workload_secret(text, SOURCE)
    assert str(SOURCE) in str(error.value)


def test_error_message_does_not_contain_the_secret() -> None:
    secret = "c0ffee" * 10  # 30 bytes: too short
    with pytest.raises(WorkloadSecretError) as error:
        parse_workload_secret(secret.encode(), SOURCE)
    assert "c0ffee" not in str(error.value)


def test_missing_file_says_how_to_provide_one(tmp_path: Path) -> None:
    with pytest.raises(WorkloadSecretError, match="WORKLOAD_SECRET_PATH"):
        read_workload_secret(tmp_path / "absent")


def test_directory_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkloadSecretError, match="is a directory"):
        read_workload_secret(tmp_path)
