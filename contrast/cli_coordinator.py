"""``contrast set|verify|recover|status|derive-workload-secret``: talking to the Coordinator."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import click

from contrast.cli_errors import reports_errors
from contrast.cli_manifest import WORKSPACE_OPTION
from contrast.client import CoordinatorAddress, CoordinatorVerifier
from contrast.derivation import derive_workload_secret
from contrast.files import atomic_write
from contrast.manifest import Manifest, key_digest, policy_hash, public_key_hex
from contrast.protocol import STATE_READY
from contrast.seedshare import SecretSeed, decrypt_seed_share, find_seed_share
from contrast.userapi import get_history, get_status, recover, set_manifest
from contrast.workspace import Workspace, WorkspaceError

EXIT_NOT_READY = 3
ROOT_CA_FILE = "coordinator-root-ca.pem"
MESH_CA_FILE = "mesh-ca.pem"
VERIFY_DIR = "verify"


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> CoordinatorAddress:
    try:
        return CoordinatorAddress.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


COORDINATOR_OPTION = click.option(
    "-c",
    "--coordinator",
    required=True,
    metavar="HOST:PORT",
    callback=_address,
    help="Address of the Coordinator.",
)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _decrypt_seed(workspace: Workspace) -> SecretSeed:
    key = workspace.load_seedshare_owner_key()
    share = find_seed_share(workspace.read_seed_shares(), key)
    return decrypt_seed_share(share, key)


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode())
    except OSError as exc:
        raise WorkspaceError(f"cannot write {path}: {exc.strerror}") from None


@click.command("set")
@COORDINATOR_OPTION
@WORKSPACE_OPTION
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Manifest to set (default: manifest.json in the workspace).",
)
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A runtime policy file the manifest references, stored by the Coordinator; repeatable.",
)
@reports_errors("set")
def set_command(
    coordinator: CoordinatorAddress,
    workspace_dir: Path,
    manifest_path: Path | None,
    policy_paths: tuple[Path, ...],
) -> None:
    """Set the manifest on the Coordinator, after verifying its attestation.

    The first set returns the secret seed encrypted to each seed share owner; it is stored
    in the workspace as seed-shares.json (keep it and seedshare-owner.pem safe: together
    they recover the Coordinator and every workload secret). A manifest listing no seed
    share owner or no workload owner gets the workspace's keys added (generated if missing).
    """
    workspace = Workspace(workspace_dir)
    path = manifest_path or workspace.manifest_path
    manifest = workspace.read_manifest(path)
    policies = [p.read_bytes() for p in policy_paths]
    for policy_path, text in zip(policy_paths, policies, strict=True):
        if policy_hash(text) not in manifest.policies:
            raise click.ClickException(
                f"{policy_path}: its hash {policy_hash(text)} is not a policy of {path}"
            )
    completed = _with_default_owners(workspace, manifest)
    owner_key = workspace.ensure_workload_owner_key()
    result = set_manifest(
        coordinator, CoordinatorVerifier.from_manifest(completed), completed, policies, owner_key
    )
    if completed != manifest:
        atomic_write(path, completed.to_json())
        click.echo(f"added the workspace's owner keys to {path}")
    if result.seed_shares:
        _keep_previous_seed_shares(workspace)
        workspace.write_seed_shares(result.seed_shares)
        click.echo(
            f"first manifest set: the encrypted secret seed is in {workspace.seed_shares_path}; "
            "back it up together with seedshare-owner.pem"
        )
    _write_text(workspace.directory / ROOT_CA_FILE, result.root_ca_pem)
    _write_text(workspace.directory / MESH_CA_FILE, result.mesh_ca_pem)
    click.echo(f"manifest {completed.digest()} set on {coordinator}")


def _with_default_owners(workspace: Workspace, manifest: Manifest) -> Manifest:
    seedshare: list[str] = []
    if not manifest.seedshare_owner_pub_keys:
        seedshare.append(public_key_hex(workspace.ensure_seedshare_owner_key().public_key()))
    digests: list[str] = []
    if not manifest.workload_owner_key_digests:
        digests.append(key_digest(workspace.ensure_workload_owner_key().public_key()))
    return manifest.with_owners(seedshare, digests)


def _keep_previous_seed_shares(workspace: Workspace) -> None:
    """A workspace reused for a new deployment must not lose the old deployment's seed."""
    path = workspace.seed_shares_path
    if path.exists():
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.{stamp}")
        path.rename(backup)
        click.echo(f"kept the previous seed shares as {backup}", err=True)


