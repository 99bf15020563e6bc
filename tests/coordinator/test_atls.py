"""Attested TLS on 127.0.0.1: the client trusts only evidence bound to its nonce and the key."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from contrast.atls import (
    AttestedServerContext,
    connect,
    evidence_from_certificate,
    nonce_from_server_name,
)
from contrast.attestation.base import AttestationError, Evidence
from contrast.attestation.simulated import SimulatedIssuer, SimulatedValidator
from contrast.manifest import SimulatedReferenceValue, public_key_hex

KEY = ed25519.Ed25519PrivateKey.generate()
HOST_DATA = bytes(32)
VALIDATORS = [SimulatedValidator([SimulatedReferenceValue(public_key_hex(KEY.public_key()))])]


class ReplayingIssuer:
    """A compromised server's issuer that hands out evidence recorded earlier."""

    def __init__(self, recorded: Evidence) -> None:
        self.recorded = recorded

    @property
    def platform(self) -> str:
        return "simulated"

    def issue(self, report_data: bytes) -> Evidence:
        return self.recorded


@contextmanager
def serve(context: Callable[[socket.socket], ssl.SSLSocket]) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def loop() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context(raw) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                raw.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()


def test_server_with_valid_evidence_is_accepted() -> None:
    server = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    with serve(server.wrap) as port:
        connection = connect("127.0.0.1", port, VALIDATORS)
        with connection.sock as sock:
            assert sock.version() == "TLSv1.3"
            assert sock.recv(2) == b"ok"
        assert connection.verified.host_data == HOST_DATA


def test_server_signed_by_an_unknown_simulation_key_is_refused() -> None:
    server = AttestedServerContext(SimulatedIssuer(ed25519.Ed25519PrivateKey.generate(), HOST_DATA))
    with serve(server.wrap) as port, pytest.raises(AttestationError) as info:
        connect("127.0.0.1", port, VALIDATORS)
    assert info.value.check == "simulation-key"


def test_replayed_server_evidence_is_refused() -> None:
    honest = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    with serve(honest.wrap) as port:
        recorded = connect("127.0.0.1", port, VALIDATORS)
        recorded.sock.close()
    # Replay the same (valid, signed) evidence from a server with its own TLS key.
    cert = honest.certificate_for(os.urandom(32))
    replayer = AttestedServerContext(ReplayingIssuer(evidence_from_certificate(cert)))
    with serve(replayer.wrap) as port, pytest.raises(AttestationError) as info:
        connect("127.0.0.1", port, VALIDATORS)
    assert info.value.check == "report-data"


def test_server_without_evidence_is_refused(tmp_path: Path) -> None:
    plain = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    cert = plain.certificate_for(os.urandom(32))
    # A plain TLS server whose certificate carries no evidence extension at all.
    key = ec.generate_private_key(ec.SECP256R1())
    bare = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    with (
        serve(lambda raw: context.wrap_socket(raw, server_side=True)) as port,
        pytest.raises(AttestationError) as info,
    ):
        connect("127.0.0.1", port, VALIDATORS)
    assert info.value.check == "evidence"


def test_server_outside_the_coordinator_policy_is_refused() -> None:
    server = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    with serve(server.wrap) as port, pytest.raises(AttestationError) as info:
        connect("127.0.0.1", port, VALIDATORS, allowed_policy_hashes={"ab" * 32})
    assert info.value.check == "host-data"


def test_client_without_nonce_gets_no_certificate() -> None:
    server = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with (
        serve(server.wrap) as port,
        socket.create_connection(("127.0.0.1", port)) as raw,
        pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"),
    ):
        client.wrap_socket(raw, server_hostname="coordinator.example")


def test_tls_below_1_3_is_refused() -> None:
    server = AttestedServerContext(SimulatedIssuer(KEY, HOST_DATA))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        serve(server.wrap) as port,
        socket.create_connection(("127.0.0.1", port)) as raw,
        pytest.raises(ssl.SSLError),
    ):
        client.wrap_socket(raw, server_hostname="a" * 32 + "." + "b" * 32 + ".atls.invalid")


def test_server_name_carries_exactly_a_32_byte_nonce() -> None:
    assert nonce_from_server_name("a" * 32 + "." + "b" * 32 + ".atls.invalid") is not None
    assert nonce_from_server_name("a" * 31 + "." + "b" * 32 + ".atls.invalid") is None
    assert nonce_from_server_name(None) is None
