"""The ``contrast`` command line. Each command lives in its own module and registers here."""

from __future__ import annotations

import click

from contrast.cli_generate import generate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Confidential Kubernetes: generate manifests, set them, verify and recover the Coordinator."""


main.add_command(generate)