@click.command("verify")
@COORDINATOR_OPTION
@WORKSPACE_OPTION
@reports_errors("verify")
def verify_command(coordinator: CoordinatorAddress, workspace_dir: Path) -> None:
    """Verify the Coordinator and check that its current manifest is the workspace's.

    Writes the manifest history and the CA certificates to verify/ in the workspace.
    """
    workspace = Workspace(workspace_dir)
    manifest = workspace.read_manifest()
    history = get_history(coordinator, CoordinatorVerifier.from_manifest(manifest))
    out = workspace.directory / VERIFY_DIR
    for index, manifest_json in enumerate(history.manifests):
        _write_text(out / "manifests" / f"manifest-{index:04d}.json", manifest_json.decode())
    for digest, text in history.policies.items():
        _write_text(out / "policies" / f"{digest}.rego", text)
    _write_text(out / ROOT_CA_FILE, history.root_ca_pem)
    _write_text(out / MESH_CA_FILE, history.mesh_ca_pem)
    if not history.manifests or history.manifests[-1] != manifest.to_json():
        raise click.ClickException(
            f"the Coordinator's current manifest differs from {workspace.manifest_path} "
            f"(its history is in {out})"
        )
    click.echo(
        f"the Coordinator at {coordinator} is verified and runs manifest {manifest.digest()} "
        f"({len(history.manifests)} in its history, written to {out})"
    )


@click.command("recover")
@COORDINATOR_OPTION
@WORKSPACE_OPTION
@reports_errors("recover")
def recover_command(coordinator: CoordinatorAddress, workspace_dir: Path) -> None:
    """Recover a restarted Coordinator with the seed share owner's key."""
    workspace = Workspace(workspace_dir)
    manifest = workspace.read_manifest()
    secret = _decrypt_seed(workspace)
    count = recover(
        coordinator,
        CoordinatorVerifier.from_manifest(manifest),
        secret,
        workspace.load_seedshare_owner_key(),
    )
    click.echo(
        f"the Coordinator at {coordinator} verified its history "
        f"({_count(count, 'manifest')}) and is ready"
    )


@click.command("status")
@COORDINATOR_OPTION
@WORKSPACE_OPTION
@reports_errors("status")
def status_command(coordinator: CoordinatorAddress, workspace_dir: Path) -> None:
    """Print whether the Coordinator is ready (exit 0) or not (exit 3).

    The Coordinator is verified against the workspace manifest's reference values.
    """
    workspace = Workspace(workspace_dir)
    manifest = workspace.read_manifest()
    status = get_status(coordinator, CoordinatorVerifier.from_manifest(manifest))
    click.echo(f"{status.state} ({_count(status.manifests, 'manifest')})")
    if status.state != STATE_READY:
        sys.exit(EXIT_NOT_READY)


@click.command("derive-workload-secret")
@click.option("--workload-secret-id", required=True, help="The workload secret ID to derive.")
@WORKSPACE_OPTION
@reports_errors("derive-workload-secret")
def derive_workload_secret_command(workload_secret_id: str, workspace_dir: Path) -> None:
    """Print the hex workload secret of an ID, offline, from the seed share.

    Needs seedshare-owner.pem and seed-shares.json; no Coordinator is contacted. The output
    is secret: it opens every volume of that workload.
    """
    workspace = Workspace(workspace_dir)
    secret = _decrypt_seed(workspace)
    click.echo(derive_workload_secret(secret.seed, secret.salt, workload_secret_id).hex())
