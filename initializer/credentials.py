"""The attestation step's files under ``/contrast``, written all or nothing.

Apps read ``tls-config/{mesh-ca.pem,certChain.pem,key.pem,coordinator-root-ca.pem}`` and
``secrets/workload-secret-seed``. Two directories cannot be renamed into place in one step,
so they are symbolic links into one generation directory, and one link names the current
generation (the pattern of Kubernetes' own AtomicWriter for ConfigMap and Secret volumes)::

    /contrast/tls-config  -> .credentials/tls-config
    /contrast/secrets     -> .credentials/secrets
    /contrast/.credentials -> .credentials-3k9x1q   (replaced by one rename(2): the commit)
    /contrast/.credentials-3k9x1q/{tls-config,secrets}/...

Every file is written and fsynced before the commit, so a crash at any point leaves either
no credentials at all (the links lead nowhere) or a complete set, never a mix. A
generation that was never committed is removed by the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from contrast.files import fsync_directory
from contrast.log import step
from contrast.meshapi.client import Credentials
from initializer.errors import InitializerError, UsageError

log = logging.getLogger("initializer")

DEFAULT_CONTRAST_DIR = Path("/contrast")
TLS_CONFIG = "tls-config"
SECRETS = "secrets"
CURRENT = ".credentials"
GENERATION_PREFIX = ".credentials-"
WORKLOAD_SECRET_FILE = f"{SECRETS}/workload-secret-seed"
PUBLIC_MODE = 0o444
SECRET_MODE = 0o400


class CredentialsWriteError(InitializerError):
    pass


@dataclass(frozen=True)
class CredentialFile:
    data: bytes
    mode: int


def credential_files(credentials: Credentials) -> dict[str, CredentialFile]:
    """Relative path -> content and mode: what the attestation step gives the pod."""
    key_pem = credentials.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        f"{TLS_CONFIG}/mesh-ca.pem": CredentialFile(credentials.mesh_ca_pem.encode(), PUBLIC_MODE),
        f"{TLS_CONFIG}/certChain.pem": CredentialFile(
            credentials.cert_chain_pem.encode(), PUBLIC_MODE
        ),
        f"{TLS_CONFIG}/key.pem": CredentialFile(key_pem, SECRET_MODE),
        f"{TLS_CONFIG}/coordinator-root-ca.pem": CredentialFile(
            credentials.root_ca_pem.encode(), PUBLIC_MODE
        ),
        WORKLOAD_SECRET_FILE: CredentialFile(
            credentials.workload_secret.hex().encode(), SECRET_MODE
        ),
    }


def workload_secret_path(base: Path) -> Path:
    return base / WORKLOAD_SECRET_FILE


def _write_new_file(path: Path, content: CredentialFile) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, content.mode)
    try:
        os.fchmod(fd, content.mode)  # the umask must not widen or narrow it
        view = memoryview(content.data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with one rename(2), whatever it pointed at before."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise CredentialsWriteError(
            f"{link} exists and is not a symbolic link: the Initializer owns this path in the "
            f"contrast-secrets volume; remove it (or point CONTRAST_DIR elsewhere)"
        )
    temporary = link.with_name(f"{link.name}.new-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


def current_generation(base: Path) -> str | None:
    try:
        return os.readlink(base / CURRENT)
    except OSError:
        return None


def remove_other_generations(base: Path) -> list[str]:
    """Remove generations (and link leftovers) that are not the committed one."""
    keep = current_generation(base)
    removed = []
    for entry in base.iterdir():
        name = entry.name
        if name.startswith(GENERATION_PREFIX) and name != keep:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(name)
        elif ".new-" in name and entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(name)
    return removed


def install(base: Path, files: Mapping[str, CredentialFile]) -> Path:
    """Write ``files`` under ``base`` all or nothing; return the committed generation."""
    with step(log, "write-credentials", directory=base, files=len(files)) as fields:
        try:
            base.mkdir(parents=True, exist_ok=True)
            # What an earlier run left half-done goes first, so it can never be mistaken
            # for part of this run's set.
            leftovers = remove_other_generations(base)
            if leftovers:
                fields["removed_uncommitted"] = ",".join(leftovers)
            generation = Path(tempfile.mkdtemp(prefix=GENERATION_PREFIX, dir=base))
        except OSError as exc:
            raise CredentialsWriteError(
                f"cannot write the credentials under {base}: {exc.strerror}"
            ) from None
        try:
            generation.chmod(0o755)
            directories = sorted({generation / Path(name).parent for name in files})
            for directory in directories:
                directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            for name, content in files.items():
                _write_new_file(generation / name, content)
            for directory in directories:
                fsync_directory(directory)
            fsync_directory(generation)
            for top in sorted({Path(name).parts[0] for name in files}):
                _replace_symlink(base / top, f"{CURRENT}/{top}")
            fsync_directory(base)
            _replace_symlink(base / CURRENT, generation.name)  # the commit
            fsync_directory(base)
        except BaseException as exc:
            if current_generation(base) != generation.name:
                shutil.rmtree(generation, ignore_errors=True)
            if isinstance(exc, OSError):
                raise CredentialsWriteError(
                    f"cannot write the credentials under {base}: {exc.strerror or exc}"
                ) from None
            raise
        remove_other_generations(base)
        fields["generation"] = generation.name
    return generation


def check_base(base: Path) -> None:
    if base.exists() and not base.is_dir():
        raise UsageError(f"CONTRAST_DIR {base} exists but is not a directory")
