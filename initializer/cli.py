"""The ``initializer`` command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from contrast.log import event, setup_logging
from contrast.process import CommandError
from initializer import luks, termination
from initializer.errors import InitializerError
from initializer.securepv import SecurePVConfig, default_mapping_name, secure_pv

log = logging.getLogger("initializer")

DEFAULT_DONE_PATH = Path("/done")
DEFAULT_DEVICE_TIMEOUT_SECONDS = 60.0
DEFAULT_MOUNT_POINT = Path("/state")
CRYPTSETUP_DEVICE_ENV = "CRYPTSETUP_DEVICE"
MOUNT_POINT_ENV = "CRYPTSETUP_MOUNT_POINT"
DONE_PATH_ENV = "DONE_PATH"
INTEGRITY_ENV = "CRYPTSETUP_INTEGRITY"


def _process_age_ms() -> float | None:
    """Milliseconds since the kernel started this process: interpreter start-up and imports."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            fields = stat_file.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000 - start_ticks * 10, 1)
    except (OSError, IndexError, ValueError):
        return None


def one_line(text: str) -> str:
    """Collapse control characters (newlines from a tool's stderr, escapes from a forged
    header) so that an error is always exactly one line and cannot forge log lines."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _fail(exc: Exception, exit_code: int) -> None:
    click.echo(f"initializer: error: {one_line(str(exc))}", err=True)
    sys.exit(exit_code)


class OneLineErrors(click.Group):
    """Usage errors as one line with the same prefix as every other error (click prints a
    usage block and a hint over four lines), exit status 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            _fail(Exception("aborted"), 1)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            _fail(Exception(exc.format_message() + hint), exc.exit_code)
        return None


@click.group(
    cls=OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
)
@click.pass_context
def main(context: click.Context) -> None:
    """The Contrast Initializer: runs in a confidential pod and sets up its secure volume.

    Without a command: attest to the Coordinator and write the pod's credentials under
    CONTRAST_DIR (default /contrast); then, if CRYPTSETUP_DEVICE is set, open that device
    as a secure PV at CRYPTSETUP_MOUNT_POINT (default /state), with the integrity
    protection CRYPTSETUP_INTEGRITY (none or hmac-sha256, default none), write DONE_PATH
    (default /done) and keep running until SIGTERM; otherwise exit 0.

    Environment: COORDINATOR_HOST (HOST or HOST:PORT, default port 1313),
    COORDINATOR_REFERENCE_VALUES (JSON of the manifest's ReferenceValues), the TEE
    (CONTRAST_TEE=simulated with CONTRAST_SIMULATION_KEY and CONTRAST_SIMULATED_HOST_DATA
    for development only).
    """
    if context.invoked_subcommand is None:
        attest_and_serve(os.environ)


def _serve_secure_pv(config: SecurePVConfig, entry: float) -> None:
    """Set up the secure PV, report ready, wait for SIGTERM; Terminated ends it."""
    with secure_pv(config) as device:
        event(
            log,
            "ready",
            device=device.path,
            mount_point=config.mount_point,
            work_ms=round((time.monotonic() - entry) * 1000, 1),
        )
        termination.wait()


