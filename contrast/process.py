"""The one way to run an external command: logged, bounded in time, typed on failure.

Secrets never go into argv (any process can read /proc/PID/cmdline); pass them as ``stdin``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contrast.log import event

log = logging.getLogger("contrast.process")

DEFAULT_TIMEOUT_SECONDS = 60.0


class CommandError(Exception):
    """An external command failed, timed out, or is not installed."""

    def __init__(self, argv: Sequence[str], message: str, returncode: int | None, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class CommandNotFound(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: str


def require_binary(name: str, debian_package: str) -> str:
    """Return the path of ``name`` or raise CommandNotFound naming the package to install."""
    path = shutil.which(name)
    if path is None:
        raise CommandNotFound(
            [name],
            f"{name} is not installed: install the Debian package {debian_package} "
            f"(apt-get install {debian_package})",
            None,
            "",
        )
    return path


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    ok_returncodes: Sequence[int] = (0,),
) -> Result:
    """Run ``argv`` with ``stdin`` on a pipe, capture output, never hang past ``timeout``.

    With ``check`` a return code outside ``ok_returncodes`` raises CommandError carrying the
    command and its stderr. The command's process group is killed on timeout, so a helper it
    forked cannot keep the caller waiting.
    """
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(argv, f"{argv[0]} is not installed", None, "") from exc
    try:
        stdout, stderr_bytes = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CommandTimeout(
            argv,
            f"{' '.join(argv)} did not finish within {timeout:g} s and was killed",
            None,
            "",
        ) from None
    except BaseException:
        # Interrupted (a signal handler raised): the command must not outlive the caller's
        # decision to stop, or it could keep a device busy during teardown.
        _kill_group(proc)
        raise
    # Joined into one line: errors carrying it must stay one line.
    stderr = "; ".join(
        line.strip() for line in stderr_bytes.decode(errors="replace").splitlines() if line.strip()
    )
    duration_ms = round((time.monotonic() - start) * 1000, 1)
    event(
        log,
        "command",
        logging.DEBUG,
        argv=" ".join(argv),
        returncode=proc.returncode,
        duration_ms=duration_ms,
    )
    if check and proc.returncode not in ok_returncodes:
        detail = f": {stderr}" if stderr else ""
        raise CommandError(
            argv,
            f"{' '.join(argv)} failed with exit status {proc.returncode}{detail}",
            proc.returncode,
            stderr,
        )
    return Result(argv, proc.returncode, stdout, stderr)
