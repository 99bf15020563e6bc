"""Reading the workload secret the attestation step wrote (hex text in a 0400 tmpfs file)."""

from __future__ import annotations

import binascii
import os
import stat
from pathlib import Path

from contrast.derivation import MIN_WORKLOAD_SECRET_BYTES
from initializer.errors import UsageError

DEFAULT_WORKLOAD_SECRET_PATH = Path("/contrast/secrets/workload-secret-seed")


class WorkloadSecretError(UsageError):
    pass


def parse_workload_secret(text: bytes, source: Path) -> bytes:
    """Hex text (surrounding white space allowed) to at least 32 bytes of secret.

    Error messages name the file and what is wrong with it, never its content.
    """
    stripped = text.strip()
    if not stripped:
        raise WorkloadSecretError(f"workload secret file {source} is empty")
    try:
        secret = binascii.unhexlify(stripped)
    except (binascii.Error, ValueError):
        raise WorkloadSecretError(
            f"workload secret file {source} is not hex text (expected an even number of hex "
            "digits, 0-9 and a-f in either case, as the Initializer's attestation step writes "
            "them)"
        ) from None
    if len(secret) < MIN_WORKLOAD_SECRET_BYTES:
        raise WorkloadSecretError(
            f"workload secret in {source} has {len(secret)} bytes; at least "
            f"{MIN_WORKLOAD_SECRET_BYTES} bytes ({2 * MIN_WORKLOAD_SECRET_BYTES} hex characters) "
            "are required"
        )
    return secret


# Far more than any hex secret needs; a larger file is a mistake, not a secret.
MAX_SECRET_FILE_BYTES = 4096


def _read_small_regular_file(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO must not hang the Initializer (SIGTERM is blocked while it reads).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise WorkloadSecretError(f"workload secret path {path} is not a regular file")
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise WorkloadSecretError(
            f"workload secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes; "
            "it should hold one hex secret"
        )
    return data


def read_workload_secret(path: Path) -> bytes:
    try:
        text = _read_small_regular_file(path)
    except FileNotFoundError:
        raise WorkloadSecretError(
            f"workload secret file {path} does not exist. In a pod the Initializer's "
            "attestation step writes it; for manual use pass --workload-secret-path or set "
            "WORKLOAD_SECRET_PATH."
        ) from None
    except IsADirectoryError:
        raise WorkloadSecretError(f"workload secret path {path} is a directory") from None
    except OSError as exc:
        raise WorkloadSecretError(
            f"workload secret file {path} cannot be read: {exc.strerror}"
        ) from None
    return parse_workload_secret(text, path)
