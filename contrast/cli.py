"""The ``contrast`` command line. Each command lives in its own module and registers here."""

from __future__ import annotations

import click

from contrast.cli_coordinator import (
    derive_workload_secret_command,
    recover_command,
    set_command,
    status_command,
    verify_command,
)
from contrast.cli_generate import generate
from contrast.cli_manifest import manifest
from contrast.verify_snp_report import verify_snp_report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Confidential Kubernetes: generate manifests, set them, verify and recover the Coordinator."""


main.add_command(manifest)
main.add_command(generate)
main.add_command(set_command)
main.add_command(verify_command)
main.add_command(recover_command)
main.add_command(status_command)
main.add_command(derive_workload_secret_command)
main.add_command(verify_snp_report)
