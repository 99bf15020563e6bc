"""``contrast generate``: inject Contrast into Kubernetes YAML, write policies and the manifest.

    contrast generate [--workspace-dir DIR] [--reference-values simulated|snp]
                      [--snp-measurement HEX]... [--initializer-image IMAGE] PATH...

PATH is a YAML file, a directory (searched recursively for ``*.yml``/``*.yaml``), or ``-``
for a stream on stdin that is written, rewritten, to stdout. Everything is read and checked
first; only when every input is good are files rewritten (atomically, and only those that
changed) and ``manifest.json`` written. On any error nothing is written.

The manifest's ``Policies`` are replaced by the policies of this run, so run generate over
all resources of a deployment at once. ``ReferenceValues`` come from
``--reference-values`` (needed when the workspace has no manifest yet; otherwise the
existing ones are kept); owner keys are the workspace's, generated if missing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.files import atomic_write
from contrast.log import event, setup_logging
from contrast.manifest import (
    PLATFORM_SIMULATED,
    PLATFORMS,
    Manifest,
    PolicyEntry,
    ReferenceValues,
    SimulatedReferenceValue,
    public_key_hex,
    reference_values_json,
)
from contrast.workspace import Workspace, WorkspaceError
from genpolicy.errors import GenerateError, InputErrors
from genpolicy.generate import (
    DEFAULT_INITIALIZER_IMAGE,
    Options,
    ParsedStream,
    StreamResult,
    index_claims,
    parse_stream,
    transform_stream,
)
from genpolicy.kuberesource import CoordinatorConnection
from genpolicy.yamltext import RewriteError

STDIN = "-"
YAML_SUFFIXES = (".yml", ".yaml")

log = logging.getLogger("contrast.generate")


class GenerateFailed(Exception):
    """One or more inputs are bad; every message names its file and what to do."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(messages))


@dataclass(frozen=True)
class Input:
    source: str  # the name in messages: the path as given, or "<stdin>"
    path: Path | None  # None for stdin
    text: str
    mode: int


