"""One attested exchange with the Coordinator, with a brief retry while it is unreachable."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from contrast.atls import AttestedConnection, connect
from contrast.attestation.base import NONCE_BYTES, Validator, VerifiedEvidence
from contrast.attestation.platforms import validators_for
from contrast.manifest import Manifest, ManifestError, ReferenceValues
from contrast.protocol import DEFAULT_PORT, ProtocolError, raise_for_error, recv_frame, send_frame
from contrast.retry import GaveUp, retry_briefly

DEFAULT_CONNECT_ATTEMPTS = 5
DEFAULT_TIMEOUT_SECONDS = 10.0


class CoordinatorUnreachable(Exception):
    """No TCP connection could be made; the message says where and how often we tried."""


@dataclass(frozen=True)
class CoordinatorAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> CoordinatorAddress:
        """``host``, ``host:port`` or ``[v6]:port``; without a port, the default port."""
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:
            host, port_text = text, ""
        if not host:
            raise ValueError(f"{text!r} names no host: expected HOST or HOST:PORT")
        if not port_text:
            return cls(host, DEFAULT_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"{text!r} has an invalid port: expected HOST:PORT")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CoordinatorVerifier:
    """What the Coordinator must prove: evidence valid under these reference values, and,
    when the manifest lists policies with role ``coordinator``, host data among them."""

    validators: Sequence[Validator]
    allowed_policy_hashes: Collection[str] = field(default_factory=tuple)

    @classmethod
    def from_reference_values(
        cls, reference_values: ReferenceValues, allowed_policy_hashes: Collection[str] = ()
    ) -> CoordinatorVerifier:
        return cls(validators_for(reference_values), tuple(allowed_policy_hashes))

    @classmethod
    def from_reference_values_json(
        cls, data: bytes, allowed_policy_hashes: Collection[str] = ()
    ) -> CoordinatorVerifier:
        """From the JSON of a manifest's ``ReferenceValues`` object, e.g. handed to a pod in
        an environment variable; raises ManifestError naming the field at fault."""
        try:
            raw = json.loads(data)
        except ValueError:
            raise ManifestError("ReferenceValues", "is not valid JSON") from None
        manifest = Manifest.from_dict(
            {
                "Policies": {},
                "ReferenceValues": raw,
                "SeedshareOwnerPubKeys": [],
                "WorkloadOwnerKeyDigests": [],
            }
        )
        return cls.from_reference_values(manifest.reference_values, allowed_policy_hashes)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> CoordinatorVerifier:
        return cls.from_reference_values(
            manifest.reference_values, manifest.coordinator_policy_hashes()
        )


def _is_connect_error(exc: BaseException) -> bool:
    # ssl.SSLError is an OSError too, but a failed handshake is no reason to retry.
    return isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)


def open_attested(
    address: CoordinatorAddress,
    verifier: CoordinatorVerifier,
    attempts: int = DEFAULT_CONNECT_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> AttestedConnection:
    """Connect and verify; retry briefly (exponential backoff) only while unreachable."""
    try:
        return retry_briefly(
            lambda: connect(
                address.host,
                address.port,
                verifier.validators,
                verifier.allowed_policy_hashes,
                timeout,
            ),
            retryable=_is_connect_error,
            attempts=attempts,
        )
    except GaveUp as exc:
        reason = getattr(exc.last, "strerror", None) or str(exc.last)
        raise CoordinatorUnreachable(
            f"could not reach the Coordinator at {address}: tried {exc.attempts} time(s) over "
            f"{exc.seconds:.1f} s, last error: {reason}"
        ) from None


def exchange(
    address: CoordinatorAddress,
    verifier: CoordinatorVerifier,
    build_request: Callable[[bytes], dict[str, Any]],
    attempts: int = DEFAULT_CONNECT_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> tuple[dict[str, Any], VerifiedEvidence]:
    """Verify the Coordinator, then send ``build_request(server_nonce)`` and return the reply.

    Raises RemoteError when the Coordinator refuses, AttestationError when it does not
    verify (nothing is sent then), CoordinatorUnreachable, or ProtocolError.
    """
    connection = open_attested(address, verifier, attempts, timeout)
    with connection.sock as sock:
        hello = recv_frame(sock)
        try:
            nonce = bytes.fromhex(str(hello["Nonce"]))
        except (KeyError, ValueError):
            raise ProtocolError("the Coordinator's first frame carries no nonce") from None
        if len(nonce) != NONCE_BYTES:
            raise ProtocolError("the Coordinator's nonce has the wrong length")
        send_frame(sock, build_request(nonce))
        response = recv_frame(sock)
    raise_for_error(response)
    return response, connection.verified
