"""The Initializer without a subcommand, up to the secure PV: from the pod's environment to
its credentials under CONTRAST_DIR (default /contrast).

1. read where the Coordinator is and what it must prove (COORDINATOR_HOST,
   COORDINATOR_REFERENCE_VALUES) and pick the TEE's issuer;
2. wait, bounded, until the pod has a network address other than loopback;
3. attest, retrying until the Coordinator answers or SIGTERM arrives;
4. write the credential files, all or nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from contrast.attestation.base import AttestationError, Issuer
from contrast.attestation.platforms import issuer_from_environment
from contrast.log import event
from initializer import credentials, termination
from initializer.attest import attest, coordinator_from_environment
from initializer.errors import UsageError
from initializer.network import DEFAULT_ADDRESS_TIMEOUT_SECONDS, wait_for_pod_addresses

log = logging.getLogger("initializer")

CONTRAST_DIR_ENV = "CONTRAST_DIR"


def issuer(environ: Mapping[str, str]) -> Issuer:
    try:
        return issuer_from_environment(environ)
    except AttestationError as exc:
        raise UsageError(str(exc)) from None


def attest_and_write_credentials(environ: Mapping[str, str]) -> Path:
    """Steps 1-4; return the path of the written workload secret.

    Raises UsageError for a bad environment (before anything is dialled or written),
    Terminated on SIGTERM/SIGINT (nothing written then), CredentialsWriteError.
    """
    target = coordinator_from_environment(environ)
    base = Path(environ.get(CONTRAST_DIR_ENV) or credentials.DEFAULT_CONTRAST_DIR)
    credentials.check_base(base)
    workload_issuer = issuer(environ)
    addresses = wait_for_pod_addresses(DEFAULT_ADDRESS_TIMEOUT_SECONDS, termination.check)
    event(
        log,
        "dialling",
        coordinator=target.address,
        pod_addresses=",".join(map(str, addresses)),
    )
    received = attest(target, workload_issuer)
    termination.check()
    credentials.install(base, credentials.credential_files(received))
    return credentials.workload_secret_path(base)