@dataclass(frozen=True)
class Outcome:
    results: list[StreamResult]
    manifest: Manifest
    warnings: list[str]
    # A simulation key made for this run's reference values, saved only by ``apply``.
    new_simulation_key: ed25519.Ed25519PrivateKey | None = None


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in YAML_SUFFIXES and not p.is_dir())


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GenerateError(
            source, None, None, f"is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def read_inputs(paths: Sequence[str], stdin: bytes | None) -> list[Input]:
    """Read every input, or raise GenerateFailed listing each one that cannot be read."""
    inputs: list[Input] = []
    errors: list[str] = []
    seen: set[Path] = set()
    if sum(1 for p in paths if p == STDIN) > 1:
        raise GenerateFailed(["'-' (stdin) may be given only once"])
    for given in paths:
        if given == STDIN:
            try:
                inputs.append(Input("<stdin>", None, _decode("<stdin>", stdin or b""), 0))
            except GenerateError as exc:
                errors.append(str(exc))
            continue
        path = Path(given)
        if path.is_dir():
            files = _yaml_files(path)
            if not files:
                errors.append(f"{given}: directory holds no .yml or .yaml files")
        elif path.exists() or path.is_symlink():
            files = [path]
        else:
            errors.append(f"{given}: no such file or directory")
            continue
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                data = file.read_bytes()
                mode = stat.S_IMODE(file.stat().st_mode)
                inputs.append(Input(str(file), file, _decode(str(file), data), mode))
            except OSError as exc:
                errors.append(f"{file}: cannot read: {exc.strerror}; check the path and its access")
            except GenerateError as exc:
                errors.append(str(exc))
    if errors:
        raise GenerateFailed(errors)
    return inputs


def _policies(results: Sequence[StreamResult]) -> dict[str, PolicyEntry]:
    # A policy describes its workload's identity, secret ID and role, so equal hashes mean
    # equal entries (the same resource given twice).
    return {
        pod.policy_hash: PolicyEntry(pod.sans, pod.workload_secret_id, pod.role)
        for result in results
        for pod in result.entries
    }


def plan(
    inputs: Sequence[Input],
    initializer_image: str,
    workspace: Workspace,
    reference_values: str | None,
    snp_measurements: Sequence[str],
) -> Outcome:
    """Check and transform everything in memory; raise GenerateFailed on any bad input."""
    errors: list[str] = []
    parsed: list[ParsedStream] = []
    for item in inputs:
        try:
            parsed.append(parse_stream(item.source, item.text))
        except InputErrors as exc:
            errors.extend(str(e) for e in exc.errors)
    if errors:
        raise GenerateFailed(errors)
    try:
        existing = workspace.read_manifest() if workspace.manifest_path.exists() else None
        values, new_key = _reference_values(workspace, existing, reference_values, snp_measurements)
    except WorkspaceError as exc:
        raise GenerateFailed([str(exc)]) from None
    # The reference values go into every Initializer's environment (and so into every
    # policy): the pod verifies the Coordinator against them before trusting its secret.
    options = Options(CoordinatorConnection(reference_values_json(values)), initializer_image)
    claims = index_claims(parsed)
    results: list[StreamResult] = []
    for stream in parsed:
        try:
            results.append(transform_stream(stream, options, claims))
        except InputErrors as exc:
            errors.extend(str(e) for e in exc.errors)
        except RewriteError as exc:
            errors.append(f"{stream.source}: {exc}")
    if errors:
        raise GenerateFailed(errors)
    policies = _policies(results)
    try:
        base = existing or Manifest()
        manifest = workspace.with_owner_keys(
            Manifest(
                policies=policies,
                reference_values=values,
                seedshare_owner_pub_keys=base.seedshare_owner_pub_keys,
                workload_owner_key_digests=base.workload_owner_key_digests,
            )
        )
    except WorkspaceError as exc:
        raise GenerateFailed([str(exc)]) from None
    warnings = [w for r in results for w in r.warnings]
    return Outcome(results, manifest, warnings, new_key)


def _reference_values(
    workspace: Workspace,
    existing: Manifest | None,
    platform: str | None,
    snp_measurements: Sequence[str],
) -> tuple[ReferenceValues, ed25519.Ed25519PrivateKey | None]:
    """The manifest's reference values, and a new simulation key to save if one was made.

    They are needed before the inputs are checked (every Initializer's environment carries
    them), so a missing simulation key is made in memory: bad input must write nothing.
    """
    if platform == PLATFORM_SIMULATED and not workspace.simulation_key_path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        simulated = SimulatedReferenceValue(public_key_hex(key.public_key()))
        return ReferenceValues(simulated=(simulated,)), key
    if platform is not None:
        return workspace.reference_values(platform, snp_measurements), None
    if existing is not None:
        return existing.reference_values, None
    raise WorkspaceError(
        f"{workspace.manifest_path} does not exist yet: pass --reference-values "
        f"{'|'.join(PLATFORMS)} to say which TEE the manifest trusts"
    )


def apply(inputs: Sequence[Input], outcome: Outcome, workspace: Workspace) -> list[str]:
    """Write the changed files, stdout and the manifest; return the files rewritten."""
    written: list[str] = []
    if outcome.new_simulation_key is not None:
        try:
            workspace.create_simulation_key(outcome.new_simulation_key)
        except WorkspaceError as exc:
            raise GenerateFailed([str(exc)]) from None
    for item, result in zip(inputs, outcome.results, strict=True):
        if item.path is None:
            sys.stdout.write(result.text)
            sys.stdout.flush()
        elif result.changed:
            atomic_write(item.path, result.text.encode("utf-8"), item.mode)
            written.append(item.source)
    data = outcome.manifest.to_json()
    path = workspace.manifest_path
    if not path.exists() or path.read_bytes() != data:
        try:
            workspace.write_manifest(outcome.manifest)
        except WorkspaceError as exc:
            raise GenerateFailed([str(exc)]) from None
    return written


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while every input's parse tree is held at once.

    The trees hold no cycles (reference counting frees them), but their hundreds of
    thousands of objects make each automatic collection walk them all again: with the
    collector on, parsing 1,000 workloads took 2.5 times as long.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@click.command("generate")
@click.option(
    "--workspace-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where manifest.json and the owner keys live.",
)
@click.option(
    "--reference-values",
    type=click.Choice(PLATFORMS),
    default=None,
    help="The TEE the manifest trusts (required for a new manifest; kept otherwise).",
)
@click.option(
    "--snp-measurement",
    "snp_measurements",
    multiple=True,
    help="With --reference-values snp: a trusted launch measurement (96 hex digits).",
)
@click.option(
    "--initializer-image",
    envvar="CONTRAST_INITIALIZER_IMAGE",
    default=DEFAULT_INITIALIZER_IMAGE,
    show_default=True,
    help="Initializer image to inject (env: CONTRAST_INITIALIZER_IMAGE).",
)
@click.argument("paths", nargs=-1, required=True)
def generate(
    workspace_dir: Path,
    reference_values: str | None,
    snp_measurements: tuple[str, ...],
    initializer_image: str,
    paths: tuple[str, ...],
) -> None:
    """Inject Contrast into Kubernetes YAML and write manifest.json.

    PATHS are YAML files, directories (searched for *.yml and *.yaml), or - to rewrite
    stdin to stdout. Pods with a contrast-cc runtime class get the Initializer, the
    contrast-secrets volume and a runtime policy; nothing is written if any input is bad.
    """
    logger = setup_logging("contrast.generate")
    workspace = Workspace(workspace_dir)
    stdin = sys.stdin.buffer.read() if STDIN in paths else None
    try:
        inputs = read_inputs(paths, stdin)
        with _no_cyclic_gc():
            outcome = plan(
                inputs,
                initializer_image,
                workspace,
                reference_values,
                snp_measurements,
            )
        for warning in outcome.warnings:
            event(logger, "warning", logging.WARNING, detail=warning)
        written = apply(inputs, outcome, workspace)
    except GenerateFailed as exc:
        for message in exc.messages:
            click.echo(f"error: {message}", err=True)
        sys.exit(1)
    event(
        logger,
        "generated",
        inputs=len(inputs),
        rewritten=len(written),
        policies=len(outcome.manifest.policies),
        manifest=workspace.manifest_path,
    )
