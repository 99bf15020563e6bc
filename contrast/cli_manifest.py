"""``contrast manifest init``: a fresh manifest with reference values and the owner keys."""

from __future__ import annotations

from pathlib import Path

import click

from contrast.cli_errors import reports_errors
from contrast.manifest import PLATFORM_SIMULATED, PLATFORM_SNP, PLATFORMS, Manifest
from contrast.workspace import Workspace

WORKSPACE_OPTION = click.option(
    "--workspace-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory with manifest.json and the owner keys.",
)


@click.group()
def manifest() -> None:
    """Create and inspect manifests."""


@manifest.command("init")
@WORKSPACE_OPTION
@click.option(
    "--reference-values",
    type=click.Choice(PLATFORMS),
    default=PLATFORM_SIMULATED,
    show_default=True,
    help="Which TEEs to trust: the simulated TEE (development only) or AMD SEV-SNP.",
)
@click.option(
    "--snp-measurement",
    "snp_measurements",
    multiple=True,
    metavar="HEX",
    help="Launch measurement of a trusted pod VM image (96 hex digits); repeatable; snp only.",
)
@click.option("--force", is_flag=True, help="Replace an existing manifest.json.")
@reports_errors("manifest init")
def init(
    workspace_dir: Path, reference_values: str, snp_measurements: tuple[str, ...], force: bool
) -> None:
    """Write manifest.json: reference values, the workspace's owner keys, no policies yet.

    Owner keys (seedshare-owner.pem, workload-owner.pem) and, for the simulated TEE,
    simulation-key.pem are generated in the workspace when missing, never overwritten.
    `contrast generate` then fills in the policies.
    """
    if snp_measurements and reference_values != PLATFORM_SNP:
        raise click.UsageError("--snp-measurement applies only to --reference-values snp")
    workspace = Workspace(workspace_dir)
    if workspace.manifest_path.exists() and not force:
        raise click.ClickException(
            f"{workspace.manifest_path} exists: keep it, or pass --force to replace it"
        )
    values = workspace.reference_values(reference_values, snp_measurements)
    fresh = workspace.with_owner_keys(Manifest(reference_values=values))
    workspace.write_manifest(fresh)
    click.echo(f"wrote {workspace.manifest_path}")
    if reference_values == PLATFORM_SIMULATED:
        click.echo(
            f"the manifest trusts the simulated TEE ({workspace.simulation_key_path}): "
            "INSECURE, for development only",
            err=True,
        )