def attest_and_serve(environ: Mapping[str, str]) -> None:
    termination.block()
    setup_logging("initializer")
    # Imported here so that `initializer cryptsetup` does not pay for aTLS and netlink
    # (pyroute2 alone loads over 200 modules) at start-up.
    from initializer.pod import attest_and_write_credentials

    event(log, "started", command="attest", pid=os.getpid(), startup_ms=_process_age_ms())
    entry = time.monotonic()
    device = environ.get(CRYPTSETUP_DEVICE_ENV, "")
    try:
        # Checked before attesting: a bad setting fails at once, before any network traffic.
        integrity = luks.integrity_profile(
            environ.get(INTEGRITY_ENV) or luks.NO_INTEGRITY.name,
            f"environment variable {INTEGRITY_ENV}",
        )
        secret_path = attest_and_write_credentials(environ)
        termination.check()
        if not device:
            event(log, "finished", work_ms=round((time.monotonic() - entry) * 1000, 1))
            return
        config = SecurePVConfig(
            device=device,
            mount_point=Path(environ.get(MOUNT_POINT_ENV) or DEFAULT_MOUNT_POINT),
            workload_secret_path=secret_path,
            done_path=Path(environ.get(DONE_PATH_ENV) or DEFAULT_DONE_PATH),
            mapping_name=default_mapping_name(device),
            device_timeout=DEFAULT_DEVICE_TIMEOUT_SECONDS,
            integrity=integrity,
        )
        _serve_secure_pv(config, entry)
    except termination.Terminated as stop:
        event(log, "stopped", device=device or None, signal=stop.signal_name)
        return
    except InitializerError as exc:
        _fail(exc, exc.exit_code)
    except (CommandError, OSError) as exc:
        _fail(exc, 1)


@main.command("cryptsetup")
@click.option(
    "-d",
    "--device-path",
    required=True,
    help="Raw block device of the persistent volume, e.g. /dev/csi0.",
)
@click.option(
    "-m",
    "--mount-point",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to mount the encrypted ext4 volume, e.g. /state.",
)
@click.option(
    "--workload-secret-path",
    envvar="WORKLOAD_SECRET_PATH",
    type=click.Path(path_type=Path),
    default=Path("/contrast/secrets/workload-secret-seed"),
    show_default=True,
    help="Hex workload secret written by the attestation step [env: WORKLOAD_SECRET_PATH].",
)
@click.option(
    "--done-path",
    envvar="DONE_PATH",
    type=click.Path(path_type=Path),
    default=DEFAULT_DONE_PATH,
    show_default=True,
    help="File written once the volume is mounted and writable [env: DONE_PATH].",
)
@click.option(
    "--mapping-name",
    default=None,
    help="dm-crypt mapping name under /dev/mapper [default: securepv-<device name>].",
)
@click.option(
    "--device-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_DEVICE_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for the device to appear.",
)
@click.option(
    "--integrity",
    envvar=INTEGRITY_ENV,
    type=click.Choice(luks.INTEGRITY_MODES),
    default=luks.NO_INTEGRITY.name,
    show_default=True,
    help="Integrity protection: hmac-sha256 makes reads of blocks changed outside the guest "
    "fail instead of returning wrong data (costs space and write throughput; see "
    f"README, Integrity protection). A volume always opens only with the setting it was "
    f"formatted with [env: {INTEGRITY_ENV}].",
)
def cryptsetup_command(
    device_path: str,
    mount_point: Path,
    workload_secret_path: Path,
    done_path: Path,
    mapping_name: str | None,
    device_timeout: float,
    integrity: str,
) -> None:
    """Set up a LUKS2-encrypted ext4 volume on DEVICE and mount it at MOUNTPOINT.

    A blank device is formatted; a device this workload formatted before is opened; anything
    else is refused and left untouched. Writes the done file once the volume is ready, then
    keeps running until SIGTERM or SIGINT, when it unmounts, closes the mapping, removes
    the done file and exits 0.
    """
    termination.block()
    setup_logging("initializer")
    event(log, "started", command="cryptsetup", pid=os.getpid(), startup_ms=_process_age_ms())
    entry = time.monotonic()
    config = SecurePVConfig(
        device=device_path,
        mount_point=mount_point,
        workload_secret_path=workload_secret_path,
        done_path=done_path,
        mapping_name=mapping_name or default_mapping_name(device_path),
        device_timeout=device_timeout,
        integrity=luks.INTEGRITY_PROFILES[integrity],
    )
    try:
        _serve_secure_pv(config, entry)
    except termination.Terminated as stop:
        event(log, "stopped", device=device_path, signal=stop.signal_name)
        return
    except InitializerError as exc:
        _fail(exc, exc.exit_code)
    except (CommandError, OSError) as exc:
        _fail(exc, 1)
