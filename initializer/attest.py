"""The attestation step: prove this pod to the Coordinator, get its credentials back.

The Coordinator is verified first (attested TLS, against the reference values the pod was
deployed with); only then does the pod send its evidence, bound to the Coordinator's fresh
nonce and to a key pair generated here, and the workload secret comes back sealed to that
key. Without the first check an impostor could hand the pod a secret the impostor knows,
and a blank secure PV would be formatted with it.

The Initializer keeps trying until it succeeds or is told to stop: the Coordinator may not
be up yet, may be waiting for recovery, or may not know this pod's policy until the next
``contrast set``. Each failed attempt is one log line saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from contrast.attestation.base import AttestationError, Issuer
from contrast.client import CoordinatorAddress, CoordinatorUnreachable, CoordinatorVerifier
from contrast.log import event
from contrast.manifest import ManifestError
from contrast.meshapi.client import Credentials, generate_workload_key, request_workload_credentials
from contrast.protocol import RemoteError
from contrast.retry import retry_until_stopped
from initializer import termination
from initializer.errors import InitializerError, UsageError

log = logging.getLogger("initializer")

COORDINATOR_HOST_ENV = "COORDINATOR_HOST"
REFERENCE_VALUES_ENV = "COORDINATOR_REFERENCE_VALUES"
# One attempt may block this long in connect or read (the termination signals are blocked
# meanwhile, so this also bounds how late a SIGTERM during an attempt is honoured).
ATTEMPT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class CoordinatorTarget:
    address: CoordinatorAddress
    verifier: CoordinatorVerifier


def coordinator_from_environment(environ: Mapping[str, str]) -> CoordinatorTarget:
    """Where the Coordinator is, and what it must prove, from the pod's environment."""
    host = environ.get(COORDINATOR_HOST_ENV, "").strip()
    if not host:
        raise UsageError(
            f"{COORDINATOR_HOST_ENV} is not set: set it to the Coordinator's address, HOST or "
            "HOST:PORT (contrast generate injects it)"
        )
    try:
        address = CoordinatorAddress.parse(host)
    except ValueError as exc:
        raise UsageError(f"{COORDINATOR_HOST_ENV}: {exc}") from None
    reference_values = environ.get(REFERENCE_VALUES_ENV, "").strip()
    if not reference_values:
        raise UsageError(
            f"{REFERENCE_VALUES_ENV} is not set: the Initializer must verify the Coordinator "
            "before it trusts a secret from it. Set it to the JSON of the manifest's "
            "ReferenceValues (contrast generate injects it)"
        )
    try:
        verifier = CoordinatorVerifier.from_reference_values_json(reference_values.encode())
    except ManifestError as exc:
        raise UsageError(f"{REFERENCE_VALUES_ENV}: {exc}") from None
    if not verifier.validators:
        raise UsageError(
            f"{REFERENCE_VALUES_ENV} names no platform this Initializer can verify the "
            "Coordinator on"
        )
    return CoordinatorTarget(address, verifier)


def failure_reason(error: BaseException) -> str:
    """One line for the log: why this attempt failed. Never carries key material."""
    if isinstance(error, RemoteError):
        return f"refused ({error.code}): {error.message}"
    if isinstance(error, CoordinatorUnreachable):
        return f"unreachable: {error}"
    if isinstance(error, AttestationError):
        return f"the Coordinator did not verify: {error}"
    return f"{type(error).__name__}: {error}"


def _is_retryable(error: BaseException) -> bool:
    # Our own errors are about this pod's configuration; a retry would not change them.
    return not isinstance(error, InitializerError)


def attest(target: CoordinatorTarget, issuer: Issuer) -> Credentials:
    """Attest until the Coordinator hands out credentials; Terminated on SIGTERM/SIGINT."""
    key = generate_workload_key()
    start = time.monotonic()
    attempts = 0

    def attempt() -> Credentials:
        nonlocal attempts
        termination.check()
        attempts += 1
        return request_workload_credentials(
            target.address,
            issuer,
            target.verifier,
            key=key,
            connect_attempts=1,
            timeout=ATTEMPT_TIMEOUT_SECONDS,
        )

    def log_failure(number: int, error: BaseException, delay: float) -> None:
        event(
            log,
            "attest-attempt-failed",
            logging.WARNING,
            attempt=number,
            coordinator=target.address,
            reason=failure_reason(error),
            retry_in_s=round(delay, 2),
        )

    credentials = retry_until_stopped(
        attempt, retryable=_is_retryable, on_failure=log_failure, sleep=termination.sleep
    )
    event(
        log,
        "attested",
        coordinator=target.address,
        workload_secret_id=credentials.workload_secret_id,
        attempts=attempts,
        duration_ms=round((time.monotonic() - start) * 1000, 1),
    )
    return credentials
