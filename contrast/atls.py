"""Attested TLS: TLS 1.3 where the server's certificate carries evidence bound to the client.

Why this shape. Python's ``ssl`` module cannot run custom verification on a peer's
certificate: a server that asks for a client certificate (CERT_OPTIONAL/REQUIRED) has
OpenSSL check it against a CA store and abort on a self-signed one, with no callback to
inspect evidence instead. What it does offer is ``SSLContext.sni_callback``, which runs on
the ClientHello, before the server sends its certificate, and may swap the context. So:

* Server attestation (every connection). The client draws a fresh 32-byte nonce and sends
  it as the TLS server name (``<32 hex>.<32 hex>.atls.invalid``). In the SNI callback the
  server issues evidence with report data ``SHA-512(nonce || SHA-256(SPKI))`` for its TLS
  key and answers with a self-signed certificate carrying that evidence in extension
  ``EVIDENCE_EXTENSION_OID``. TLS 1.3's CertificateVerify proves the server holds the
  certificate's key (OpenSSL verifies it even without chain validation), and the evidence
  proves that key lives in a TEE and was attested for this very nonce. The client
  validates the evidence before it sends anything.
* Client attestation (workloads). Happens inside the channel, at the application layer
  (see ``contrast.protocol``): the server sends a fresh nonce as its first frame, the
  client answers with evidence bound to that nonce and to the public key its certificate
  is issued for, and the workload secret is HPKE-sealed to that same key. Replayed evidence
  (another nonce), evidence for another key, and relayed evidence (whose relay lacks the
  private key and so cannot open the secret) all fail.

Sessions are never resumed (no tickets), so every connection sees fresh evidence.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contrast.attestation.base import (
    NONCE_BYTES,
    AttestationError,
    Evidence,
    Issuer,
    Validator,
    VerifiedEvidence,
    report_data_for,
    validate_evidence,
)
from contrast.log import event
from contrast.manifest import public_key_der

log = logging.getLogger("contrast.atls")

# A private arc, like Edgeless' 1.3.9900.x: not registered, never seen outside this project.
EVIDENCE_EXTENSION_OID = x509.ObjectIdentifier("1.3.9901.1.1")
SERVER_NAME_SUFFIX = ".atls.invalid"
_SERVER_NAME = re.compile(r"([0-9a-f]{32})\.([0-9a-f]{32})\.atls\.invalid")
_CERT_LIFETIME = datetime.timedelta(hours=1)


def nonce_to_server_name(nonce: bytes) -> str:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must have {NONCE_BYTES} bytes")
    text = nonce.hex()
    return f"{text[:32]}.{text[32:]}{SERVER_NAME_SUFFIX}"


def nonce_from_server_name(server_name: str | None) -> bytes | None:
    match = _SERVER_NAME.fullmatch(server_name or "")
    return bytes.fromhex(match.group(1) + match.group(2)) if match else None


def _tls13(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_TICKET
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        # In TLS 1.3, OP_NO_TICKET alone still sends (stateful) tickets: an extra write
        # after the handshake that also stalls on Nagle's algorithm. No resumption, ever.
        context.num_tickets = 0
    return context


def _no_delay(sock: socket.socket) -> socket.socket:
    # Each exchange is a few small frames in lockstep; Nagle's algorithm would hold them
    # back until the peer's delayed ACK (40 ms on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _MemoryFile:
    """A PEM blob in an anonymous memory file, so OpenSSL can load it by path without disk."""

    def __init__(self, name: str, data: bytes) -> None:
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.write(self.fd, data)

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        os.close(self.fd)


class AttestedServerContext:
    """A TLS 1.3 server whose certificate, per connection, carries evidence for the client.

    The TLS key is generated at start, lives only in memory (an anonymous memory file for
    OpenSSL to load) and is attested anew for every client nonce.
    """

    def __init__(self, issuer: Issuer, common_name: str = "contrast-coordinator") -> None:
        self._issuer = issuer
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._spki = public_key_der(self._key.public_key())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self._key_file = _MemoryFile(
            "atls-key",
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self._closed = threading.Event()
        self.context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        self.context.sni_callback = self._on_client_hello

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """Run the server side of the handshake on an accepted socket."""
        return self.context.wrap_socket(_no_delay(sock), server_side=True)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._key_file.close()

    def certificate_for(self, nonce: bytes) -> x509.Certificate:
        """A self-signed certificate for the TLS key with evidence bound to ``nonce``."""
        evidence = self._issuer.issue(report_data_for(nonce, self._spki))
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _CERT_LIFETIME)
            .add_extension(
                x509.UnrecognizedExtension(EVIDENCE_EXTENSION_OID, evidence.to_bytes()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _on_client_hello(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        nonce = nonce_from_server_name(server_name)
        if nonce is None:
            event(log, "atls-refused", logging.WARNING, reason="client sent no nonce")
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        try:
            cert = self.certificate_for(nonce)
            cert_file = _MemoryFile("atls-cert", cert.public_bytes(serialization.Encoding.PEM))
            try:
                context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
                context.load_cert_chain(cert_file.path, self._key_file.path)
            finally:
                cert_file.close()
        except Exception as exc:  # the handshake must fail closed, never hang or crash
            event(log, "atls-evidence-failed", logging.ERROR, error=str(exc))
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        sock.context = context
        return None


@dataclass(frozen=True)
class AttestedConnection:
    sock: ssl.SSLSocket
    verified: VerifiedEvidence


def _client_context() -> ssl.SSLContext:
    context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    # The certificate is self-signed by design; trust comes from the evidence in it, which
    # attest() checks before anything is sent.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_CLIENT_CONTEXT = _client_context()


def evidence_from_certificate(cert: x509.Certificate) -> Evidence:
    try:
        extension = cert.extensions.get_extension_for_oid(EVIDENCE_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise AttestationError(
            "evidence", "the server's certificate carries no attestation evidence"
        ) from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise AttestationError("evidence", "the evidence extension is malformed")
    return Evidence.from_bytes(value.value)


def verify_server(
    sock: ssl.SSLSocket,
    nonce: bytes,
    validators: Sequence[Validator],
    allowed_policy_hashes: Collection[str] = (),
) -> VerifiedEvidence:
    """Check that the peer's certificate carries evidence for ``nonce`` and its own key."""
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise AttestationError("evidence", "the server sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    evidence = evidence_from_certificate(cert)
    expected = report_data_for(nonce, public_key_der(cert.public_key()))
    verified = validate_evidence(evidence, expected, validators)
    if allowed_policy_hashes and verified.policy_hash not in allowed_policy_hashes:
        raise AttestationError(
            "host-data",
            f"the server runs policy {verified.policy_hash}, which the manifest does not list "
            "for the Coordinator",
        )
    return verified


def connect(
    host: str,
    port: int,
    validators: Sequence[Validator],
    allowed_policy_hashes: Collection[str] = (),
    timeout: float = 10.0,
) -> AttestedConnection:
    """Open an attested TLS connection; raise AttestationError unless the server verifies.

    ``allowed_policy_hashes``, when not empty, also pins the server's host data.
    """
    nonce = os.urandom(NONCE_BYTES)
    raw = _no_delay(socket.create_connection((host, port), timeout=timeout))
    try:
        sock = _CLIENT_CONTEXT.wrap_socket(raw, server_hostname=nonce_to_server_name(nonce))
    except BaseException:
        raw.close()
        raise
    try:
        verified = verify_server(sock, nonce, validators, allowed_policy_hashes)
    except BaseException:
        sock.close()
        raise
    return AttestedConnection(sock, verified)
