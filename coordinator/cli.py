"""``coordinator``: the Coordinator server process."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from contrast.atls import AttestedServerContext
from contrast.attestation.base import AttestationError
from contrast.attestation.platforms import issuer_from_environment
from contrast.log import event, setup_logging
from contrast.manifest import PLATFORM_SIMULATED
from contrast.protocol import DEFAULT_PORT
from coordinator.history import HistoryError, HistoryStore, StateDirError
from coordinator.server import CoordinatorServer
from coordinator.service import CoordinatorService

DEFAULT_STATE_DIR = Path("coordinator-state")
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port_text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: os.environ.get("COORDINATOR_STATE_DIR", str(DEFAULT_STATE_DIR)),
    show_default=f"$COORDINATOR_STATE_DIR or ./{DEFAULT_STATE_DIR}",
    help="Directory for the manifest history (the StatefulSet's persistent volume).",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    metavar="HOST:PORT",
    show_default=True,
    help="HOST:PORT to serve the attested API on (port 0: any free port, logged).",
)
@click.option("--debug", is_flag=True, help="Log debug events.")
def main(state_dir: Path, listen: str, debug: bool) -> None:
    """Serve the Coordinator: manifests, recovery, workload certificates and secrets.

    Evidence comes from this machine's TEE, or from the simulated TEE when the environment
    sets CONTRAST_TEE=simulated and CONTRAST_SIMULATION_KEY=PATH (development only).
    """
    log = setup_logging("coordinator", logging.DEBUG if debug else logging.INFO)
    address = parse_listen(listen)
    try:
        issuer = issuer_from_environment()
        store = HistoryStore(state_dir)
        store.open()
        service = CoordinatorService(store)
    except (AttestationError, StateDirError, HistoryError) as exc:
        click.echo(f"coordinator: {exc}", err=True)
        sys.exit(1)
    atls = AttestedServerContext(issuer)
    try:
        server = CoordinatorServer(address, service, atls)
    except OSError as exc:
        click.echo(f"coordinator: cannot listen on {listen}: {exc.strerror}", err=True)
        sys.exit(1)
    host, port = server.address
    if issuer.platform == PLATFORM_SIMULATED:
        event(log, "simulated-tee", logging.WARNING, insecure=True, note="development only")
    event(
        log,
        "coordinator-listening",
        address=f"{host}:{port}",
        state=service.state,
        state_dir=state_dir,
        platform=issuer.platform,
    )

    def stop(signum: int, _: FrameType | None) -> None:
        event(log, "coordinator-stopping", signal=signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        atls.close()
        store.close()
    event(log, "coordinator-stopped")
