"""Which issuer this process uses, and which validators a manifest's reference values enable.

Issuer selection (the same for every process that issues evidence, the Coordinator and the
Initializer):

* ``CONTRAST_TEE=simulated``: the simulated TEE, signing with the Ed25519 key in the PEM
  file ``CONTRAST_SIMULATION_KEY`` (``contrast manifest init --reference-values simulated``
  creates it as ``simulation-key.pem``), with host data ``CONTRAST_SIMULATED_HOST_DATA``
  (64 hex digits: the policy hash the container runtime would pin; 32 zero bytes if unset).
* ``CONTRAST_TEE`` unset: the issuer of the TEE this machine runs in, found through
  ``HARDWARE_ISSUERS``; if the machine is no known TEE, a clear error.

Validators: one per platform named in the reference values, built by the factories in
``VALIDATOR_FACTORIES``. Evidence from a platform the manifest does not name is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from contrast.attestation.base import HOST_DATA_BYTES, AttestationError, Issuer, Validator
from contrast.attestation.simulated import SimulatedIssuer, SimulatedValidator
from contrast.attestation.snp.adapter import (
    SNP_GUEST_DEVICES,
    snp_issuer_factory,
    snp_validator_factory,
)
from contrast.manifest import PLATFORM_SIMULATED, PLATFORM_SNP, ReferenceValues
from contrast.workspace import WorkspaceError, ed25519_key, load_private_key

TEE_ENV = "CONTRAST_TEE"
SIMULATION_KEY_ENV = "CONTRAST_SIMULATION_KEY"
SIMULATED_HOST_DATA_ENV = "CONTRAST_SIMULATED_HOST_DATA"

# Platform name -> builds the validator from the manifest's reference values of that
# platform. A platform validator (e.g. SEV-SNP in contrast.attestation.snp) registers here.
VALIDATOR_FACTORIES: dict[str, Callable[[ReferenceValues], Validator]] = {
    PLATFORM_SIMULATED: lambda rv: SimulatedValidator(rv.simulated),
    PLATFORM_SNP: snp_validator_factory,
}

# Platform name -> (device nodes whose presence means "this machine is such a TEE",
# issuer factory). A hardware issuer (e.g. SEV-SNP via configfs-tsm) registers here.
HARDWARE_ISSUERS: dict[str, tuple[tuple[Path, ...], Callable[[], Issuer]]] = {
    PLATFORM_SNP: (SNP_GUEST_DEVICES, snp_issuer_factory),
}

# Where a TEE guest exposes its attestation interface, to tell "no TEE" from "no issuer".
_KNOWN_TEE_DEVICES = (
    Path("/sys/kernel/config/tsm/report"),
    Path("/dev/sev-guest"),
    Path("/dev/tdx_guest"),
)


def validators_for(reference_values: ReferenceValues) -> list[Validator]:
    """A validator for every platform the reference values name and this build supports."""
    return [
        VALIDATOR_FACTORIES[platform](reference_values)
        for platform in reference_values.platforms()
        if platform in VALIDATOR_FACTORIES
    ]


def issuer_from_environment(environ: Mapping[str, str] | None = None) -> Issuer:
    """The issuer this process must use, from its environment and its machine."""
    env = os.environ if environ is None else environ
    tee = env.get(TEE_ENV, "")
    if tee == PLATFORM_SIMULATED:
        return _simulated_issuer(env)
    if tee:
        raise AttestationError(
            "issuer",
            f"{TEE_ENV}={tee!r} is not supported: use {TEE_ENV}={PLATFORM_SIMULATED} for "
            "development, or leave it unset to use this machine's TEE",
        )
    for devices, factory in HARDWARE_ISSUERS.values():
        if any(device.exists() for device in devices):
            return factory()
    present = [str(d) for d in _KNOWN_TEE_DEVICES if d.exists()]
    if present:
        raise AttestationError(
            "issuer",
            f"this machine exposes {', '.join(present)} but this build has no issuer for it",
        )
    raise AttestationError(
        "issuer",
        "this machine is not a TEE guest (none of "
        f"{', '.join(str(d) for d in _KNOWN_TEE_DEVICES)} exists); for development set "
        f"{TEE_ENV}={PLATFORM_SIMULATED} and {SIMULATION_KEY_ENV}=PATH",
    )


def _simulated_issuer(env: Mapping[str, str]) -> SimulatedIssuer:
    key_path = env.get(SIMULATION_KEY_ENV, "")
    if not key_path:
        raise AttestationError(
            "issuer",
            f"{TEE_ENV}={PLATFORM_SIMULATED} needs {SIMULATION_KEY_ENV}=PATH to the simulation "
            "key (contrast manifest init --reference-values simulated creates simulation-key.pem)",
        )
    try:
        key = load_private_key(Path(key_path), ed25519_key, "an Ed25519 private key")
    except WorkspaceError as exc:
        raise AttestationError("issuer", f"{SIMULATION_KEY_ENV}: {exc}") from None
    host_data_hex = env.get(SIMULATED_HOST_DATA_ENV, "00" * HOST_DATA_BYTES)
    try:
        host_data = bytes.fromhex(host_data_hex)
    except ValueError:
        host_data = b""
    if len(host_data) != HOST_DATA_BYTES:
        raise AttestationError(
            "issuer",
            f"{SIMULATED_HOST_DATA_ENV} must be {HOST_DATA_BYTES * 2} hex digits "
            "(the SHA-256 of the pod's runtime policy)",
        )
    return SimulatedIssuer(key, host_data)
