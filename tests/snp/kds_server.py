"""A stand-in for AMD's KDS: a real HTTPS server on 127.0.0.1 with a test CA."""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contrast.attestation.snp.kds import Transport, urllib_transport


@dataclass
class KdsStandIn:
    base_url: str
    transport: Transport
    # path (with query) -> list of (status, body) answers, served in order; the last repeats
    answers: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, *answers: tuple[int, bytes]) -> None:
        self.answers[path] = list(answers)


def _tls_files(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kds stand-in")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "kds.crt", directory / "kds.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextmanager
def kds_stand_in(directory: Path) -> Iterator[KdsStandIn]:
    cert_path, key_path = _tls_files(directory)
    state: dict[str, KdsStandIn] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stand_in = state["kds"]
            stand_in.requests.append(self.path)
            queue = stand_in.answers.get(self.path, [(404, b"")])
            status, body = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert_path))
    port = server.server_address[1]
    state["kds"] = KdsStandIn(
        base_url=f"https://127.0.0.1:{port}",
        transport=functools.partial(urllib_transport, context=client_context),
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state["kds"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
